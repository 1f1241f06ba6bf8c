"""Snapshots as stored key/value pairs: what a source ships and how a replica writes it without decoding.

The source walks, in its snapshot's read transaction, each table's records (compressed or not, as stored), its
tombstones (versioned sources) and every index's entries, and ships them in bounded chunks of `StoredPairs`, in key
order. A one-way replica, whose tables were dropped and re-created with the snapshot's definitions when it began,
appends them with `putmulti(append=True)`: no JSON decoding, no re-encoding, no index key computed. It still
journals a ``put`` op per record (with the stored JSON bytes as its document) when it keeps a journal, so its own
replicas stay exact, and records versions when it keeps them, as the document-by-document path would. Two-way and
aggregating replicas turn the pairs back into documents and keep their rules (last writer wins; a source's
snapshot replaces only that source's documents).
"""

from __future__ import annotations

import base64
import binascii
import functools
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import accumulate, chain, islice, repeat
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson
import zstandard

from pynndb.core.codec import Compressor, raw_json
from pynndb.core.journal import VERSION
from pynndb.errors import MalformedEntry
from pynndb.replication.messages import EMPTY_JSON, SnapshotBegin, SnapshotChunk, StoredPairs

if TYPE_CHECKING:
    from pynndb.core.journal import Replication
    from pynndb.core.table import Table
    from pynndb.core.transaction import Transaction

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
first_byte = first_item = itemgetter(0)
second_item = itemgetter(1)
READ_AHEAD = 1024  # pairs read from a cursor at a time

# A replica's document: (record key, fields or None for a tombstone, version clock, origin uuid or None).
Document = tuple[bytes, dict[str, Any] | None, int, bytes | None]


# --- source side ------------------------------------------------------------------------------------------------
def _batches(cursor: Iterable[tuple[bytes, bytes]], chunk_bytes: int) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """The cursor's pairs as (keys, values) lists of about `chunk_bytes` (cut after the pair that reaches it).

    Pairs are read READ_AHEAD at a time and sized with C-level iterators (no Python code runs per pair); only
    the keys and values are kept, not the pairs: bytes are not tracked by the cyclic garbage collector.
    """
    keys: list[bytes] = []
    values: list[bytes] = []
    size = 0
    pending = iter(cursor)
    while batch := list(islice(pending, READ_AHEAD)):
        while batch:
            grown = size + sum(map(len, chain.from_iterable(batch)))
            if grown < chunk_bytes:
                taken = len(batch)
                size = grown
            else:
                # Running totals after each key and each value: totals[2 * n] is the size after n more pairs.
                totals = list(accumulate(map(len, chain.from_iterable(batch)), initial=size))
                taken = max(1, (bisect_left(totals, chunk_bytes) + 1) // 2)
            keys += map(first_item, batch[:taken])
            values += map(second_item, batch[:taken])
            if grown < chunk_bytes:
                break
            yield keys, values
            keys, values, size, batch = [], [], 0, batch[taken:]
    if keys:
        yield keys, values


def _stored(part: str, batch: tuple[list[bytes], list[bytes]], versions: list[bytes] | None = None) -> StoredPairs:
    return StoredPairs(part, tuple(batch[0]), tuple(batch[1]), None if versions is None else tuple(versions))


def table_chunks(
    txn: Any,
    replication: Replication,
    name: str,
    records: Any,
    indexes: dict[str, Any],
    source: str,
    seq: int,
    chunk_bytes: int,
) -> Iterator[SnapshotChunk]:
    """One table's chunks: its records (with versions when the source keeps them), tombstones, index entries."""
    versioned = replication.versioned
    versions_db = replication._versions
    prefix = name.encode() + b"\x00"
    get = txn.get
    for batch in _batches(txn.cursor(db=records), chunk_bytes):
        versions = [get(prefix + key, b"", db=versions_db) for key in batch[0]] if versioned else None
        yield SnapshotChunk(source, seq, name, [], EMPTY_JSON, _stored("records", batch, versions))
    if versioned:
        for batch in _batches(_tombstones(txn, versions_db, prefix), chunk_bytes):
            yield SnapshotChunk(source, seq, name, [], EMPTY_JSON, _stored("tombstones", batch))
    for index_name, dbi in indexes.items():
        for batch in _batches(txn.cursor(db=dbi), chunk_bytes):
            stored = replace(_stored("index", batch), index=index_name)
            yield SnapshotChunk(source, seq, name, [], EMPTY_JSON, stored)


def _tombstones(txn: Any, versions_db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=versions_db)
    if not cursor.set_range(prefix):
        return
    start = len(prefix)
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        if value[24]:  # the tombstone flag of journal.VERSION
            yield key[start:], value


def dictionaries(txn: Any, meta: Any, tables: dict[str, Any]) -> dict[str, str]:
    """The zstd dictionaries of the tables that have one, base64-encoded (a replica needs them to read records)."""
    found = {}
    for name, definition in tables.items():
        compression = definition.get("compression") if isinstance(definition, dict) else None
        if compression and compression.get("dictionary"):
            dictionary = txn.get(b"zdict:" + name.encode(), db=meta)
            if dictionary is not None:
                found[name] = base64.b64encode(dictionary).decode()
    return found


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


def source_compressor(begin: SnapshotBegin, name: str) -> Compressor | None:
    """What reads the records of table `name` as the snapshot's source stores them."""
    level, dictionary = compression_of(begin, name)
    return None if level is None else _compressor(level, dictionary)


def set_compression(t: Transaction, table: Table, begin: SnapshotBegin) -> None:
    """Give a replica's table the snapshot's compression (level and dictionary), unless it already has it."""
    level, _dictionary = compression_of(begin, table.name)
    wanted = None if level is None else source_compressor(begin, table.name)
    current = table._compressor
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
    table._set_compression(t, level, None if wanted is None else wanted.dictionary)


def _json(value: bytes, compressor: Compressor | None) -> bytes:
    if value[0] == 123:  # '{': stored as plain JSON
        return value
    try:
        return raw_json(value, compressor)
    except zstandard.ZstdError as error:
        raise MalformedEntry(f"a stored record is neither JSON nor a readable zstd frame: {error}") from None


def _same_codec(target: Compressor | None, source: Compressor | None) -> bool:
    """Whether the target table reads the source's stored values as they are."""
    if target is None or source is None:
        return target is None and source is None
    return target.dictionary == source.dictionary


def _append(txn: Any, dbi: Any, keys: Sequence[bytes], values: Sequence[bytes], duplicates: bool) -> None:
    """Write pairs (in key order) into a sub-database: appended when they all come after what it holds."""
    cursor = txn.cursor(db=dbi)
    first = keys[0], values[0]
    if cursor.last():
        last = bytes(cursor.key()), bytes(cursor.value())
        after = last < first if duplicates else last[0] < first[0]
    else:
        after = True
    if not after:
        # Not after what is there: this snapshot's sequence was sent again and restarted (same content).
        cursor.putmulti(zip(keys, values, strict=True), dupdata=True, overwrite=True)
        return
    _consumed, added = cursor.putmulti(zip(keys, values, strict=True), dupdata=True, overwrite=True, append=True)
    if added != len(keys):
        raise MalformedEntry("stored pairs must come in strictly increasing key order")


def write_stored(t: Transaction, table: Table, stored: StoredPairs, source: bytes, codec: Compressor | None) -> int:
    """One-way replica: write a chunk of stored pairs into `table` (re-created empty at the snapshot's start).

    The effect is that of writing each document through `Table._write` (records, index entries, a journal ``put``
    op per record when the replica keeps a journal, versions when it keeps them); returns the documents written.
    """
    keys, values = stored.keys, stored.values
    count = len(keys)
    if len(values) != count:
        raise MalformedEntry("stored pairs need as many values as keys")
    if not count:
        return 0
    txn = t.txn
    if stored.part == "index":
        index = table._indexes.get(stored.index or "")
        if index is None:
            raise MalformedEntry(f"index {stored.index!r} of table {table.name!r} is not in the snapshot's definitions")
        _append(txn, index.dbi, keys, values, index.duplicates)
        return 0
    replication = table._db.replication
    prefix = table.name.encode() + b"\x00"
    if stored.part == "tombstones":
        if replication.versioned:
            deleted = b"\x01" + source
            _put_versions(txn, replication, [prefix + key for key in keys], [value[:24] + deleted for value in values])
        return count
    if stored.part != "records":
        raise MalformedEntry(f"unknown stored-pairs part {stored.part!r}")
    target = table._compressor
    plain = set(map(first_byte, values)) == {123}  # every value stored as JSON ('{')
    if not plain and not all(value[0] == 123 or value[:4] == ZSTD_MAGIC for value in values):
        raise MalformedEntry("a stored record must be JSON or a zstd frame")
    same = plain or _same_codec(target, codec)
    texts = values if plain or (same and t.ops is None) else [_json(value, codec) for value in values]
    written = values
    if not same:
        # The table's compression differs from the source's (not expected after the snapshot's start): re-encode.
        written = texts if target is None else [target.compress(text) for text in texts]
    _append(txn, table._dbi, keys, written, False)
    if t.ops is not None:
        # '["put",<table>,"<key>",<length>]' for each record, joined in one go (write_entry joins ops with ','),
        # and the records' JSON as the entry's documents.
        head = b'["put",' + table._name_json + b',"'
        lengths = map(b"%d".__mod__, map(len, texts))
        ops = b"".join(chain.from_iterable(zip(repeat(head), keys, repeat(b'",'), lengths, repeat(b"],"))))
        t.ops.append(ops[:-1])
        t.documents += b"".join(texts)
    if replication.versioned:
        live = b"\x00" + source
        unknown = VERSION.pack(0, source, False, source)
        versions = stored.versions
        if versions is None:
            stamps = [unknown] * count
        else:
            if len(versions) != count:
                raise MalformedEntry("a records part needs one version per record")
            stamps = [version[:24] + live if version else unknown for version in versions]
        _put_versions(txn, replication, [prefix + key for key in keys], stamps)
    return count


def _put_versions(txn: Any, replication: Replication, keys: list[bytes], values: list[bytes]) -> None:
    txn.cursor(db=replication._versions).putmulti(zip(keys, values, strict=True), dupdata=True, overwrite=True)


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
        fields = orjson.loads(_json(values[number], codec))
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
