"""The storage seam replication uses: the one documented door from `replication/` into a database's storage.

`Storage(db)` gives apply transactions (`transactions`: context managers, retried when the map must grow), marks,
snapshot markers, registrations and consistent snapshot reads (`read`); an `ApplyTransaction` applies a source's
ops (documents in runs, schema ops, the version rules of two-way pairs and aggregations) and bulk-loads stored pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import lmdb
import orjson

from pynndb.core import meta
from pynndb.core.bulk import Pairs, load_stored
from pynndb.core.codec import Compressor
from pynndb.core.entries import IndexKeys, document_fields
from pynndb.core.index import IndexDefinition
from pynndb.core.snapshot_read import SnapshotRead
from pynndb.errors import DatabaseError, MalformedEntry

if TYPE_CHECKING:
    from pynndb.core.database import Database
    from pynndb.core.table import Table

MAP_ATTEMPTS = 8  # as Database._run: the map doubles each time, so a few attempts cover any single write
READ_ATTEMPTS = 16

# A document of a source: (record key, its stored JSON bytes, the same decoded or the index keys its source computed
# for it, one list per index of the table: see index_layout).
StoredDocument = tuple[bytes, bytes, dict[str, Any] | IndexKeys]


class ApplyTransaction:
    """One write transaction applying a source's changes (it bypasses a read-only replica's refusal). Use it as a
    context manager from `Storage.transactions`: commit on a clean exit, abort on an exception; a full map aborts it,
    grows the map and has the loop run the body again. Ops left unjournaled at commit are journaled with the
    source as their origin and version 0 (a snapshot's writes)."""

    __slots__ = ("_db", "_t", "_source", "retry", "committed")

    def __init__(self, db: Database, source: str | None) -> None:
        self._db = db
        self._source = source
        self._t = db._begin(True, applying=True)
        self.retry = False
        self.committed = False

    def __enter__(self) -> ApplyTransaction:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> bool:
        t = self._t
        if kind is None:
            try:
                if t.ops:
                    self._db.replication.write_entry(t, self._source, 0)
                t.commit()  # (on a full map it grows the map, then raises)
            except lmdb.MapFullError:
                t.abort()
                self.retry = True
                return False
            self.committed = True
            return False
        t.abort()
        if issubclass(kind, lmdb.MapFullError):
            self._db._grow_map()
            self.retry = True
            return True  # the loop in Storage.transactions runs the body again
        return False

    # --- origin and journal --------------------------------------------------------------------------------------
    def set_origin(self, origin: bytes, version: int, source: bytes) -> None:
        """The version and origin database the next writes carry, and the source they came through."""
        t = self._t
        t.origin = origin
        t.version = version
        t.source = source

    def journal(self, origin: str, version: int) -> None:
        """Append the ops written since the last call as one journal entry that keeps its origin (a relayed change)."""
        t = self._t
        if t.ops:
            self._db.replication.write_entry(t, origin, version)

    def unjournaled(self) -> None:
        """Journal nothing this transaction writes (a one-way replica's snapshot; `restart_journal` follows it)."""
        self._t.ops = None

    def restart_journal(self) -> None:
        """The database changed without its journal (`unjournaled` transactions): start the journal again."""
        if self._db.replication.enabled:
            self._db.replication.restart(self._t, self._source)

    # --- marks ---------------------------------------------------------------------------------------------------
    def mark(self, source: str) -> int:
        return self._db.replication.mark(self._t.txn, source)

    def set_mark(self, source: str, seq: int) -> None:
        """Store the highest sequence of `source` applied (atomic with the ops it covers)."""
        self._db.replication.set_mark(self._t.txn, source, seq)

    def set_snapshot_marker(self, source: str, seq: int | None) -> None:
        """Record that a snapshot of `source` at `seq` is under way (None: it ended)."""
        self._db.replication.set_snapshot_marker(self._t.txn, source, seq)

    def set_registration(self, source: str, registration: dict[str, Any] | None) -> None:
        """Store (None: remove) what this database replicates of `source`; it changes the schema token, by which
        replicas of this database cache their mode."""
        value = None if registration is None else orjson.dumps(registration)
        self._put_meta(meta.keyed(meta.REGISTRATION, source), value)
        self._db._touch_schema(self._t.txn)

    def left_filter(self, source: str) -> list[str] | None:
        """The table filter a removed registration of `source` left behind (None: none)."""
        raw = self._t.txn.get(meta.keyed(meta.LEFT_FILTER, source), db=self._db._meta)
        return None if raw is None else cast(list[str], orjson.loads(raw))

    def set_left_filter(self, source: str, tables: list[str] | None) -> None:
        self._put_meta(meta.keyed(meta.LEFT_FILTER, source), None if tables is None else orjson.dumps(tables))

    def _put_meta(self, key: bytes, value: bytes | None) -> None:
        self._db.replication.meta_put(self._t.txn, key, value)  # (None deletes)

    # --- tables --------------------------------------------------------------------------------------------------
    def _table(self, name: str) -> Table:
        if name.__class__ is not str:
            raise MalformedEntry("table name must be a str")
        table = self._db._tables.get(name)
        if table is not None and table._dbi is not None:
            return table
        return self._db._create_table(self._t, name)

    def _existing(self, name: str) -> Table | None:
        table = self._db._tables.get(name)
        return table if table is not None and table._dbi is not None else None

    def table_names(self) -> list[str]:
        """The tables this database holds."""
        return [name for name, table in self._db._tables.items() if table._dbi is not None]

    def create_table(self, name: str) -> None:
        self._table(name)

    def drop_table(self, name: str) -> None:
        """Drop table `name` if it exists."""
        if self._db._table_definition(self._t.txn, name) is not None:
            self._db._drop_table(self._t, name)

    def empty_table(self, name: str) -> None:
        self._table(name)._empty(self._t)

    def ensure_index(self, table: str, index: str, stored: dict[str, Any]) -> None:
        """Give `table` index `index` with the stored definition `stored` (rebuilt if it differs, kept if not)."""
        if not isinstance(stored, dict):
            raise MalformedEntry("an index definition must be a JSON object")
        target = self._table(table)
        definition = IndexDefinition.from_json(index, stored)
        existing = target._indexes.get(index)
        if existing is not None and existing.definition.same_as(definition):
            return
        target._ensure(self._t, definition, force=existing is not None)

    def drop_index(self, table: str, index: str) -> None:
        target = self._table(table)
        if index in target._indexes:
            target._drop_index(self._t, index)

    def compression(self, table: str) -> Compressor | None:
        """What `table` compresses its records with (None: stored as JSON)."""
        return self._table(table)._compressor

    def set_compression(self, table: str, level: int | None, dictionary: bytes | None) -> None:
        if level is not None and (level.__class__ is not int or not 1 <= level <= 22):
            raise MalformedEntry("a compression level must be an int from 1 to 22, or null")
        self._table(table)._set_compression(self._t, level, dictionary)

    # --- documents -----------------------------------------------------------------------------------------------
    def put_documents(self, table: str, documents: list[StoredDocument]) -> None:
        """Write a source's documents, in order, as they are stored (a new key is inserted without re-encoding; a
        key the table holds is an update)."""
        target = self._table(table)
        t = self._t
        position = 0
        while (position := target._insert_stored(t, documents, position)) < len(documents):
            oid, stored, fields = documents[position]
            self._put(target, oid, fields if fields.__class__ is dict else document_fields(stored))
            position += 1

    def index_layout(self, table: str) -> tuple[str, int] | None:
        """The index token and the number of indexes of `table` here (None: no such table yet). A source's inserts
        whose entry carries their index keys under the same token may be put with those keys (`put_documents`)."""
        target = self._existing(table)
        return None if target is None else (target._index_token.decode(), len(target._index_list))

    @property
    def relays_verbatim(self) -> bool:
        """True when a source's entries of plain puts may be applied with `put_verbatim` (no per-document versions
        to keep: the database journals each entry as it came)."""
        return not self._db.replication.versioned

    def put_verbatim(self, table: str, documents: list[StoredDocument], entries: list[tuple[bytes, int]]) -> None:
        """Apply source entries (body, version) that are nothing but puts of `documents` into `table`, in order:
        the documents in one run, then each entry journaled as it came (`Replication.write_verbatim_many`), since this
        database's entry for a change it relays unchanged is the same bytes."""
        t = self._t
        journal = t.ops
        t.ops = None  # the documents are journaled by their entries' bodies, not op by op
        try:
            self.put_documents(table, documents)
        finally:
            t.ops = journal
        if journal is not None:
            self._db.replication.write_verbatim_many(t, entries)

    def put(self, table: str, oid: bytes, fields: dict[str, Any] | None) -> None:
        """Write (fields None: delete) one document; deleting an absent one leaves a tombstone when versioned."""
        self._put(self._table(table), oid, fields)

    def _put(self, table: Table, oid: bytes, fields: dict[str, Any] | None) -> None:
        t = self._t
        old = table._read(t.txn, oid)
        if fields is None:
            if old is not None:
                table._write(t, oid, None, old)
            else:
                self._db.replication.record_version(t, table.name, oid, True)
        else:
            table._write(t, oid, fields, old)

    def is_newer(self, table: str, oid: bytes, version: int, origin: bytes) -> bool:
        """Whether a change at (version, origin) wins over what this database holds of the document (last writer
        wins; a change older than the table's last emptying loses)."""
        replication = self._db.replication
        txn = self._t.txn
        if (version, origin) <= replication.emptied(txn, table):
            return False
        local = replication.version_of(txn, table, oid)
        return local is None or (version, origin) > (local.clock, local.origin)

    def empty_older(self, table: str, version: int, origin: bytes, drop: bool = False) -> None:
        """Delete the documents of `table` older than (version, origin), keep the newer ones, remember the emptying;
        with `drop`, drop the table when nothing newer is left (a two-way ``empty`` or ``drop``)."""
        replication = self._db.replication
        t = self._t
        target = self._existing(table) if drop else self._table(table)
        if target is None:
            replication.record_emptied(t, table)
            return
        older = []
        for oid, _stored in t.txn.cursor(db=target._dbi):
            local = replication.version_of(t.txn, table, oid)
            if local is None or (local.clock, local.origin) < (version, origin):
                older.append(oid)
        self._delete_all(target, older)
        replication.record_emptied(t, table)
        if drop and not t.txn.stat(target._dbi)["entries"]:
            self._db._drop_table(t, table)
            replication.record_emptied(t, table)

    def remove_source_documents(self, table: str, source: bytes) -> None:
        """Delete the documents of `table` that came from `source` (an aggregation's snapshot, drop or empty)."""
        target = self._existing(table)
        if target is None:
            return
        mine = [oid for oid, version in self._db.replication.versions(self._t.txn, table) if version.source == source]
        self._delete_all(target, mine)

    def _delete_all(self, table: Table, oids: list[bytes]) -> None:
        t = self._t
        for oid in oids:
            old = table._read(t.txn, oid)
            if old is not None:
                table._write(t, oid, None, old)

    def load_stored(self, table: str, part: Pairs, source: bytes, codec: Compressor | None) -> int:
        """Bulk-load a batch of a source's stored pairs (see core/bulk.py); returns the documents written."""
        return load_stored(self._t, self._table(table), part, source, codec)

    def attribute_documents(self, source: bytes) -> None:
        """Version every unversioned document as coming from `source`, and keep versions from now on (a database
        becoming an aggregation must know each document's source)."""
        db = self._db
        t = self._t
        replication = db.replication
        self.set_origin(source, 0, source)
        replication.versioned = True  # for this transaction's record_version calls; persisted with it
        try:
            for table in list(db._tables.values()):
                if table._dbi is None:
                    continue
                for oid, _stored in t.txn.cursor(db=table._dbi):
                    if replication.version_of(t.txn, table.name, oid) is None:
                        replication.record_version(t, table.name, oid, False)
            t.txn.put(meta.VERSIONED, b"1", db=db._meta)
            db._touch_schema(t.txn)
        except BaseException:
            replication.versioned = False
            raise


class Storage:
    """The storage of database `db` as replication sees it (cheap to make; holds no transaction)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.uuid = db.replication.uuid

    @property
    def path(self) -> str:
        return self._db.path

    def schema_token(self) -> bytes | None:
        """The schema token of the definitions this process holds: it changes with every schema or registration
        change (a cache key for what is derived from them)."""
        return self._db._schema_token

    def refresh(self) -> None:
        """Pick up schema and registration changes made by other processes."""
        self._db._refresh()

    def transactions(self, source: str | None = None) -> Iterator[ApplyTransaction]:
        """Apply transactions for ``for tx in storage.transactions(source): with tx: ...``: the body runs again in
        a new transaction when the map had to grow (so it must not change anything outside the transaction)."""
        for _attempt in range(MAP_ATTEMPTS):
            tx = ApplyTransaction(self._db, source)
            yield tx
            if not tx.retry:
                return
        raise DatabaseError(f"{self._db.path}: the map could not grow enough for this write")

    def mark(self, source: str) -> int:
        """The committed mark of `source` (0: nothing applied)."""
        with self._db._env.begin() as txn:
            return self._db.replication.mark(txn, source)

    def snapshot_marker(self, source: str) -> int | None:
        """The sequence of a snapshot of `source` under way (interrupted, or yet to take), or None."""
        with self._db._env.begin() as txn:
            return self._db.replication.snapshot_marker(txn, source)

    def registrations(self) -> dict[str, dict[str, Any]]:
        """Source UUID -> its stored registration ({'mode', 'tables'?}), for every source this database replicates."""
        found: dict[str, dict[str, Any]] = {}
        prefix = meta.REGISTRATION
        with self._db._env.begin() as txn:
            cursor = txn.cursor(db=self._db._meta)
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    found[bytes(key[len(prefix) :]).decode()] = orjson.loads(value)
        return found

    @contextmanager
    def read(self) -> Iterator[SnapshotRead]:
        """A consistent read of the whole database: one read transaction whose table and index handles match the
        schema it sees (a source's snapshot, a digest)."""
        db = self._db
        for _attempt in range(READ_ATTEMPTS):
            db._reload_schema()
            txn = db._env.begin(buffers=False)
            if txn.get(meta.SCHEMA, db=db._meta) == db._schema_token:
                break
            txn.abort()  # the schema changed since the reload: again
        else:
            raise DatabaseError(f"{db.path}: the schema keeps changing; no consistent snapshot")
        try:
            yield SnapshotRead(db, txn)
        finally:
            txn.abort()
