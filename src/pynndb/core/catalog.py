"""The catalog of a `Database`: its tables' definitions in ``__meta__``, the schema token, and opening, creating
and dropping tables.

Every schema change rewrites ``schema`` in ``__meta__``; a write transaction that sees a new token reloads the
definitions, so several processes stay consistent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any, cast

import lmdb
import orjson

from pynndb.core import meta, ops
from pynndb.core.config import DatabaseConfig
from pynndb.core.journal import Replication
from pynndb.core.table import Table, check_name
from pynndb.core.transaction import Transaction
from pynndb.errors import DatabaseClosed, NoSuchTable

if TYPE_CHECKING:
    from pynndb.core.database import Database

TABLE_PREFIX = meta.TABLE


class Catalog:
    """The table definitions of `Database` (a base of it, which opens the environment and sets up the state below)."""

    config: DatabaseConfig
    path: str
    replication: Replication
    _env: lmdb.Environment
    _meta: Any
    _lock: threading.RLock
    _tables: dict[str, Table]
    _schema_token: bytes | None
    _pending_token: bytes
    _closed: bool
    _writer: Transaction | None
    _writer_owner: int

    if TYPE_CHECKING:

        def _run(self, txn: Transaction | None, write: bool, work: Callable[..., Any], *args: Any) -> Any: ...

    # --- schema ---------------------------------------------------------------------------------------------
    def _touch_schema(self, txn: lmdb.Transaction[bytes]) -> bytes:
        token = os.urandom(8)
        txn.put(meta.SCHEMA, token, db=self._meta)
        return token

    def _schema_changed(self, t: Transaction) -> None:
        t.schema_changed = True
        self._pending_token = self._touch_schema(t.txn)

    def _schema_committed(self) -> None:
        self._schema_token = getattr(self, "_pending_token", None)
        for table in self._tables.values():
            table._pending = False

    def _reload_schema(self) -> None:
        if self._closed:
            raise DatabaseClosed(f"database {self.path} is closed")
        txn = self._env.begin(write=not self.config.readonly)
        try:
            self._load_schema(txn, txn.get(meta.SCHEMA, db=self._meta))
        except BaseException:
            txn.abort()
            raise
        txn.commit()

    def _refresh(self) -> None:
        """Reload definitions if another process changed them (a cheap check first)."""
        if self._closed:
            raise DatabaseClosed(f"database {self.path} is closed")
        with self._env.begin() as txn:
            token = txn.get(meta.SCHEMA, db=self._meta)
        if token != self._schema_token:
            self._reload_schema()

    def _load_schema(self, txn: lmdb.Transaction[bytes], token: bytes | None) -> None:
        with self._lock:
            self.replication._refresh(txn)
            found: dict[str, dict[str, Any]] = {}
            cursor = txn.cursor(db=self._meta)
            if cursor.set_range(TABLE_PREFIX):
                for key, value in cursor:
                    if not key.startswith(TABLE_PREFIX):
                        break
                    found[key[len(TABLE_PREFIX) :].decode()] = orjson.loads(value)
            for name, table in list(self._tables.items()):
                if name not in found:
                    table._detach()
            for name, definition in found.items():
                known = self._tables.get(name)
                if known is None:
                    known = self._tables[name] = self._new_table(name)
                known._attach(txn, definition)
                known._pending = False
            self._schema_token = token

    def _new_table(self, name: str) -> Table:
        return Table(cast("Database", self), name)  # (a Catalog is always the Database it is a base of)

    def _table_definition(self, txn: lmdb.Transaction[bytes], name: str) -> dict[str, Any] | None:
        raw = txn.get(TABLE_PREFIX + name.encode(), db=self._meta)
        return None if raw is None else orjson.loads(raw)

    def _save_table_definition(self, t: Transaction, name: str, definition: dict[str, Any] | None) -> None:
        key = TABLE_PREFIX + name.encode()
        if definition is None:
            t.txn.delete(key, db=self._meta)
        else:
            t.txn.put(key, orjson.dumps(definition), db=self._meta)
        self._schema_changed(t)

    # --- tables ---------------------------------------------------------------------------------------------
    def table(self, name: str, txn: Transaction | None = None) -> Table:
        """Open the table `name`, creating it if it does not exist.

        A table that exists on disk is opened without a write, whichever process made it. On a read-only replica a
        table that has not arrived yet is returned all the same: it reads as empty and fills as data arrives."""
        check_name(name, "table")
        table = self._tables.get(name)
        if table is not None and table._dbi is not None and not table._pending:
            return table
        if txn is None and not (self._writer is not None and self._writer_owner == get_ident()):
            self._refresh()  # another process may have made it (or made this database a replica)
            table = self._tables.get(name)
            if table is not None and table._dbi is not None and not table._pending:
                return table
            if self.replication.read_only:
                with self._lock:
                    return self._tables.setdefault(name, self._new_table(name))
        return self._run(txn, True, self._create_table, name)

    def _create_table(self, t: Transaction, name: str) -> Table:
        table = self._tables.get(name)
        if table is not None and table._dbi is not None:
            return table
        if table is None:
            table = self._tables[name] = self._new_table(name)
        t.schema_changed = True
        table._pending = True  # other threads must not use its handle before this transaction commits
        definition: dict[str, Any] = {"indexes": {}, "compression": None}
        self._save_table_definition(t, name, definition)
        table._attach(t.txn, definition, create=True)
        if t.ops is not None:
            t.ops.append(ops.create(name))
        return table

    def tables(self, all: bool = False) -> list[str]:  # noqa: A002
        """The names of the tables in this database."""
        self._refresh()
        return sorted(name for name, table in self._tables.items() if table._dbi is not None and not table._pending)

    def __contains__(self, name: object) -> bool:
        return name in self.tables()

    def drop(self, name: str, txn: Transaction | None = None) -> None:
        """Drop table `name` with its indexes and records (it need not be open)."""
        check_name(name, "table")
        self._run(txn, True, self._drop_table, name)

    def _drop_table(self, t: Transaction, name: str) -> None:
        definition = self._table_definition(t.txn, name)
        if definition is None:
            raise NoSuchTable(f"no table {name!r} in {self.path}")
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = self._new_table(name)
        t.schema_changed = True  # from here an abort must reload: LMDB closes handles dropped in it
        if table._dbi is None:
            table._attach(t.txn, definition)
        table._drop_storage(t)
        self._save_table_definition(t, name, None)
        if t.ops is not None:
            t.ops.append(ops.drop(name))
            self.replication.drop_versions(t, name)
        self.replication.record_emptied(t, name)  # (versioned databases: older changes must not return)

    def __getitem__(self, name: str) -> Table:
        self._refresh()
        table = self._tables.get(name)
        if table is None or table._dbi is None:
            raise NoSuchTable(f"no table {name!r} in {self.path}")
        return table
