"""Order-preserving encoding of index keys: ints, floats, strings and tuples sort by value as LMDB bytes.

Each value starts with a type tag, so mixed types sort by type first (None < bool < number < str < bytes < tuple).
Numbers share one tag and sort by numeric value (64-bit ints keep exact order through a 2-byte remainder).
"""

from __future__ import annotations

import struct
from typing import Any

from pynndb.errors import InvalidIndexKey

TAG_NONE = b"\x01"
TAG_BOOL = b"\x08"
TAG_NUMBER = b"\x10"
TAG_STR = b"\x20"
TAG_BYTES = b"\x30"
TAG_TUPLE = b"\x50"
MAX_KEY_SIZE = 511  # LMDB's default key size limit, also the limit for dupsort values

_pack_double = struct.Struct(">d").pack
_pack_u64 = struct.Struct(">Q").pack
pack_exact = struct.Struct(">BdH").pack  # tag, double, remainder: the whole key of an exactly representable number
_SIGN = 1 << 63
EXACT = 1 << 53


def _double(value: float) -> bytes:
    if value != value:  # NaN: sort after every number
        return b"\xff" * 8
    bits = int.from_bytes(_pack_double(value), "big")
    # Flip the sign bit of positives, every bit of negatives: byte order then equals numeric order.
    return _pack_u64(bits ^ 0xFFFFFFFFFFFFFFFF if bits & _SIGN else bits | _SIGN)


_ZERO_KEY = TAG_NUMBER + _double(0.0) + b"\x80\x00"


def number_key(value: int | float) -> bytes:
    """Encode an int or float index value (a fast path of encode_key)."""
    # The nearest double orders numbers of any size; a 2-byte remainder (value minus that double, always within
    # +-2**10 for 64-bit ints) orders ints that round to the same double, and puts floats at remainder 0.
    if 0 < value <= EXACT:
        # The common case: positive and exact as a double. The bits of -value are value's bits with the sign bit
        # set, which is what _double does to positives, so one pack builds the key.
        return pack_exact(0x10, -value, 0x8000)
    if value == 0 and value.__class__ is int:
        return _ZERO_KEY
    if isinstance(value, float):
        return TAG_NUMBER + _double(value) + b"\x80\x00"
    if not -_SIGN <= value < _SIGN:
        raise InvalidIndexKey(f"integer {value} is too large for an index key (64 bits at most)")
    nearest = float(value)
    remainder = value - int(nearest)
    return TAG_NUMBER + _double(nearest) + (remainder + 0x8000).to_bytes(2, "big")


def _nested(value: Any) -> bytes:
    if isinstance(value, str):
        # Inside a tuple a string needs a terminator that sorts below any character: escape 0x00 first.
        return TAG_STR + value.encode().replace(b"\x00", b"\x00\xff") + b"\x00\x00"
    if isinstance(value, bytes):
        return TAG_BYTES + value.replace(b"\x00", b"\x00\xff") + b"\x00\x00"
    return encode_key(value)


def encode_key(value: Any) -> bytes:
    """Encode one index value as bytes whose order is the value's order."""
    if isinstance(value, str):
        return TAG_STR + value.encode()
    if isinstance(value, bool):
        return TAG_BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, (int, float)):
        return number_key(value)
    if isinstance(value, (tuple, list)):
        return TAG_TUPLE + b"".join(_nested(item) for item in value) + b"\x00"
    if isinstance(value, bytes):
        return TAG_BYTES + value
    if value is None:
        return TAG_NONE
    raise InvalidIndexKey(f"an index key cannot be a {type(value).__name__}")


def checked(key: bytes) -> bytes:
    """Reject keys LMDB cannot store."""
    if len(key) > MAX_KEY_SIZE:
        raise InvalidIndexKey(f"index key is {len(key)} bytes; LMDB allows {MAX_KEY_SIZE}")
    return key
