"""Snapshots as stored key/value pairs: what a source ships and how a replica takes it.

The source ships, from its snapshot's read, each table's records (compressed or not, as stored), its tombstones
(versioned sources) and every index's entries, in bounded chunks of `StoredPairs`, in key order (read by
core/bulk.py). A one-way replica, whose tables were dropped and re-created with the snapshot's definitions when it
began, bulk-loads them through the storage seam: no JSON decoding, no re-encoding, no index key computed. Two-way
and aggregating replicas turn the pairs back into documents and keep their rules (last writer wins; a source's
snapshot replaces only that source's documents).
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import zstandard

from pynndb.core.bulk import stored_json
from pynndb.core.codec import Compressor
from pynndb.core.journal import VERSION
from pynndb.errors import MalformedEntry
from pynndb.replication.message_types import EMPTY_JSON
from pynndb.replication.messages import SnapshotBegin, SnapshotChunk, StoredPairs

if TYPE_CHECKING:
    from pynndb.core.snapshot_read import SnapshotRead
    from pynndb.core.storage import ApplyTransaction

# A replica's document: (record key, fields or None for a tombstone, version clock, origin uuid or None).
Document = tuple[bytes, dict[str, Any] | None, int, bytes | None]


# --- source side ------------------------------------------------------------------------------------------------
def table_chunks(view: SnapshotRead, name: str, source: str, seq: int, chunk_bytes: int) -> Iterator[SnapshotChunk]:
    """One table's chunks: its records (with versions when the source keeps them), tombstones, index entries."""
    for part in view.stored_parts(name, chunk_bytes):
        stored = StoredPairs(
            part.part,
            tuple(part.keys),
            tuple(part.values),
            None if part.versions is None else tuple(part.versions),
            part.index,
            part.key_lengths,
            part.value_lengths,
        )
        yield SnapshotChunk(source, seq, name, [], EMPTY_JSON, stored)


# --- replica side -----------------------------------------------------------------------------------------------
def compression_of(begin: SnapshotBegin, name: str) -> tuple[int | None, str | None]:
    """(level or None, base64 dictionary or None) of table `name` in a snapshot."""
    definition = begin.tables.get(name)
    compression = definition.get("compression") if isinstance(definition, dict) else None
    if not compression:
        return None, None
    if not isinstance(compression, dict):
        raise MalformedEntry(f"compression of table {name!r} must be an object")
    level = compression.get("level", 3)
    if type(level) is not int or not 1 <= level <= 22:
        raise MalformedEntry(f"compression level of table {name!r} must be an int from 1 to 22")
    return level, begin.dictionaries.get(name)


@functools.lru_cache(maxsize=32)
def _compressor(level: int, dictionary: str | None) -> Compressor:
    try:
        raw = None if dictionary is None else base64.b64decode(dictionary, validate=True)
        return Compressor(level, raw)
    except (binascii.Error, zstandard.ZstdError) as error:
        raise MalformedEntry(f"bad compression dictionary: {error}") from None


def source_compressor(begin: SnapshotBegin | None, name: str) -> Compressor | None:
    """What reads the records of table `name` as the snapshot's source stores them."""
    if begin is None:
        return None
    level, dictionary = compression_of(begin, name)
    return None if level is None else _compressor(level, dictionary)


def set_compression(tx: ApplyTransaction, name: str, begin: SnapshotBegin) -> None:
    """Give a replica's table the snapshot's compression (level and dictionary), unless it already has it."""
    level, _dictionary = compression_of(begin, name)
    wanted = None if level is None else source_compressor(begin, name)
    current = tx.compression(name)
    if wanted is None and current is None:
        return
    if (
        wanted is not None
        and current is not None
        and (current.level, current.dictionary)
        == (
            wanted.level,
            wanted.dictionary,
        )
    ):
        return
    tx.set_compression(name, level, None if wanted is None else wanted.dictionary)


def stored_documents(stored: StoredPairs, codec: Compressor | None) -> list[Document]:
    """A chunk of stored pairs as documents, for replicas that apply them one by one (two-way, aggregate)."""
    keys, values, versions = stored.keys, stored.values, stored.versions
    if len(values) != len(keys) or (versions is not None and len(versions) != len(keys)):
        raise MalformedEntry("stored pairs need as many values (and versions) as keys")
    if stored.part == "index":
        return []  # such replicas compute their index entries as they write
    if stored.part == "tombstones":
        return [(key, None, *_version(version)) for key, version in zip(keys, values, strict=True)]
    if stored.part != "records":
        raise MalformedEntry(f"unknown stored-pairs part {stored.part!r}")
    documents: list[Document] = []
    for number, key in enumerate(keys):
        fields = orjson.loads(stored_json(values[number], codec))
        if not isinstance(fields, dict):
            raise MalformedEntry("a stored record must be a JSON object")
        version = versions[number] if versions is not None else b""
        documents.append((key, fields, *_version(version)) if version else (key, fields, 0, None))
    return documents


def _version(raw: bytes) -> tuple[int, bytes]:
    if len(raw) != VERSION.size:
        raise MalformedEntry("a stored version must be 41 bytes")
    clock, origin, _deleted, _source = VERSION.unpack(raw)
    return clock, origin
