"""Replication messages and their single-frame wire codec.

A frame is a JSON header line, a newline, then a payload: for ``entries`` the journal bodies back to back (their
lengths are in the header, so bodies are never re-encoded); for ``chunk`` a JSON array of documents; for ``stored``
(a snapshot chunk of stored key/value pairs) length tables then the keys, values and versions back to back
(`stored_frames`). Every decoder checks what it reads and raises `MalformedEntry` on anything unexpected. The
messages themselves are defined in `message_types` and re-exported here.
"""

from __future__ import annotations

import dataclasses
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson

from pynndb.errors import InvalidArgumentType, MalformedEntry
from pynndb.replication.message_types import (
    MAX_WINDOW,
    VERSION,
    Entries,
    Message,
    Reply,
    Request,
    SnapshotAck,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    StoredPairs,
    count_field,
    typed_field,
)
from pynndb.replication.stored_frames import decode_stored, encode_stored

_sequence = itemgetter(0)  # an entry's sequence

__all__ = [
    "Entries",
    "Message",
    "Reply",
    "Request",
    "SnapshotAck",
    "SnapshotBegin",
    "SnapshotChunk",
    "SnapshotEnd",
    "StoredPairs",
    "decode",
    "encode",
]


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
            return encode_stored(message, message.stored, prefix)
        header = {"v": VERSION, "type": "chunk", "source": message.source, "seq": message.seq, "table": message.table}
        if message.stream:
            header["stream"] = message.stream
        if message.number:
            header["n"] = message.number
        payload = message.raw if message.raw is not None else orjson.dumps(message.documents)
        return b"".join((prefix, orjson.dumps(header), b"\n", payload))
    if isinstance(message, Request):
        body: dict[str, Any] = {"type": "request", **_fields(message)}
        if message.tables is None:
            del body["tables"]  # the frame of an unfiltered replica is the same as before filters existed
    elif isinstance(message, SnapshotBegin):
        body = {"type": "begin", **_fields(message)}
    elif isinstance(message, SnapshotAck):
        body = {"type": "ack", **_fields(message)}
    elif isinstance(message, SnapshotEnd):
        body = {"type": "end", **_fields(message)}
        if message.chunks is None:
            del body["chunks"]  # optional: absent means not said, as before chunks were counted
    else:
        raise InvalidArgumentType(f"not a replication message: {message!r}")
    if not body["stream"]:
        del body["stream"]  # optional: absent means 0, as before streams existed
    if not body.get("window", 1):
        del body["window"]  # optional: absent means none, as before flow control existed
    return prefix + orjson.dumps({"v": VERSION, **body}) + b"\n"


def decode(received: object, start: int = 0) -> Message:
    """Decode the message at `received[start:]` (after a targeted frame's replica id: not copied out of a large frame
    first), or raise MalformedEntry. (`object`: what arrived is checked here, not by a compiled caller's types.)"""
    if not isinstance(received, (bytes, bytearray, memoryview)):
        raise MalformedEntry("a frame must be bytes")
    frame = bytes(received)
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
    source = typed_field(header, "source", str)
    stream = header.get("stream", 0)
    if type(stream) is not int or stream < 0:
        raise MalformedEntry("field 'stream' must be a non-negative int")
    if kind == "stored":
        return decode_stored(header, source, frame, newline + 1)  # read in place: no copy of a large payload
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
        seq, table = typed_field(header, "seq", int), typed_field(header, "table", str)
        return SnapshotChunk(source, seq, table, documents, stream=stream, number=count_field(header, "n", 0))
    if kind == "request":
        snapshot = header.get("snapshot", False)
        if not isinstance(snapshot, bool):
            raise MalformedEntry("field 'snapshot' must be a bool")
        tables = header.get("tables")
        if tables is not None and not (
            isinstance(tables, list) and tables and all(isinstance(name, str) and name for name in tables)
        ):
            raise MalformedEntry("field 'tables' must be null or a non-empty list of table names")
        replica, start = typed_field(header, "replica", str), typed_field(header, "start", int)
        return Request(source, replica, start, snapshot, tables, stream, _window(header))
    if kind == "begin":
        dictionaries = header.get("dictionaries", {})
        if not isinstance(dictionaries, dict) or not all(isinstance(value, str) for value in dictionaries.values()):
            raise MalformedEntry("field 'dictionaries' must map table names to base64 strings")
        return SnapshotBegin(
            source,
            typed_field(header, "seq", int),
            typed_field(header, "tables", dict),
            typed_field(header, "documents", int),
            dictionaries,
            stream,
            _window(header),
        )
    if kind == "end":
        chunks = None if header.get("chunks") is None else count_field(header, "chunks")
        return SnapshotEnd(source, typed_field(header, "seq", int), stream, chunks)
    if kind == "ack":
        return SnapshotAck(source, typed_field(header, "replica", str), stream, count_field(header, "number"))
    raise MalformedEntry(f"unknown message type {kind!r}")


def _fields(message: Any) -> dict[str, Any]:
    """A message's fields by name (compiled dataclasses have no ``__dict__``)."""
    return {item.name: getattr(message, item.name) for item in dataclasses.fields(message)}


def _window(header: dict[str, Any]) -> int:
    window = count_field(header, "window", 0)
    if window > MAX_WINDOW:
        raise MalformedEntry(f"field 'window' must be at most {MAX_WINDOW}")
    return window


def _decode_entries(header: dict[str, Any], source: str, frame: bytes, offset: int) -> Entries:
    described = typed_field(header, "entries", list)
    entries = []
    for item in described:
        # (exact classes, no generator: this runs for every entry a replica receives)
        if item.__class__ is not list or len(item) != 3:
            raise MalformedEntry("each entry must be [seq, clock, length]")
        seq, clock, length = item
        if not (seq.__class__ is int and clock.__class__ is int and length.__class__ is int):
            raise MalformedEntry("each entry must be [seq, clock, length]")
        if seq < 0 or clock < 0 or length < 0:
            raise MalformedEntry("each entry must be [seq, clock, length]")
        entries.append((seq, clock, frame[offset : offset + length]))
        offset += length
    # Checked once for the whole frame (in C): a body cut short makes the lengths add up past the frame's end.
    if offset != len(frame):
        raise MalformedEntry("the entries' lengths do not add up to the frame (a body truncated or bytes after it)")
    if entries and list(map(_sequence, entries)) != list(range(entries[0][0], entries[0][0] + len(entries))):
        raise MalformedEntry("entries in a frame must be consecutive")
    last = header.get("last", 0)
    return Entries(source, entries, last if isinstance(last, int) else 0)
