"""Journal entry bodies read back (core/journal.py writes them).

Format 2: a version byte, the length of a JSON header ``{"o": origin uuid, "v": version, "ops": [...]}`` (u32
little-endian), the header, then the stored bytes of every ``put`` op's document back to back (the op carries the
length). Format 3 (an entry of nothing but inserts): format 2 whose header also has ``"kt": {table: index token}``
and ``"k": n``, the number of index keys the entry carries (one per index of each insert's table, in op order);
after the documents come their n lengths (u16 little-endian, 0: no key), then the keys back to back.
Format 1 bodies (the JSON header alone, documents inline) are still read.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import orjson

from pynndb.core.keys import MAX_KEY_SIZE
from pynndb.core.ops import PUT
from pynndb.errors import MalformedEntry

HEADER_LENGTH = struct.Struct("<I")
HEADER_START = 1 + HEADER_LENGTH.size  # a format 2 body: format byte, header length, header, documents
FORMAT = 2  # the first byte of an entry body; a format 1 body is JSON (its first byte is '{')
FORMAT_BYTE = bytes([FORMAT])
KEYED_FORMAT = 3  # format 2 with the index keys of its inserts
KEYED_FORMAT_BYTE = bytes([KEYED_FORMAT])
BINARY_FORMATS = (FORMAT_BYTE, KEYED_FORMAT_BYTE)  # bodies `_read_binary` reads (format 1 is JSON)
# An entry of fewer inserts is written without their index keys (format 2): reading the keys costs a replica more
# per entry than decoding a few documents does. `benchmarks/apply_keys.py` (a replica's apply CPU a document, keys /
# no keys, three runs): k=1 1.16-1.31x, k=4 0.99-1.03x, k=8 0.96-1.03x, k=1000 0.70-0.85x.
KEYED_MIN = 8
# The longest header `single_put` parses: one put op with a 256-byte key and a table name of up to ~600 bytes.
# Entries of several ops have longer headers (one op is ~80 bytes) or carry keys (format 3), and are read once,
# by `read_keyed`.
SINGLE_PUT_HEADER = 1024


class Entry(NamedTuple):
    """A journal entry as read back: origin database UUID, version, and ops. A ``put`` op's last item is the
    document's stored JSON bytes (`read_entry`) or its decoded fields (`decode_body`)."""

    origin: str
    version: int
    ops: list[Any]


class Keys(NamedTuple):
    """The index keys a format 3 body carries: each table's index token when they were computed, their lengths
    (for each put op in order, one per index of its table; 0: no key) and where they start in `body`."""

    tokens: dict[str, str]
    lengths: tuple[int, ...]
    start: int
    body: bytes


_new_keys = tuple.__new__  # (see _new_entry)


IndexKeys = tuple[list[bytes], ...]  # one document's keys, a list per index of its table (empty: not indexed)


def read_entry(body: bytes) -> Entry:
    """An entry body (format 3, 2 or 1) with each put op's document as its stored bytes, or MalformedEntry."""
    return _read_binary(body)[0] if body[:1] in BINARY_FORMATS else _read_v1(body)


def read_keyed(body: bytes) -> tuple[Entry, Keys | None]:
    """`read_entry`, and the index keys of a format 3 body (None for the other formats)."""
    return _read_binary(body) if body[:1] in BINARY_FORMATS else (_read_v1(body), None)


def _read_v1(body: bytes) -> Entry:
    """A format 1 body (JSON, documents inline), or MalformedEntry naming the format it is not."""
    first = body[:1]
    try:
        entry = orjson.loads(body)
    except orjson.JSONDecodeError:
        if first and KEYED_FORMAT < first[0] < 32:  # a format byte this release does not know (not JSON text)
            raise MalformedEntry(
                f"journal entry of format {first[0]}, newer than this release reads (1 to {KEYED_FORMAT}): "
                "upgrade this process"
            ) from None
        raise MalformedEntry(f"journal entry of unknown format (first byte {first!r})") from None
    checked = _checked(entry)
    for op in checked.ops:
        if type(op) is list and len(op) == 4 and op[0] == PUT and type(op[3]) is dict:
            op[3] = orjson.dumps(op[3])  # format 1: documents inline; the same bytes an encoder would store
    return checked


def split_keys(keys: Keys, width: int, count: int) -> list[IndexKeys]:
    """The index keys of `count` put ops into one table of `width` indexes, as `keys` carries them; MalformedEntry
    when they are not `width` for each op."""
    lengths = keys.lengths
    if len(lengths) != width * count:
        raise MalformedEntry("an entry's index keys do not match its put ops")
    if not width:
        return [()] * count
    body = keys.body
    offset = keys.start
    split: list[IndexKeys] = []
    if width == 1:  # the common case: a list per op, no inner loop
        for length in lengths:
            end = offset + length
            split.append(([body[offset:end]] if length else [],))
            offset = end
        return split
    for start in range(0, len(lengths), width):
        each: list[list[bytes]] = []
        for length in lengths[start : start + width]:
            end = offset + length
            each.append([body[offset:end]] if length else [])
            offset = end
        split.append(tuple(each))
    return split


def document_fields(stored: Any) -> dict[str, Any]:
    """The fields of a put op's document (its stored JSON bytes); MalformedEntry when it is not a JSON object."""
    try:
        fields = orjson.loads(stored) if stored.__class__ is bytes else None
    except orjson.JSONDecodeError:
        raise MalformedEntry("a put op's document is not JSON") from None
    if fields.__class__ is not dict:
        raise MalformedEntry("a put op must carry a document (a JSON object)")
    return fields


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


def _read_binary(body: bytes) -> tuple[Entry, Keys | None]:
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
        return _checked(header), None  # raises with the reason
    offset = end
    for op in ops:
        if op.__class__ is list and len(op) == 4 and op[0] == PUT:
            length = op[3]
            if length.__class__ is not int or length < 2:
                raise MalformedEntry("a put op must carry its document's length")
            stop = offset + length
            # Every document is a JSON object: a cheap check that the lengths and the bytes line up.
            if stop > size or body[offset] != 123 or body[stop - 1] != 125:
                raise MalformedEntry("a put op's document is not a JSON object (or lengths do not add up)")
            op[3] = body[offset:stop]
            offset = stop
    entry = _new_entry(Entry, (origin, version, ops))
    if body[0] == KEYED_FORMAT:
        return entry, _keys(header, body, offset)
    if offset != size:
        raise MalformedEntry("journal entry documents do not add up to the body")
    return entry, None


def single_put(body: bytes) -> tuple[str, int, str, str, bytes] | None:
    """The body of an application's one-document commit, the most frequent entry a replica applies (a format 2
    body with one put op): (origin, version, table, key, the document's stored bytes). None for every other body,
    including a malformed one: `read_keyed` reads those and says what is wrong."""
    size = len(body)
    if size < HEADER_START or body[0] != FORMAT:
        return None
    length = HEADER_LENGTH.unpack_from(body, 1)[0]
    end = HEADER_START + length
    if end + 2 > size or length > SINGLE_PUT_HEADER:
        return None  # (a longer header holds more ops, or long names: `read_keyed` must not parse it twice)
    try:
        header = orjson.loads(body[HEADER_START:end])
        # Unpacked as they should be, shapes checked by what fails (KeyError, TypeError, ValueError) and the classes
        # below: ~40 % fewer steps than a check of each level, for the entry a replica applies most.
        (put,) = header["ops"]
        kind, table, key, stored_length = put
        origin, version = header["o"], header["v"]
    except (KeyError, TypeError, ValueError):  # (orjson.JSONDecodeError is a ValueError)
        return None
    if (
        kind != PUT
        or stored_length.__class__ is not int
        or stored_length != size - end
        or body[end] != 123  # a JSON object: '{' ... '}'
        or body[size - 1] != 125
        or origin.__class__ is not str
        or version.__class__ is not int
        or table.__class__ is not str
        or key.__class__ is not str
        or not key
    ):
        return None
    return origin, version, table, key, body[end:]


def _keys(header: dict[str, Any], body: bytes, start: int) -> Keys:
    # Once per replicated insert entry: checks in C (a token that is not a str matches no table's, so is ignored).
    tokens = header.get("kt")
    count = header.get("k")
    if tokens.__class__ is not dict or count.__class__ is not int or count < 0 or start + 2 * count > len(body):
        raise MalformedEntry("a keyed entry needs 'kt' (table -> index token) and 'k' (how many key lengths follow)")
    lengths = struct.unpack_from(f"<{count}H", body, start)
    if count and max(lengths) > MAX_KEY_SIZE:
        raise MalformedEntry(f"an index key must be 1 to {MAX_KEY_SIZE} bytes long")
    start += 2 * count
    if start + sum(lengths) != len(body):
        raise MalformedEntry("journal entry documents and index keys do not add up to the body")
    return _new_keys(Keys, (tokens, lengths, start, body))
