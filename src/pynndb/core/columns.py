"""Inserts a column at a time: the puts of many new records are gathered and written with one `putmulti` per
sub-database (py-lmdb's loop in C, not a Python call per put), COLUMN_BATCH records at a time.

Taken only where no put can fail: the record keys are new (they ascend, and sort after every key the table holds)
and every index of the table allows duplicates. Anything else (a unique index, keys that do not ascend past the
table's last, an index key that cannot be made) and the caller takes its record-by-record path (`TableWrites`),
which checks every put, stops at the record that fails and says why. Nothing is written before that choice.

- `insert_many`: an application's `append_many`. Each document is still encoded and indexed in one pass while it
  is in the cache (passes a column at a time over documents made long before cost more than the puts they save);
  only the puts are gathered. Journaled as record by record (the same ops, the same carried keys).
- `insert_stored`: a replica's run of a source's documents (stored bytes, and their fields or the index keys the
  source computed), index keys taken a column at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain, islice
from operator import ge, itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import lmdb

from pynndb.core.codec import encode_new
from pynndb.core.entries import KEYED_MIN

if TYPE_CHECKING:
    from pynndb.core.table_schema import Index
    from pynndb.core.transaction import Transaction
    from pynndb.core.writes import TableWrites

COLUMN_BATCH = 1024  # records gathered before they are written: a batch's buffers are then used again, so that a
# bulk load of a million documents does not fault in fresh memory for all of them (~2 µs a document on a VM)
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


def appendable(txn: lmdb.Transaction[bytes], dbi: Any, indexes: Sequence[Index], oids: Sequence[bytes]) -> bool:
    """Whether new records with keys `oids` can go a column at a time: no put can clash (every index allows
    duplicates: a unique index's put is its own check) and the keys are new (`ascending`)."""
    for index in indexes:
        if not index.duplicates:
            return False
    return ascending(txn, dbi, oids)


def columns(
    txn: lmdb.Transaction[bytes],
    dbi: Any,
    indexes: Sequence[Index],
    records: Sequence[tuple[bytes, bytes, Any]],
    compress: Callable[[bytes], bytes] | None,
) -> Columns | None:
    """The columns of new `records` (key, stored JSON, its fields or the index keys its source computed, one list
    per index); None when the record-by-record path must take them (nothing is written here)."""
    oids = list(map(_first, records))
    if not appendable(txn, dbi, indexes, oids):
        return None
    documents = list(map(itemgetter(2), records))
    width = len(indexes)
    try:
        if all(document.__class__ is dict for document in documents):
            keys = [list(map(index.keys, documents)) for index in indexes]
        elif all(document.__class__ is not dict and len(document) == width for document in documents):
            keys = [list(map(itemgetter(position), documents)) for position in range(width)]  # all carried
        else:  # some carried, some computed
            keys = [
                [index.keys(document) if document.__class__ is dict else document[position] for document in documents]
                for position, index in enumerate(indexes)
            ]
    except Exception:  # noqa: BLE001  (whatever failed, the record-by-record path meets it again, writes what
        return None  # comes before it and raises it: a key function may run twice for the record that fails)
    raws = list(map(itemgetter(1), records))
    return Columns(oids, raws if compress is None else list(map(compress, raws)), keys)


def flat_keys(computed: Columns) -> list[list[bytes]]:
    """Each record's keys index by index, records in order (as a journal entry carries them)."""
    if len(computed.keys) == 1:
        return computed.keys[0]
    return list(chain.from_iterable(zip(*computed.keys, strict=True)))


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


# --- an application's append_many ---------------------------------------------------------------------------------
def insert_many(table: TableWrites, t: Transaction, records: Sequence[tuple[bytes, dict[str, Any]]]) -> bool:
    """`_insert` of a call's records (BULK_MIN or more) a column at a time where no put can clash; False with nothing
    done otherwise. A record that fails ends the call after the records before it are written (and journaled), as
    record by record."""
    if (t.ops is None and t.origin is not None) or (t.ops is not None and table._db.replication.versioned):
        return False  # each record's version is journaled on its own (`_journal_write`)
    keyed = t.ops is not None and len(records) >= KEYED_MIN
    oids = list(map(_first, records))
    if not appendable(t.txn, table._dbi, table._index_list, oids):
        return False
    for start in range(0, len(records), COLUMN_BATCH):
        end = start + COLUMN_BATCH
        _insert_batch(table, t, records[start:end], oids[start:end], keyed)
    return True


def _insert_batch(
    table: TableWrites, t: Transaction, records: Sequence[tuple[bytes, dict[str, Any]]], oids: list[bytes], keyed: bool
) -> None:
    """Encode and index `records` (one pass), then put them a column at a time and journal them."""
    indexes = table._index_list
    raws: list[bytes] = []
    keys: list[list[list[bytes]]] = [[] for _index in indexes]
    single = indexes[0].keys if len(indexes) == 1 else None
    column = keys[0] if keys else []
    makers = [index.keys for index in indexes]
    try:
        for _oid, new in records:
            raw = encode_new(new)
            if single is not None:
                column.append(single(new))  # (a record is gathered once all of it is made)
            elif makers:
                made = [make(new) for make in makers]
                for each, record_keys in zip(keys, made, strict=True):
                    each.append(record_keys)
            raws.append(raw)
    finally:
        if raws:
            compressor = table._compressor
            gathered = Columns(
                oids[: len(raws)], raws if compressor is None else list(map(compressor.compress, raws)), keys
            )
            write(t.txn, table._dbi, indexes, gathered)
            if t.ops is not None:
                t.documents += b"".join(raws)
                table._journal_inserts(t, gathered.oids, list(map(len, raws)), flat_keys(gathered) if keyed else None)


# --- a replica's run ------------------------------------------------------------------------------------------------
def insert_stored(table: TableWrites, t: Transaction, records: Sequence[tuple[bytes, bytes, Any]], start: int) -> int:
    """`_insert_stored` a column at a time from `start`, COLUMN_BATCH records at a time, while nothing can clash;
    the position of the first record not written (`start`: none was)."""
    compress = None if table._compressor is None else table._compressor.compress
    indexes = table._index_list
    while start < len(records):
        computed = columns(t.txn, table._dbi, indexes, records[start : start + COLUMN_BATCH], compress)
        if computed is None:
            break  # the record-by-record path takes the rest
        write(t.txn, table._dbi, indexes, computed)
        start += len(computed.oids)
    return start
