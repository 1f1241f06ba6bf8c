"""Ordered walks over a table or one of its indexes, between optional bounds, forward or backward.

Yields (index key, record key, stored value). For the table itself the index key is the record key.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lmdb

Entry = tuple[bytes, bytes, bytes]


def walk(
    txn: lmdb.Transaction[bytes],
    data_db: Any,
    index_db: Any | None,
    duplicates: bool,
    lower: bytes | None = None,
    upper: bytes | None = None,
    inclusive: bool = True,
    reverse: bool = False,
    after: tuple[bytes, bytes] | None = None,
) -> Iterator[Entry]:
    """Walk the table (`index_db` None) or an index in key order; `after` resumes past a (key, record) pair."""
    if index_db is None:
        cursor = txn.cursor(db=data_db)
        if after is not None:
            after = (after[0], after[0])
    else:
        cursor = txn.cursor(db=index_db)
    if reverse:
        entries = _backward(cursor, duplicates, upper, after)
    else:
        entries = _forward(cursor, duplicates, lower, after)
    get = txn.get
    for key, value in entries:
        if after is not None:
            record = key if index_db is None else value
            passed = (key, record) < after if reverse else (key, record) > after
            if not passed:
                continue
            after = None
        if lower is not None and (key < lower or (not inclusive and key == lower)):
            if reverse:
                return
            continue
        if upper is not None and (key > upper or (not inclusive and key == upper)):
            if reverse:
                continue
            return
        if index_db is None:
            yield key, key, value
        else:
            stored = get(value, db=data_db)
            if stored is not None:
                yield key, value, stored


def _forward(
    cursor: lmdb.Cursor[bytes], duplicates: bool, lower: bytes | None, after: tuple[bytes, bytes] | None
) -> Any:
    if after is not None:
        key, record = after
        if duplicates and cursor.set_key(key):
            # Jump straight to the record within this key's duplicates, or past the key when it has gone.
            if not cursor.set_range_dup(key, record) and not (cursor.set_key(key) and cursor.next_nodup()):
                return iter(())
        elif not cursor.set_range(key):
            return iter(())
    elif lower is not None:
        if not cursor.set_range(lower):
            return iter(())
    elif not cursor.first():
        return iter(())
    return cursor.iternext()


def _backward(
    cursor: lmdb.Cursor[bytes], duplicates: bool, upper: bytes | None, after: tuple[bytes, bytes] | None
) -> Any:
    start = after[0] if after is not None else upper
    if start is None:
        if not cursor.last():
            return iter(())
    elif cursor.set_range(start):
        if duplicates and cursor.key() == start:
            cursor.last_dup()
    elif not cursor.last():
        return iter(())
    return cursor.iterprev()


def walk_all(txn: lmdb.Transaction[bytes], data_db: Any) -> Iterator[tuple[bytes, bytes]]:
    """Every (record key, stored value) of a table in key order: the unbounded fast path."""
    cursor = txn.cursor(db=data_db)
    return cursor.iternext()
