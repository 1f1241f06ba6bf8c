"""Order-preserving index keys: ints (including negative and large), floats, mixed numbers, tuples."""

from __future__ import annotations

import struct

import pytest

from pynndb import Database
from pynndb.core.keys import encode_key, number_key
from pynndb.errors import InvalidIndexKey


def stored_order(db: Database, values: list[object]) -> list[object]:
    table = db.table("keys")
    table.ensure("by_v", "{v}", duplicates=True)
    for value in values:
        table.append({"v": value})
    return [d["v"] for d in table.find("by_v")]


def test_ints_including_negative(db: Database) -> None:
    values = [5, -1, 0, 1000000, -1000000, 42, -42, 2**40, -(2**40)]
    assert stored_order(db, values) == sorted(values)


def test_floats_and_mixed_numbers(db: Database) -> None:
    values = [1.5, -0.25, 3, 2, 1e300, -1e300, 0.1, 1, -7, 2**40 + 0.5, -(2**40) - 0.5]
    assert stored_order(db, values) == sorted(values)
    infinite = [float("inf"), 1e308, -1e308, float("-inf"), 0]
    assert sorted(infinite, key=encode_key) == sorted(infinite)


def test_equal_int_and_float_share_a_key() -> None:
    assert encode_key(3) == encode_key(3.0)
    assert encode_key(-17) == encode_key(-17.0)


def test_ints_around_two_to_the_53() -> None:
    edge = 2**53
    values = [edge - 1, edge, edge + 1, edge + 2, -edge + 1, -edge, -edge - 1, -edge - 2, 2**63 - 1, -(2**63)]
    assert sorted(values, key=encode_key) == sorted(values)


def test_big_ints_and_floats_mixed() -> None:
    values = [2**60 - 1, 2.0**60, 2**60 + 1, -(2**60) - 1, -(2.0**60), -(2**60) + 1]
    assert sorted(values, key=encode_key) == sorted(values)


def test_strings_and_tuples(db: Database) -> None:
    values = [("b", 1), ("a", 2), ("a", 10), ("a", -3), ("", 0), ("a\x00", 0), ("ab", 0)]
    got = stored_order(db, [list(v) for v in values])
    assert [tuple(v) for v in got] == sorted(values)


def test_out_of_range_and_unsupported_keys() -> None:
    with pytest.raises(InvalidIndexKey):
        encode_key(2**64)
    with pytest.raises(InvalidIndexKey):
        encode_key({"a": 1})


def reference_number_key(value: int | float) -> bytes:
    """The general encoding (nearest double plus remainder) without the fast path for exact positives."""
    nearest = float(value)
    remainder = 0 if isinstance(value, float) else value - int(nearest)
    bits = int.from_bytes(struct.pack(">d", nearest), "big")
    ordered = bits ^ (2**64 - 1) if bits >> 63 else bits | 1 << 63
    return b"\x10" + ordered.to_bytes(8, "big") + (remainder + 0x8000).to_bytes(2, "big")


@pytest.mark.parametrize(
    "value", [1, 2, 255, 12345, 2**53 - 1, 2**53, 2**53 + 1, 2**62, 0, -1, 0.5, 1e-300, 3.75, 2.0**53, 1e300, -2.5]
)
def test_the_fast_number_path_matches_the_general_encoding(value: int | float) -> None:
    assert number_key(value) == reference_number_key(value) == encode_key(value)
