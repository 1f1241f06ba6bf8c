"""`Database`: one LMDB environment holding tables, their indexes, metadata and (optionally) a change journal.

Sub-databases: ``t/<table>`` records, ``i/<table>/<index>`` indexes, ``__meta__`` definitions and settings,
``__journal__`` and ``__versions__`` for replication. This module opens the environment and runs transactions;
the tables' definitions and the schema token are kept by `Catalog` (core/catalog.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from threading import get_ident
from typing import Any

import lmdb

from pynndb.core import meta
from pynndb.core.catalog import TABLE_PREFIX, Catalog
from pynndb.core.changes import Change, follow
from pynndb.core.config import DatabaseConfig
from pynndb.core.doorbell import Bell
from pynndb.core.journal import Replication
from pynndb.core.meta import SCHEMA
from pynndb.core.table import Table
from pynndb.core.transaction import Transaction
from pynndb.errors import DatabaseClosed, DatabaseError, ReadOnlyDatabase, TransactionError, UnsupportedDependency

__all__ = ["TABLE_PREFIX", "Database"]

LMDB_NEEDED = (2, 3)  # pyproject.toml's lower bound, and why it is there: see check_lmdb_version


def check_lmdb_version(version: str) -> None:
    """Refuse a py-lmdb older than 2.3 (an install that skipped pyproject.toml's bound): 2.2.0 and 2.2.1 invalidate
    every open database handle when the map is resized, so a database breaks ("Database handle belongs to another
    environment") at its first automatic growth; versions before 2.2 can crash when the map is resized while
    another thread of the process (a node's snapshot reader) reads the database."""
    parts = version.split(".")
    try:
        found = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return  # a development build with another scheme: trust it
    if found < LMDB_NEEDED:
        needed = ".".join(map(str, LMDB_NEEDED))
        raise UnsupportedDependency(
            f"pynndb needs py-lmdb >= {needed}, found {version}: pip install --upgrade 'lmdb>={needed}' (2.2.x breaks "
            "databases when their map grows; older versions can crash when the map grows while another thread reads)"
        )


check_lmdb_version(lmdb.__version__)


class Database(Catalog):
    """A database directory. Get one from `Manager.database`; tables come from `table(name)`."""

    def __init__(self, name: str, path: str, config: dict[str, Any] | DatabaseConfig | None = None) -> None:
        self.config = DatabaseConfig.parse(config)
        self.name = name
        self.path = os.path.abspath(path)
        self._lock = threading.RLock()
        self._tables: dict[str, Table] = {}
        self._schema_token: bytes | None = None
        self._listeners: list[Callable[[], None]] = []
        self._writer: Transaction | None = None  # the write transaction open in this process, if any
        self._writer_owner = 0  # the thread that opened it
        # The id of a write transaction this object committed with changes (`Table.append`): LMDB numbers each commit
        # that changes something one past the last, so a write transaction numbered one past it follows it with no
        # commit of any process between, and needs no schema check (an empty commit takes no number, and changes
        # nothing). 0: none yet.
        self._known_after = 0
        self._bell = Bell(self.path)  # rung after each journaled commit (see core/doorbell.py)
        self._closed = False
        self._plain_writes = False  # see _settings_changed
        self._plain_journal: Replication | None = None
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise DatabaseError(f"{self.path} is a file, not a database directory")
        cfg = self.config
        if cfg.readonly and not os.path.isfile(os.path.join(self.path, "data.mdb")):
            raise DatabaseError(f"no database at {self.path} (no data.mdb)")
        os.makedirs(self.path, exist_ok=True)
        try:
            self._env = lmdb.open(
                self.path,
                map_size=cfg.map_size,
                max_dbs=cfg.max_dbs,
                max_readers=cfg.max_readers,
                sync=cfg.durable,
                metasync=cfg.durable,
                writemap=cfg.writemap,
                map_async=cfg.writemap and not cfg.durable,
                readahead=cfg.readahead,
                readonly=cfg.readonly,
            )
        except lmdb.Error as error:
            raise DatabaseError(f"cannot open database at {self.path}: {error}") from None
        # py-lmdb closes handles opened in a read transaction when it ends, so a readonly open lets each
        # open_db run its own transaction (txn=None), before the transaction that uses the handle begins.
        try:
            self._meta = self._env.open_db(b"__meta__", create=False) if cfg.readonly else None
        except lmdb.Error as error:
            self._env.close()
            raise DatabaseError(f"cannot open database at {self.path}: {error}") from None
        txn = self._env.begin(write=not cfg.readonly)
        try:
            if not cfg.readonly:
                self._meta = self._env.open_db(b"__meta__", txn=txn)
            self.replication = Replication(self, txn)
            if cfg.replication is not None and not cfg.readonly and cfg.replication != self.replication.enabled:
                txn.put(meta.REPLICATION, b"1" if cfg.replication else b"0", db=self._meta)
                self._touch_schema(txn)  # (so that other processes with it open see the change at their next write)
                self.replication.enabled = cfg.replication
                self._settings_changed(self.replication)
            txn.commit()
        except lmdb.Error as error:
            txn.abort()
            self._env.close()
            raise DatabaseError(f"cannot open database at {self.path}: {error}") from None
        self._reload_schema()

    @property
    def _path(self) -> str:
        """The directory (older code uses `_path`)."""
        return self.path

    # --- transactions ---------------------------------------------------------------------------------------
    def _begin(self, write: bool, applying: bool = False, attempts: int = 16) -> Transaction:
        if self._closed:
            raise DatabaseClosed(f"database {self.path} is closed")
        owner = get_ident() if write else 0
        if write and (
            self.config.readonly
            or (self.replication.read_only and not applying)
            or (self._writer is not None and self._writer_owner == owner)
        ):
            self._refuse_writer(applying)
        try:
            txn = self._env.begin(None, None, write)  # (positional: py-lmdb parses them faster; once per call)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)  # another process grew the map: adopt its size
            txn = self._env.begin(None, None, write)
        if not write:
            return Transaction(self, txn, False, False, applying)
        if txn.id() != self._known_after + 1 and txn.get(SCHEMA, None, self._meta) != self._schema_token:
            # Another process changed the schema. Handles must be opened in a transaction that commits (LMDB closes
            # those opened in one that aborts), so reload in a transaction of its own, then begin again.
            txn.abort()
            if attempts <= 1:
                raise DatabaseError(f"{self.path}: the schema keeps changing under this writer")
            self._reload_schema()
            return self._begin(True, applying, attempts - 1)  # (refuses a writer if it became a read-only replica)
        transaction = Transaction(self, txn, True, self.replication.enabled, applying)
        # LMDB runs one writer at a time, so at most one write transaction is open in this process.
        self._writer = transaction
        self._writer_owner = owner
        return transaction

    def _refuse_writer(self, applying: bool) -> None:
        """Why a write transaction cannot begin here (`_begin` tested all three in one expression)."""
        if self.config.readonly:
            raise ReadOnlyDatabase(f"{self.path} was opened read-only (config readonly=True)")
        if self.replication.read_only and not applying:
            raise ReadOnlyDatabase(f"{self.path} is a read-only replica; write to its source instead")
        raise TransactionError(
            f"{self.path}: a write transaction is already open in this thread; pass it as txn= "
            "(LMDB allows one writer at a time, so a second one here would wait for ever)"
        )

    def write_transaction(self) -> Transaction:
        """A write transaction: ``with db.write_transaction() as txn: table.append(doc, txn=txn)``."""
        return self._begin(True)

    def read_transaction(self) -> Transaction:
        """A read transaction: a consistent snapshot for several reads (keep it short)."""
        return self._begin(False)

    def _check(self, txn: Any, write: bool) -> Transaction:
        if not isinstance(txn, Transaction):
            raise TransactionError(f"txn must come from write_transaction()/read_transaction(), not {txn!r}")
        if txn.db is not self:
            raise TransactionError("that transaction belongs to another database")
        if not txn.active:
            raise TransactionError("that transaction has already finished")
        if write and not txn.write:
            raise TransactionError("this call writes: it needs a write_transaction()")
        return txn

    def _run(self, txn: Transaction | None, write: bool, work: Callable[..., Any], *args: Any) -> Any:
        """Run `work(transaction, *args)` in the caller's transaction, or atomically in a new one."""
        if txn is None and write and self._writer is not None and self._writer_owner == get_ident():
            txn = self._writer  # inside an open write transaction of this thread: join it
        if txn is not None:
            if txn.__class__ is Transaction and txn.db is self and txn.active and (txn.write or not write):
                return work(txn, *args)
            return work(self._check(txn, write), *args)
        for _attempt in range(8):
            t = self._begin(write)
            try:
                result = work(t, *args)
            except lmdb.MapFullError:
                t.abort()
                self._grow_map()
                continue
            except BaseException:
                t.abort()
                raise
            if write:
                try:
                    t.commit()
                except lmdb.MapFullError:
                    continue
            else:
                t.txn.abort()
                t.active = False
            return result
        raise DatabaseError(f"{self.path}: the map could not grow enough for this write")

    def _grow_map(self) -> None:
        # LMDB requires that no transaction of this process is active while the map is resized.
        with self._lock:
            size = self._env.info()["map_size"]
            self._env.set_mapsize(size * 2)

    def _committed(self, t: Transaction) -> None:
        for listener in self._listeners:
            listener()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every write transaction this process commits on this database."""
        self._listeners.append(callback)
        self._settings_changed(self.replication)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)
        self._settings_changed(self.replication)

    def _settings_changed(self, replication: Replication) -> None:
        """Keep `_plain_writes` in step: appends without a `Transaction` (Table._append_plain) while this database
        is writable and open, keeps no version per document, and no commit listener waits for this process's writes;
        `_plain_journal`, the journal they write their entry to (None: the database keeps none)."""
        self._plain_writes = not (
            replication.read_only
            or self.config.readonly
            or self._closed
            or self._listeners
            or (replication.enabled and replication.versioned)
        )
        self._plain_journal = replication if self._plain_writes and replication.enabled else None

    # --- change feed ----------------------------------------------------------------------------------------
    def changes(
        self,
        since: int | tuple[int, int] | None = None,
        tables: Iterable[str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[Change]:
        """The document changes committed to this journaled database, in order, as `Change`s (see core/changes.py).

        `since`: None for changes committed after this call, 0 for all the journal still holds, N for every change
        after sequence N (JournalTrimmed if the journal no longer reaches back there), or a `Change.position`.
        `tables` limits the feed to those tables. Iteration blocks for the next change, woken by any process's
        commit; it ends when none arrives within `timeout` seconds (None: waits for ever)."""
        return follow(self, since, tables, timeout)

    # --- housekeeping ---------------------------------------------------------------------------------------
    def storage_used(self) -> tuple[int, int]:
        """(bytes in use by pages, bytes of the data file on disk)."""
        info = self._env.info()
        stat = self._env.stat()
        used = (info["last_pgno"] + 1) * stat["psize"]
        on_disk = os.stat(os.path.join(self.path, "data.mdb")).st_blocks * 512
        return used, on_disk

    def sync(self) -> None:
        """Flush committed data to disk now (useful when `durable` is off)."""
        self._env.sync(True)

    def copy(self, path: str, compact: bool = True) -> None:
        """Write a consistent copy of the whole database to directory `path`."""
        os.makedirs(path, exist_ok=True)
        self._env.copy(path, compact=compact)

    @contextmanager
    def _snapshot_txn(self) -> Iterator[lmdb.Transaction[bytes]]:
        with self._env.begin(buffers=False) as txn:
            yield txn

    def close(self) -> None:
        """Close the database; further use raises DatabaseClosed."""
        if self._closed:
            return
        self._closed = True
        self._plain_writes = False
        self._plain_journal = None
        for table in self._tables.values():
            table._detach()
        from pynndb.core import registry

        registry.forget(self)
        self._env.close()
        self._bell.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<Database {self.name!r} at {self.path}>"
