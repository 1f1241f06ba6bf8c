"""`Table`: records of one table and its secondary indexes. Every write goes through one private write path.

Each public method takes an optional ``txn=``; without one, the call runs atomically in a transaction of its own.
The reads come from `TableReads` (core/reads.py), the write path from `TableWrites` (core/writes.py), indexes and
compression from `TableSchema` (core/table_schema.py); this module holds the public writes and the change feed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import lmdb
import orjson

from pynndb.core import columns, ops
from pynndb.core.changes import Change, follow
from pynndb.core.doc import Doc, _new_doc, make_doc
from pynndb.core.ids import new_oid, new_oids, normalise_key
from pynndb.core.meta import SCHEMA
from pynndb.core.reads import TableReads
from pynndb.core.table_schema import Index, check_name
from pynndb.core.transaction import Transaction
from pynndb.core.writes import BULK_MIN, TableWrites
from pynndb.errors import DocumentDoesNotExist

if TYPE_CHECKING:
    from pynndb.core.database import Database

__all__ = ["Index", "Table", "check_name"]


class Table(TableWrites, TableReads):
    """A table of `Doc` records. Get one from `Database.table(name)`."""

    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self._env = db._env
        self.name = name
        self._dbi: Any = None
        self._set_indexes({})
        self._compressor = None
        self._name_json = orjson.dumps(name)
        self._pending = False  # created by a transaction that has not committed yet

    # --- writes -------------------------------------------------------------------------------------------------
    def append(self, doc: Doc | dict[str, Any], txn: Transaction | None = None) -> Doc:
        """Add a new record; it gets a new time-ordered key unless the Doc carries one (which must be unused)."""
        if txn is not None:
            if txn.__class__ is Transaction and txn.db is self._db and txn.active and txn.write:
                # The bulk path: a caller's transaction, checked inline; a dict, where nothing is journaled, without
                # the layers of _append and _insert_one (what they would do, in the same order).
                if doc.__class__ is dict and txn.ops is None and txn.origin is None and self._dbi is not None:
                    oid = new_oid()
                    self._put_new(txn.txn, oid, doc)
                    result = _new_doc()
                    result._data = doc
                    result._oid = oid
                    return result
                return self._append(txn, doc)
            return self._db._run(txn, True, self._append, doc)
        db = self._db
        if db._writer is not None:  # maybe this thread's open transaction: _run joins it
            return db._run(None, True, self._append, doc)
        if db._plain_writes and doc.__class__ is dict and self._dbi is not None:
            return self._append_plain(db, doc)
        # The most frequent call of all: its own transaction without going through _run (same semantics).
        t = db._begin(True)
        try:
            result = self._append(t, doc)
        except lmdb.MapFullError:
            t.abort()
            return self._append_again(db, doc, grow=True)
        except BaseException:
            t.abort()
            raise
        written = t.txn.id()  # (a record was put: this commit changes something, and takes this number)
        try:
            t.commit()
        except lmdb.MapFullError:
            return self._append_again(db, doc)  # (Transaction.commit grew the map)
        db._known_after = written
        return result

    def _append_again(self, db: Database, doc: Doc | dict[str, Any], grow: bool = False) -> Doc:
        """The append the general way (`_run`: a `Transaction` of its own, begun again while the map grows), where
        one of `append`'s own paths gave up; `grow`: it gave up on a full map, which has not grown yet."""
        if grow:
            db._grow_map()
        return db._run(None, True, self._append, doc)

    def _append_plain(self, db: Database, new: dict[str, Any]) -> Doc:
        """`append` of a dict where `Database._plain_writes` allows: a bare LMDB transaction, the journal entry (if
        the database keeps a journal) written straight from the document's bytes, none of what `Transaction` gathers,
        and the document's index keys computed before it begins (so no code of the application, such as an index
        function, runs while this process holds LMDB's writer lock). Takes the general path whenever the schema (or
        a replication setting, which is stored as a schema change) may have moved since the keys were computed."""
        token = db._schema_token  # (first: a schema change in this process replaces the index list, then the token)
        journal = db._plain_journal
        indexes = self._index_list
        additions = []
        for index in indexes:
            additions.append((index, index.keys(new)))
        try:
            txn = db._env.begin(None, None, True)  # (positional: py-lmdb parses them faster)
        except lmdb.MapResizedError:
            return self._append_again(db, new)  # (_begin adopts the new map size)
        written = txn.id()
        # See Database._begin for the `_known_after` skip; the identity tests see a schema change made in this process
        # since the keys were computed (committed, or still open in another thread).
        if (
            self._index_list is not indexes
            or db._schema_token is not token
            or (written != db._known_after + 1 and txn.get(SCHEMA, None, db._meta) != token)
        ):
            txn.abort()
            return self._append_again(db, new)
        oid = new_oid()
        try:
            raw = self._put_new(txn, oid, new, additions)
            if journal is not None:
                entry = journal.write_insert(txn, written, self._name_json, oid, raw)
        except lmdb.MapFullError:
            txn.abort()
            return self._append_again(db, new, grow=True)
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
        except lmdb.MapFullError:
            return self._append_again(db, new, grow=True)
        db._known_after = written
        if journal is not None:
            journal.last_insert = entry
            db._bell.ring()  # (as Transaction.commit: wake every process waiting on this database)
        result = _new_doc()
        result._data = new
        result._oid = oid
        return result

    def _append(self, t: Transaction, doc: Doc | dict[str, Any]) -> Doc:
        if self._dbi is None:
            self._live()
        if doc.__class__ is dict:
            oid = new_oid()
            self._insert_one(t, oid, doc)
            result = _new_doc()
            result._data = doc
            result._oid = oid
            return result
        data, given = self._unwrap(doc)
        oid = new_oid() if given is None else given
        self._write(t, oid, data, None)
        if isinstance(doc, Doc):
            doc._oid = oid
            return doc
        return make_doc(data, oid)

    def append_many(self, docs: Iterable[Doc | dict[str, Any]], txn: Transaction | None = None) -> list[Doc]:
        """Append many records in one transaction (the bulk-load path)."""
        return self._db._run(txn, True, self._append_many, list(docs))

    def _append_many(self, t: Transaction, docs: list[Doc | dict[str, Any]]) -> list[Doc]:
        self._live()
        # Many new containers at once: the cyclic collector would rescan them all while none can form a cycle.
        collecting = gc.isenabled()
        gc.disable()
        try:
            records: list[tuple[bytes, dict[str, Any]]] = []
            # One new id per document (one clock read); a Doc that carries its key keeps it (its id goes unused).
            for doc, fresh in zip(docs, new_oids(len(docs)), strict=True):
                if doc.__class__ is dict:
                    records.append((fresh, doc))
                else:
                    data, oid = self._unwrap(doc)
                    records.append((fresh if oid is None else oid, data))
            if len(records) < BULK_MIN or not columns.insert_many(self, t, records):
                self._insert(t, records)
            results: list[Doc] = []
            for doc, (oid, data) in zip(docs, records, strict=True):
                if doc.__class__ is not dict and isinstance(doc, Doc):  # (Doc's isinstance goes through abc)
                    doc._oid = oid
                    results.append(doc)
                else:
                    result = _new_doc()
                    result._data = data
                    result._oid = oid
                    results.append(result)
            return results
        finally:
            if collecting:
                gc.enable()

    def save(self, doc: Doc, txn: Transaction | None = None) -> Doc:
        """Replace an existing record with the Doc's fields; indexes follow."""
        return self._db._run(txn, True, self._save, doc)

    def _save(self, t: Transaction, doc: Doc) -> Doc:
        self._live()
        data, oid = self._unwrap(doc)
        if oid is None:
            raise DocumentDoesNotExist("save needs a Doc that was read from (or appended to) the table")
        old = self._read(t.txn, oid)
        if old is None:
            raise DocumentDoesNotExist(f"table {self.name!r} has no record {oid.decode()}")
        self._write(t, oid, data, old)
        return doc if isinstance(doc, Doc) else make_doc(data, oid)

    def delete(self, doc_or_key: Doc | str | bytes | list[Any], txn: Transaction | None = None) -> None:
        """Delete a record (by Doc or key) or a list of them; a missing key raises and deletes nothing."""
        targets = doc_or_key if isinstance(doc_or_key, (list, tuple)) else [doc_or_key]
        oids = [target._oid if isinstance(target, Doc) else normalise_key(target) for target in targets]
        if any(oid is None for oid in oids):
            raise DocumentDoesNotExist("cannot delete a Doc that has no key")
        self._db._run(txn, True, self._delete, oids)

    def _delete(self, t: Transaction, oids: list[bytes]) -> None:
        self._live()
        olds = []
        for oid in oids:  # check every key first, so a bad list deletes nothing even inside a caller's txn
            old = self._read(t.txn, oid)
            if old is None:
                raise DocumentDoesNotExist(f"table {self.name!r} has no record {oid.decode()}")
            olds.append(old)
        for oid, old in zip(oids, olds, strict=True):
            self._write(t, oid, None, old)

    def empty(self, txn: Transaction | None = None) -> None:
        """Remove every record (indexes stay defined, now empty)."""
        self._db._run(txn, True, self._empty)

    def _empty(self, t: Transaction) -> None:
        t.txn.drop(self._live(), delete=False)
        for index in self._index_list:
            t.txn.drop(index.dbi, delete=False)
        if t.ops is not None:
            t.ops.append(ops.empty(self.name))
            self._db.replication.drop_versions(t, self.name)
        self._db.replication.record_emptied(t, self.name)

    # --- change feed ------------------------------------------------------------------------------------------
    def watch(self, since: int | tuple[int, int] | None = None, timeout: float | None = None) -> Iterator[Change]:
        """The changes of this table, as `Database.changes(since, tables=[name], timeout)` gives them."""
        return follow(self._db, since, [self.name], timeout)

    def __repr__(self) -> str:
        return f"<Table {self.name!r} of {self._db.path}>"
