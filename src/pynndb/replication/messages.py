"""Replication messages (sans-IO) and their single-frame wire codec.

A frame is a JSON header line, a newline, then a payload: for ``entries`` the journal bodies back to back (their
lengths are in the header, so bodies are never re-encoded); for ``chunk`` a JSON array of documents; for ``stored``
(a snapshot chunk of stored key/value pairs) length tables then the keys, values and versions back to back.
Every decoder checks what it reads and raises `MalformedEntry` on anything unexpected.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from itertools import accumulate, chain, pairwise
from typing import Any

import orjson

from pynndb.errors import InvalidArgument, InvalidArgumentType, MalformedEntry

VERSION = 1
STORED_FORMAT = 1  # layout of a `stored` payload (header field "format")
PARTS = ("records", "index", "tombstones")
VERSION_SIZE = 41  # a stored document version: clock u64, origin uuid, tombstone flag, source uuid (journal.VERSION)
MAX_KEY = 511  # LMDB's key size limit
MAX_RECORD_KEY = 256
# Record keys are written verbatim into JSON journal ops: only characters that need no escaping (core.ids).
RECORD_KEY_BYTES = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:"
EMPTY_JSON = b"[]"


@dataclass(frozen=True)
class Entries:
    """Consecutive journal entries of database `source`: (seq, clock, body) with body the entry's JSON."""

    source: str
    entries: list[tuple[int, int, bytes]]
    last: int = 0  # the source's last sequence when sent (for lag), 0 if unknown

    @property
    def first_seq(self) -> int:
        return self.entries[0][0] if self.entries else 0

    @property
    def last_seq(self) -> int:
        return self.entries[-1][0] if self.entries else 0


@dataclass(frozen=True)
class Request:
    """A replica asks source `source` for entries from `start` on (a snapshot if `snapshot` or if they are gone).

    `tables`: a filtered replica's tables, so that a snapshot carries only those (None: every table).
    """

    source: str
    replica: str
    start: int
    snapshot: bool = False
    tables: list[str] | None = None
    # The replica's id for this request: a snapshot answering it carries it (0: none). A correlation id, not part
    # of what is asked, so two requests for the same thing compare equal.
    stream: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SnapshotBegin:
    """A snapshot of `source` taken at sequence `seq`: table and index definitions, and how many documents follow."""

    source: str
    seq: int
    tables: dict[str, Any]
    documents: int
    dictionaries: dict[str, str] = field(default_factory=dict)  # table -> base64 zstd dictionary of its records
    stream: int = field(default=0, compare=False)  # the `stream` of the request answered (0: not said)


@dataclass(frozen=True)
class StoredPairs:
    """Key/value pairs of one of a table's LMDB sub-databases, exactly as the source stores them, in key order:
    `keys[i]` goes with `values[i]` (tuples, so that chunks compare equal after a round trip).

    - part 'records': (record key, stored value: JSON or a zstd frame); `versions` holds the source's 41-byte
      version of each record (b'' when it has none), or is None when the source keeps no versions;
    - part 'index': (index key, record key) entries of index `index`;
    - part 'tombstones': (record key, 41-byte version) of deleted records (versioned sources only).
    """

    part: str
    keys: tuple[bytes, ...]
    values: tuple[bytes, ...]
    versions: tuple[bytes, ...] | None = None
    index: str | None = None

    @classmethod
    def of(
        cls,
        part: str,
        pairs: list[tuple[bytes, bytes]],
        versions: list[bytes] | None = None,
        index: str | None = None,
    ) -> StoredPairs:
        """From a list of (key, value) pairs."""
        keys, values = (tuple(pairs_part) for pairs_part in zip(*pairs, strict=True)) if pairs else ((), ())
        return cls(part, keys, values, None if versions is None else tuple(versions), index)


@dataclass(frozen=True)
class SnapshotChunk:
    """Documents of one table in a snapshot: [key, fields or None (tombstone), version or None] (JSON form), or,
    when `stored` is set, stored key/value pairs of the table (then `documents` is empty and `raw` is b'[]')."""

    source: str
    seq: int
    table: str
    documents: list[Any] = field(default_factory=list)
    raw: bytes | None = None  # the JSON array as sent, when built by a source
    stored: StoredPairs | None = None
    stream: int = field(default=0, compare=False)
    number: int = field(default=0, compare=False)  # its place among the snapshot's chunks, from 1 (0: not said)


@dataclass(frozen=True)
class SnapshotEnd:
    """The snapshot at `seq` is complete: entries from `seq + 1` follow."""

    source: str
    seq: int
    stream: int = field(default=0, compare=False)
    chunks: int | None = field(default=None, compare=False)  # how many chunks the snapshot sent (None: not said)


Message = Entries | Request | SnapshotBegin | SnapshotChunk | SnapshotEnd


def encode(message: Message, prefix: bytes = b"") -> bytes:
    """One frame for a message, after `prefix` (a targeted frame's replica id; a large frame is one join)."""
    if isinstance(message, Entries):
        header = {
            "v": VERSION,
            "type": "entries",
            "source": message.source,
            "last": message.last,
            "entries": [[seq, clock, len(body)] for seq, clock, body in message.entries],
        }
        bodies = (body for _seq, _clock, body in message.entries)
        return b"".join(chain((prefix, orjson.dumps(header), b"\n"), bodies))
    if isinstance(message, SnapshotChunk):
        if message.stored is not None:
            return _encode_stored(message, message.stored, prefix)
        header = {"v": VERSION, "type": "chunk", "source": message.source, "seq": message.seq, "table": message.table}
        if message.stream:
            header["stream"] = message.stream
        if message.number:
            header["n"] = message.number
        payload = message.raw if message.raw is not None else orjson.dumps(message.documents)
        return b"".join((prefix, orjson.dumps(header), b"\n", payload))
    if isinstance(message, Request):
        body: dict[str, Any] = {"type": "request", **message.__dict__}
        if message.tables is None:
            del body["tables"]  # the frame of an unfiltered replica is the same as before filters existed
    elif isinstance(message, SnapshotBegin):
        body = {"type": "begin", **message.__dict__}
    elif isinstance(message, SnapshotEnd):
        body = {"type": "end", **message.__dict__}
        if message.chunks is None:
            del body["chunks"]  # optional: absent means not said, as before chunks were counted
    else:
        raise InvalidArgumentType(f"not a replication message: {message!r}")
    if not body["stream"]:
        del body["stream"]  # optional: absent means 0, as before streams existed
    return prefix + orjson.dumps({"v": VERSION, **body}) + b"\n"


def _count(header: dict[str, Any], name: str, default: int | None = None) -> int:
    """A non-negative int field (`default` when absent and one is given)."""
    value = header.get(name, default)
    if type(value) is not int or value < 0:
        raise MalformedEntry(f"field {name!r} must be a non-negative int")
    return value


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MalformedEntry(f"field {name!r} missing or of the wrong type")
    return value


def decode(frame: bytes, start: int = 0) -> Message:
    """Decode the message at `frame[start:]` (after a targeted frame's replica id: not copied out of a large frame
    first), or raise MalformedEntry."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise MalformedEntry("a frame must be bytes")
    frame = bytes(frame)
    newline = frame.find(b"\n", start)
    if newline < 0:
        raise MalformedEntry("frame has no header line")
    try:
        header = orjson.loads(frame[start:newline])
    except orjson.JSONDecodeError:
        raise MalformedEntry("frame header is not JSON") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise MalformedEntry(f"unsupported frame version {header.get('v') if isinstance(header, dict) else None!r}")
    kind = header.get("type")
    source = _field(header, "source", str)
    stream = header.get("stream", 0)
    if type(stream) is not int or stream < 0:
        raise MalformedEntry("field 'stream' must be a non-negative int")
    if kind == "stored":
        return _decode_stored(header, source, frame, newline + 1)  # read in place: no copy of a large payload
    if kind == "entries":
        return _decode_entries(header, source, frame, newline + 1)  # bodies sliced straight out of the frame
    payload = frame[newline + 1 :]
    if kind == "chunk":
        try:
            documents = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise MalformedEntry("snapshot chunk payload is not JSON") from None
        if not isinstance(documents, list):
            raise MalformedEntry("snapshot chunk payload must be a list")
        seq, table = _field(header, "seq", int), _field(header, "table", str)
        return SnapshotChunk(source, seq, table, documents, stream=stream, number=_count(header, "n", 0))
    if kind == "request":
        snapshot = header.get("snapshot", False)
        if not isinstance(snapshot, bool):
            raise MalformedEntry("field 'snapshot' must be a bool")
        tables = header.get("tables")
        if tables is not None and not (
            isinstance(tables, list) and tables and all(isinstance(name, str) and name for name in tables)
        ):
            raise MalformedEntry("field 'tables' must be null or a non-empty list of table names")
        return Request(source, _field(header, "replica", str), _field(header, "start", int), snapshot, tables, stream)
    if kind == "begin":
        dictionaries = header.get("dictionaries", {})
        if not isinstance(dictionaries, dict) or not all(isinstance(value, str) for value in dictionaries.values()):
            raise MalformedEntry("field 'dictionaries' must map table names to base64 strings")
        return SnapshotBegin(
            source,
            _field(header, "seq", int),
            _field(header, "tables", dict),
            _field(header, "documents", int),
            dictionaries,
            stream,
        )
    if kind == "end":
        chunks = None if header.get("chunks") is None else _count(header, "chunks")
        return SnapshotEnd(source, _field(header, "seq", int), stream, chunks)
    raise MalformedEntry(f"unknown message type {kind!r}")


def _decode_entries(header: dict[str, Any], source: str, frame: bytes, offset: int) -> Entries:
    described = _field(header, "entries", list)
    entries = []
    previous = None
    for item in described:
        # (exact classes, no generator: this runs for every entry a replica receives)
        if item.__class__ is not list or len(item) != 3:
            raise MalformedEntry("each entry must be [seq, clock, length]")
        seq, clock, length = item
        if not (seq.__class__ is int and clock.__class__ is int and length.__class__ is int):
            raise MalformedEntry("each entry must be [seq, clock, length]")
        if seq < 0 or clock < 0 or length < 0:
            raise MalformedEntry("each entry must be [seq, clock, length]")
        if previous is not None and seq != previous + 1:
            raise MalformedEntry("entries in a frame must be consecutive")
        previous = seq
        body = frame[offset : offset + length]
        if len(body) != length:
            raise MalformedEntry("entry body truncated")
        entries.append((seq, clock, body))
        offset += length
    if offset != len(frame):
        raise MalformedEntry("trailing bytes after the last entry")
    last = header.get("last", 0)
    return Entries(source, entries, last if isinstance(last, int) else 0)


# --- stored pairs. Header: "format", "part", "index", "count", "versioned", "key_size" and "value_size" (the size
# of every key / value when they are all the same, else null). Payload, little-endian: key lengths (count x u16,
# unless key_size), value lengths (count x u32, unless value_size), version lengths (count x u8, 0 or 41, when
# versioned), then every key, every value and every version back to back.
def _encode_stored(message: SnapshotChunk, stored: StoredPairs, prefix: bytes) -> bytes:
    keys, values, versions = stored.keys, stored.values, stored.versions
    count = len(keys)
    if len(values) != count or (versions is not None and len(versions) != count):
        raise InvalidArgument("stored pairs need as many values (and versions) as keys")
    key_lengths = list(map(len, keys))
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


def _split(frame: bytes, start: int, count: int, size: int | None, lengths: tuple[int, ...]) -> tuple[bytes, ...]:
    """`count` items back to back in `frame` from `start`: all `size` bytes long, or of the given lengths."""
    if size is not None:
        # A Struct of its own: struct's module cache would keep every such (long) format alive.
        return struct.Struct("<" + f"{size}s" * count).unpack_from(frame, start)
    return tuple([frame[begin:end] for begin, end in pairwise(accumulate(lengths, initial=start))])


def _decode_stored(header: dict[str, Any], source: str, frame: bytes, base: int) -> SnapshotChunk:
    """The `stored` payload starts at `frame[base]`; items are sliced straight out of the frame."""
    if header.get("format") != STORED_FORMAT:
        raise MalformedEntry(f"unsupported stored-pairs format {header.get('format')!r}")
    part = header.get("part")
    if part not in PARTS:
        raise MalformedEntry(f"unknown stored-pairs part {part!r}")
    index = header.get("index")
    if (part == "index") != isinstance(index, str):
        raise MalformedEntry("field 'index' must name the index for an index part, and be null otherwise")
    count = _field(header, "count", int)
    versioned = _field(header, "versioned", bool)
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
    seq, table = _field(header, "seq", int), _field(header, "table", str)
    return SnapshotChunk(source, seq, table, [], EMPTY_JSON, stored, stream, _count(header, "n", 0))
