"""Journal entry bodies read back (core/journal.py writes them).

Format 2: a version byte, the length of a JSON header ``{"o": origin uuid, "v": version, "ops": [...]}`` (u32
little-endian), the header, then the stored bytes of every ``put`` op's document back to back (the op carries the
length). Format 1 bodies (the JSON header alone, documents inline) are still read.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import orjson

from pynndb.core.ops import PUT
from pynndb.errors import MalformedEntry

HEADER_LENGTH = struct.Struct("<I")
HEADER_START = 1 + HEADER_LENGTH.size  # a format 2 body: format byte, header length, header, documents
FORMAT = 2  # the first byte of an entry body; a format 1 body is JSON (its first byte is '{')
FORMAT_BYTE = bytes([FORMAT])


class Entry(NamedTuple):
    """A journal entry as read back: origin database UUID, version, and ops. A ``put`` op's last item is the
    document's stored JSON bytes (`read_entry`) or its decoded fields (`decode_body`)."""

    origin: str
    version: int
    ops: list[Any]


def read_entry(body: bytes) -> Entry:
    """An entry body (format 2, or format 1) with each put op's document as its stored bytes, or MalformedEntry."""
    if body[:1] == FORMAT_BYTE:
        return _read_v2(body)
    try:
        entry = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedEntry(f"journal entry of unknown format (first byte {body[:1]!r})") from None
    checked = _checked(entry)
    for op in checked.ops:
        if type(op) is list and len(op) == 4 and op[0] == PUT and type(op[3]) is dict:
            op[3] = orjson.dumps(op[3])  # format 1: documents inline; the same bytes an encoder would store
    return checked


def decode_body(body: bytes) -> Entry:
    """An entry body with each put op's document decoded to its fields (change feeds, tests)."""
    entry = read_entry(body)
    loads = orjson.loads
    for op in entry.ops:
        if type(op) is list and len(op) == 4 and op[0] == PUT:
            op[3] = loads(op[3])
    return entry


_new_entry = tuple.__new__  # an Entry without NamedTuple's Python-level constructor (hot path)


def _checked(entry: Any) -> Entry:
    if not isinstance(entry, dict) or not isinstance(entry.get("ops"), list):
        raise MalformedEntry("journal entry must be an object with 'ops'")
    origin = entry.get("o")
    version = entry.get("v")
    if not isinstance(origin, str) or type(version) is not int:
        raise MalformedEntry("journal entry lacks origin or version")
    return Entry(origin, version, entry["ops"])


def _read_v2(body: bytes) -> Entry:
    # The hot path of every replica (an entry per source commit): `_checked` inlined, exact classes compared.
    size = len(body)
    if size < HEADER_START:
        raise MalformedEntry("journal entry truncated")
    end = HEADER_START + HEADER_LENGTH.unpack_from(body, 1)[0]
    if end > size:
        raise MalformedEntry("journal entry header truncated")
    try:
        header = orjson.loads(body[HEADER_START:end])
    except orjson.JSONDecodeError:
        raise MalformedEntry("journal entry header is not JSON") from None
    if header.__class__ is not dict:
        raise MalformedEntry("journal entry must be an object with 'ops'")
    ops = header.get("ops")
    origin = header.get("o")
    version = header.get("v")
    if ops.__class__ is not list or origin.__class__ is not str or version.__class__ is not int:
        return _checked(header)  # raises with the reason
    offset = end
    for op in ops:
        if op.__class__ is list and len(op) == 4 and op[0] == PUT:
            length = op[3]
            if length.__class__ is not int or length < 2:
                raise MalformedEntry("a put op must carry its document's length")
            document = body[offset : offset + length]
            # Every document is a JSON object: a cheap check that the lengths and the bytes line up.
            if document[:1] != b"{" or document[-1:] != b"}":
                raise MalformedEntry("a put op's document is not a JSON object (or lengths do not add up)")
            op[3] = document
            offset += length
    if offset != size:
        raise MalformedEntry("journal entry documents do not add up to the body")
    return _new_entry(Entry, (origin, version, ops))
