"""`Transaction`: one LMDB transaction plus what pynndb tracks alongside it (journal ops, schema changes)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

import lmdb

from pynndb.errors import TransactionError

if TYPE_CHECKING:
    from pynndb.core.database import Database


class Transaction:
    """A read or write transaction; use as a context manager (commit on clean exit, abort on exception)."""

    __slots__ = (
        "db",
        "txn",
        "write",
        "ops",
        "merged",
        "documents",
        "keys",
        "key_lengths",
        "keyed",
        "key_tables",
        "hlc",
        "seq",
        "origin",
        "version",
        "source",
        "applying",
        "schema_changed",
        "active",
    )

    def __init__(
        self, db: Database, txn: lmdb.Transaction[bytes], write: bool, journaled: bool, applying: bool
    ) -> None:
        self.db = db
        self.txn = txn
        self.write = write
        # Journal ops of the current entry; None when the database keeps no journal.
        self.ops: list[Any] | None = [] if journaled else None
        # The stored bytes of the current entry's put ops, in op order, copied in: keeping each orjson output
        # alive instead makes every later orjson.dumps many times slower (its buffers are over-allocated). Only
        # a journaled transaction adds to them (where `ops` is not None).
        self.documents: bytearray | bytes = b""
        if journaled:
            self.documents = bytearray()
            # The index keys of the current entry's inserts (TableWrites._insert): their bytes back to back, their
            # lengths (one per index of the table, 0: no key; None: this entry cannot carry them), how many put ops
            # recorded them, and the index token of each table they went into. (Unset without a journal: nothing
            # reads them then, and the most frequent call, an append without replication, does not pay for them.)
            self.merged = 0  # ops beyond one per item of `ops` (an item may hold many records' puts: ops.put_ops)
            self.keys = bytearray()
            self.key_lengths: list[int] | None = []
            self.keyed = 0
            self.key_tables: dict[bytes, bytes] = {}
        # The database clock for this transaction (set at the first journaled write), its sequence, and the version
        # it writes at (the replication applier's, with the origin and source of a remote entry it applies).
        self.hlc = self.seq = self.version = 0
        self.origin: bytes | None = None
        self.source: bytes | None = None
        self.applying = applying
        self.schema_changed = False
        self.active = True

    def commit(self) -> None:
        """Write the journal entry (if any) and commit."""
        if not self.active:
            raise TransactionError("transaction already finished")
        db = self.db
        if self.ops:
            try:
                db.replication.write_entry(self)
            except BaseException:
                self.abort()
                raise
        self.active = False
        if db._writer is self:  # (_release, inlined: this runs once per write call)
            db._writer = None
        try:
            self.txn.commit()
        except lmdb.MapFullError:
            db._grow_map()
            if self.schema_changed:
                db._reload_schema()
            raise
        if self.schema_changed:
            db._schema_committed()
        if self.hlc:  # a journal entry was committed: wake every process waiting on this database
            db._bell.ring()
        if self.write and db._listeners:
            db._committed(self)

    def abort(self) -> None:
        """Discard every change made in this transaction."""
        if not self.active:
            return
        self.active = False
        self._release()
        self.txn.abort()
        if self.schema_changed:
            self.db._reload_schema()

    def _release(self) -> None:
        if self.db._writer is self:
            self.db._writer = None

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None and self.active:
            self.commit()
        else:
            self.abort()
