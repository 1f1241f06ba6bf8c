"""The payload of a snapshot chunk of stored key/value pairs (frame type ``stored``): length tables, then the keys,
values and versions back to back, sliced straight out of the frame when read (see `messages` for the frame)."""

from __future__ import annotations

import functools
import struct
from itertools import chain
from typing import Any

import orjson

from pynndb.errors import InvalidArgument, MalformedEntry
from pynndb.replication.message_types import (
    EMPTY_JSON,
    MAX_KEY,
    MAX_RECORD_KEY,
    PARTS,
    RECORD_KEY_BYTES,
    STORED_FORMAT,
    VERSION,
    VERSION_SIZE,
    SnapshotChunk,
    StoredPairs,
    count_field,
    typed_field,
)


# --- stored pairs. Header: "format", "part", "index", "count", "versioned", "key_size" and "value_size" (the size
# of every key / value when they are all the same, else null). Payload, little-endian: key lengths (count x u16,
# unless key_size), value lengths (count x u32, unless value_size), version lengths (count x u8, 0 or 41, when
# versioned), then every key, every value and every version back to back.
def encode_stored(message: SnapshotChunk, stored: StoredPairs, prefix: bytes) -> bytes:
    keys, values, versions = stored.keys, stored.values, stored.versions
    count = len(keys)
    if len(values) != count or (versions is not None and len(versions) != count):
        raise InvalidArgument("stored pairs need as many values (and versions) as keys")
    key_lengths = stored.key_lengths
    if key_lengths is None or len(key_lengths) != count:
        key_lengths = list(map(len, keys))
    value_lengths = stored.value_lengths
    if value_lengths is None or len(value_lengths) != count:
        value_lengths = list(map(len, values))
    key_size = key_lengths[0] if count and key_lengths.count(key_lengths[0]) == count else None
    value_size = value_lengths[0] if count and value_lengths.count(value_lengths[0]) == count else None
    header = {
        "v": VERSION,
        "type": "stored",
        "source": message.source,
        "seq": message.seq,
        "table": message.table,
        "format": STORED_FORMAT,
        "part": stored.part,
        "index": stored.index,
        "count": count,
        "versioned": versions is not None,
        "key_size": key_size,
        "value_size": value_size,
    }
    if message.stream:
        header["stream"] = message.stream
    if message.number:
        header["n"] = message.number
    parts = [prefix, orjson.dumps(header), b"\n"]
    if key_size is None:
        parts.append(struct.pack(f"<{count}H", *key_lengths))
    if value_size is None:
        parts.append(struct.pack(f"<{count}I", *value_lengths))
    if versions is not None:
        parts.append(bytes(map(len, versions)))
    # One join over everything: a single allocation and copy of the (large) frame.
    return b"".join(chain(parts, keys, values, versions or ()))


def _size(header: dict[str, Any], name: str, limit: int) -> int | None:
    value = header.get(name)
    if value is not None and (type(value) is not int or not 1 <= value <= limit):
        raise MalformedEntry(f"field {name!r} must be null or an int from 1 to {limit}")
    return value


CACHED_COUNT = 4096  # Structs of at most this many items are kept (a few at a time, each ~16 bytes an item)


def _struct_of(size: int, count: int) -> struct.Struct:
    return struct.Struct("<" + f"{size}s" * count)


_cached_struct = functools.lru_cache(maxsize=8)(_struct_of)


def _fixed(size: int, count: int) -> struct.Struct:
    """The Struct of `count` items of `size` bytes: chunks mostly have the same count (a source's CHUNK_PAIRS), and
    compiling a format of thousands of items costs about as much as unpacking with it. Not struct's own cache, which
    would keep every such long format alive; a large count (any a sender chose) is compiled each time."""
    return _cached_struct(size, count) if count <= CACHED_COUNT else _struct_of(size, count)


def _split(frame: bytes, start: int, count: int, size: int | None, lengths: tuple[int, ...]) -> tuple[bytes, ...]:
    """`count` items back to back in `frame` from `start`: all `size` bytes long, or of the given lengths."""
    if size is not None:
        return _fixed(size, count).unpack_from(frame, start)
    items: list[bytes] = []
    begin = start
    for length in lengths:  # (a plain loop: compiled, it runs on machine integers)
        end = begin + length
        items.append(frame[begin:end])
        begin = end
    return tuple(items)


def decode_stored(header: dict[str, Any], source: str, frame: bytes, base: int) -> SnapshotChunk:
    """The `stored` payload starts at `frame[base]`; items are sliced straight out of the frame."""
    if header.get("format") != STORED_FORMAT:
        raise MalformedEntry(f"unsupported stored-pairs format {header.get('format')!r}")
    part = header.get("part")
    if part not in PARTS:
        raise MalformedEntry(f"unknown stored-pairs part {part!r}")
    index = header.get("index")
    if (part == "index") != isinstance(index, str):
        raise MalformedEntry("field 'index' must name the index for an index part, and be null otherwise")
    count = typed_field(header, "count", int)
    versioned = typed_field(header, "versioned", bool)
    if versioned and part != "records":
        raise MalformedEntry("only a records part carries versions")
    key_size = _size(header, "key_size", MAX_KEY)
    value_size = _size(header, "value_size", 0xFFFFFFFF)
    payload_size = len(frame) - base
    tables_size = count * ((key_size is None) * 2 + (value_size is None) * 4 + versioned)
    if count < 0 or tables_size > payload_size or (count == 0) != (payload_size == 0):
        raise MalformedEntry("stored-pairs count does not fit the payload")
    offset = base
    key_lengths: tuple[int, ...] = ()
    value_lengths: tuple[int, ...] = ()
    if key_size is None:
        key_lengths = struct.unpack_from(f"<{count}H", frame, offset)
        offset += 2 * count
        if count and (min(key_lengths) < 1 or max(key_lengths) > MAX_KEY):
            raise MalformedEntry("a stored key must be 1 to 511 bytes long")
    if value_size is None:
        value_lengths = struct.unpack_from(f"<{count}I", frame, offset)
        offset += 4 * count
        if count and min(value_lengths) < 1:
            raise MalformedEntry("a stored value must not be empty")
    version_lengths = frame[offset : offset + count] if versioned else b""
    if version_lengths.translate(None, b"\x00\x29"):
        raise MalformedEntry("a stored version must be 0 or 41 bytes long")
    keys_size = count * key_size if key_size is not None else sum(key_lengths)
    values_size = count * value_size if value_size is not None else sum(value_lengths)
    versions_size = sum(version_lengths)
    if tables_size + keys_size + values_size + versions_size != payload_size:
        raise MalformedEntry("stored-pairs lengths do not add up to the payload")
    keys_start = base + tables_size
    values_start = keys_start + keys_size
    versions_start = values_start + values_size
    if part == "index":
        record_keys = frame[values_start:versions_start]
        longest = value_size if value_size is not None else max(value_lengths, default=0)
    else:
        record_keys = frame[keys_start:values_start]
        longest = key_size if key_size is not None else max(key_lengths, default=0)
        sizes = {value_size} if value_size is not None else set(value_lengths)
        if part == "tombstones" and count and sizes != {VERSION_SIZE}:
            raise MalformedEntry("a tombstone's value must be its 41-byte version")
    if longest > MAX_RECORD_KEY or record_keys.translate(None, RECORD_KEY_BYTES):
        raise MalformedEntry("a record key must be 1 to 256 of the characters A-Z a-z 0-9 - _ . :")
    keys = _split(frame, keys_start, count, key_size, key_lengths)
    values = _split(frame, values_start, count, value_size, value_lengths)
    versions = None
    if versioned:
        every = versions_size == VERSION_SIZE * count  # every record has a version
        versions = _split(frame, versions_start, count, VERSION_SIZE if every else None, tuple(version_lengths))
    stored = StoredPairs(part, keys, values, versions, index if isinstance(index, str) else None)
    stream = header.get("stream", 0)  # (checked by decode)
    seq, table = typed_field(header, "seq", int), typed_field(header, "table", str)
    return SnapshotChunk(source, seq, table, [], EMPTY_JSON, stored, stream, count_field(header, "n", 0))
