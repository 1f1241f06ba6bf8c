"""Replication messages (sans-IO) and their single-frame wire codec.

A frame is a JSON header line, a newline, then a payload: for ``entries`` the journal bodies back to back (their
lengths are in the header, so bodies are never re-encoded); for ``chunk`` a JSON array of documents.
Every decoder checks what it reads and raises `MalformedEntry` on anything unexpected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from pynndb.errors import MalformedEntry

VERSION = 1


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
    """A replica asks source `source` for entries from `start` on (a snapshot if `snapshot` or if they are gone)."""

    source: str
    replica: str
    start: int
    snapshot: bool = False


@dataclass(frozen=True)
class SnapshotBegin:
    """A snapshot of `source` taken at sequence `seq`: table and index definitions, and how many documents follow."""

    source: str
    seq: int
    tables: dict[str, Any]
    documents: int


@dataclass(frozen=True)
class SnapshotChunk:
    """Documents of one table in a snapshot: [key, fields or None (tombstone), version or None]."""

    source: str
    seq: int
    table: str
    documents: list[Any] = field(default_factory=list)
    raw: bytes | None = None  # the JSON array as sent, when built by a source


@dataclass(frozen=True)
class SnapshotEnd:
    """The snapshot at `seq` is complete: entries from `seq + 1` follow."""

    source: str
    seq: int


Message = Entries | Request | SnapshotBegin | SnapshotChunk | SnapshotEnd


def encode(message: Message) -> bytes:
    """One frame for a message."""
    if isinstance(message, Entries):
        header = {
            "v": VERSION,
            "type": "entries",
            "source": message.source,
            "last": message.last,
            "entries": [[seq, clock, len(body)] for seq, clock, body in message.entries],
        }
        return orjson.dumps(header) + b"\n" + b"".join(body for _seq, _clock, body in message.entries)
    if isinstance(message, SnapshotChunk):
        header = {"v": VERSION, "type": "chunk", "source": message.source, "seq": message.seq, "table": message.table}
        payload = message.raw if message.raw is not None else orjson.dumps(message.documents)
        return orjson.dumps(header) + b"\n" + payload
    if isinstance(message, Request):
        body: dict[str, Any] = {"type": "request", **message.__dict__}
    elif isinstance(message, SnapshotBegin):
        body = {"type": "begin", **message.__dict__}
    elif isinstance(message, SnapshotEnd):
        body = {"type": "end", **message.__dict__}
    else:
        raise TypeError(f"not a replication message: {message!r}")
    return orjson.dumps({"v": VERSION, **body}) + b"\n"


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MalformedEntry(f"field {name!r} missing or of the wrong type")
    return value


def decode(frame: bytes) -> Message:
    """Decode a frame, or raise MalformedEntry."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise MalformedEntry("a frame must be bytes")
    frame = bytes(frame)
    head, newline, payload = frame.partition(b"\n")
    if not newline:
        raise MalformedEntry("frame has no header line")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        raise MalformedEntry("frame header is not JSON") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise MalformedEntry(f"unsupported frame version {header.get('v') if isinstance(header, dict) else None!r}")
    kind = header.get("type")
    source = _field(header, "source", str)
    if kind == "entries":
        return _decode_entries(header, source, payload)
    if kind == "chunk":
        try:
            documents = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise MalformedEntry("snapshot chunk payload is not JSON") from None
        if not isinstance(documents, list):
            raise MalformedEntry("snapshot chunk payload must be a list")
        return SnapshotChunk(source, _field(header, "seq", int), _field(header, "table", str), documents)
    if kind == "request":
        snapshot = header.get("snapshot", False)
        if not isinstance(snapshot, bool):
            raise MalformedEntry("field 'snapshot' must be a bool")
        return Request(source, _field(header, "replica", str), _field(header, "start", int), snapshot)
    if kind == "begin":
        return SnapshotBegin(
            source, _field(header, "seq", int), _field(header, "tables", dict), _field(header, "documents", int)
        )
    if kind == "end":
        return SnapshotEnd(source, _field(header, "seq", int))
    raise MalformedEntry(f"unknown message type {kind!r}")


def _decode_entries(header: dict[str, Any], source: str, payload: bytes) -> Entries:
    described = _field(header, "entries", list)
    entries = []
    offset = 0
    previous = None
    for item in described:
        if not (isinstance(item, list) and len(item) == 3 and all(type(x) is int and x >= 0 for x in item)):
            raise MalformedEntry("each entry must be [seq, clock, length]")
        seq, clock, length = item
        if previous is not None and seq != previous + 1:
            raise MalformedEntry("entries in a frame must be consecutive")
        previous = seq
        body = payload[offset : offset + length]
        if len(body) != length:
            raise MalformedEntry("entry body truncated")
        entries.append((seq, clock, body))
        offset += length
    if offset != len(payload):
        raise MalformedEntry("trailing bytes after the last entry")
    last = header.get("last", 0)
    return Entries(source, entries, last if isinstance(last, int) else 0)
