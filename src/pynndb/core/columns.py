"""A replica's inserts a column at a time: each index's keys for all records of a call (from their fields, or as
their source computed them), then one `putmulti` per sub-database (py-lmdb's loop in C, not a Python call per put).

Taken only where no put can fail: the record keys are new (they ascend, and sort after every key the table holds)
and every index of the table allows duplicates. Anything else (a unique index, keys that do not ascend past the
table's last, an index key that cannot be made) and the caller takes its record-by-record path, which checks every
put, stops at the record that fails and says why. Nothing is written before that choice.

Not for an application's writes: there each document is encoded and indexed once, in one pass while it is in the
cache; passes a column at a time over documents made long before (a bulk load) cost more than the puts they save.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain, islice
from operator import ge, itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import lmdb

if TYPE_CHECKING:
    from pynndb.core.table_schema import Index

_first = itemgetter(0)


class Columns(NamedTuple):
    """A call's records, column by column: record keys, stored values, and for each index each record's keys."""

    oids: list[bytes]
    values: list[bytes]
    keys: list[list[list[bytes]]]


def ascending(txn: lmdb.Transaction[bytes], dbi: Any, oids: Sequence[bytes]) -> bool:
    """Whether `oids` ascend strictly and all sort after every key of the table `dbi`: then none is there yet, and
    LMDB appends them in order (MDB_APPEND). True of a source's inserts arriving at its replica (ids are
    time-ordered) unless several processes write to the source in the same second."""
    if not oids or any(map(ge, oids, islice(oids, 1, None))):
        return False
    cursor = txn.cursor(dbi)
    return not cursor.last() or cursor.key() < oids[0]


def columns(
    txn: lmdb.Transaction[bytes],
    dbi: Any,
    indexes: Sequence[Index],
    records: Sequence[tuple[bytes, bytes, Any]],
    compress: Callable[[bytes], bytes] | None,
) -> Columns | None:
    """The columns of new `records` (key, stored JSON, its fields or the index keys its source computed, one list
    per index); None when the record-by-record path must take them (nothing is written here)."""
    for index in indexes:
        if not index.duplicates:
            return None  # a unique index: each key's put is its check
    oids = list(map(_first, records))
    if not ascending(txn, dbi, oids):
        return None
    documents = list(map(itemgetter(2), records))
    width = len(indexes)
    try:
        if all(document.__class__ is not dict and len(document) == width for document in documents):
            keys = [list(map(itemgetter(position), documents)) for position in range(width)]  # carried
        else:
            keys = [_index_keys(index, position, documents) for position, index in enumerate(indexes)]
    except Exception:  # noqa: BLE001  (whatever failed, the record-by-record path meets it again, writes what
        return None  # comes before it and raises it: a key function may run twice for the record that fails)
    raws = list(map(itemgetter(1), records))
    return Columns(oids, raws if compress is None else list(map(compress, raws)), keys)


def flat_keys(computed: Columns) -> list[list[bytes]]:
    """Each record's keys index by index, records in order (as a journal entry carries them)."""
    if len(computed.keys) == 1:
        return computed.keys[0]
    return list(chain.from_iterable(zip(*computed.keys, strict=True)))


def _index_keys(index: Index, position: int, documents: Sequence[Any]) -> list[list[bytes]]:
    """Each record's keys for one index: computed from its fields, or as its source computed them."""
    if all(document.__class__ is dict for document in documents):
        return list(map(index.keys, documents))
    return [index.keys(document) if document.__class__ is dict else document[position] for document in documents]


def write(txn: lmdb.Transaction[bytes], dbi: Any, indexes: Sequence[Index], computed: Columns) -> None:
    """Put the records (appended in key order) and every index's keys: one `putmulti` for each."""
    oids = computed.oids
    _consumed, added = txn.cursor(dbi).putmulti(zip(oids, computed.values, strict=True), False, False, True)
    if added != len(oids):  # (cannot happen after `ascending`: a broken invariant must not pass silently)
        raise AssertionError(f"{len(oids) - added} of {len(oids)} new records were refused")
    for index, keys in zip(indexes, computed.keys, strict=True):
        if set(map(len, keys)) == {1}:  # one key a record, the common case: the pairs are made in C
            pairs: Any = zip(map(_first, keys), oids, strict=True)
        else:
            pairs = [(key, oid) for record_keys, oid in zip(keys, oids, strict=True) for key in record_keys]
        txn.cursor(index.dbi).putmulti(pairs, True, True)
