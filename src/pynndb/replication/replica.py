"""The replica side of replication (sans-IO): apply one source's entries exactly once and in order.

The high-water mark of a source is stored in the same transaction as the ops it covers, so replays and duplicates
are harmless. A gap (or a late start) yields a `Request` for the missing range; a snapshot replaces what came from
that source, then entries continue from the snapshot's sequence + 1. Messages in, requests out: no sockets here.
"""

from __future__ import annotations

import base64
import gc
import secrets
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from pynndb.core.index import IndexDefinition
from pynndb.core.journal import SEQ, Entry, read_entry
from pynndb.core.table import Table
from pynndb.errors import InvalidReplication, MalformedEntry, PyNNDBError
from pynndb.replication import fast_snapshot
from pynndb.replication.messages import Entries, Message, Request, SnapshotBegin, SnapshotChunk, SnapshotEnd
from pynndb.replication.registration import (  # noqa: F401  (re-exported: the registration API of a replica)
    LEFT_FILTER,
    REGISTRATION,
    SNAPSHOT,
    check_filter,
    filters,
    register,
    registrations,
    unregister,
)
from pynndb.replication.table_filter import Tables, filter_ops, has_table, listed, tables_of

if TYPE_CHECKING:
    from pynndb.core.database import Database
    from pynndb.core.transaction import Transaction

MODES = ("one-way", "two-way", "aggregate")
APPLY_BATCH = 500  # journal entries per replica transaction


class Replica:
    """Keeps database `db` a replica of the database whose UUID is `source`.

    `mode`: 'one-way' (read-only copy), 'two-way' (both sides write; last writer wins by version, ties by origin),
    'aggregate' (read-only, fed by several sources; each source's snapshot replaces only its own documents).
    `tables`: replicate only these tables (None: every table); see `table_filter`.
    """

    def __init__(
        self,
        db: Database,
        source: str,
        mode: str = "one-way",
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 2.0,
        max_pending: int = 100_000,
        tables: Iterable[str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidReplication(f"mode must be one of {MODES}, not {mode!r}")
        try:
            self.source_bytes = uuid_module.UUID(source).bytes
        except (ValueError, AttributeError, TypeError):
            raise InvalidReplication(f"source must be a database UUID, not {source!r}") from None
        if source == db.replication.uuid:
            raise InvalidReplication("a database cannot replicate itself")
        self.db = db
        self.source = source
        self.two_way = mode == "two-way"
        self.tables: Tables = tables_of(tables)
        register(db, source, self.two_way, self.tables)
        self._mode_cache: tuple[bytes | None, str] | None = None
        self._stream = 0  # the stream id of the latest request (see _request)
        self.mode = self._current_mode()
        self.clock = clock
        self.request_timeout = request_timeout
        self.max_pending = max_pending
        self.state = "syncing"
        self.reason: str | None = None
        self.counters = {"applied": 0, "duplicates": 0, "partial_resyncs": 0, "full_resyncs": 0, "malformed": 0}
        self.counters["applied_documents"] = 0  # put and delete ops applied (metrics)
        self.source_last = 0
        self.last_applied_clock = 0
        self.source_clock = 0  # the clock of the source's latest entry, as far as we know (for lag in seconds)
        self.snapshot_progress: tuple[int, int] | None = None  # (documents received, documents in the snapshot)
        self.hold_at: int | None = None  # apply nothing past this sequence (a divergence check compares there)
        self._pending: dict[int, tuple[int, bytes]] = {}
        self._requested_at: float | None = None
        self._snapshot: SnapshotBegin | None = None
        replication = db.replication
        with db._env.begin() as txn:
            self.hwm = replication.mark(txn, source)
            self._interrupted = replication.meta_get(txn, self._snapshot_key) is not None

    def _current_mode(self) -> str:
        if self.two_way:
            return "two-way"
        # Registrations change the schema token (see register): read them again only when it changed.
        token = self.db._schema_token
        if self._mode_cache is None or self._mode_cache[0] != token:
            read_only = [source for source, mode in registrations(self.db).items() if mode != "two-way"]
            self._mode_cache = (token, "aggregate" if len(read_only) > 1 else "one-way")
        return self._mode_cache[1]

    @property
    def _snapshot_key(self) -> bytes:
        return SNAPSHOT + self.source.encode()

    # --- inputs ---------------------------------------------------------------------------------------------
    def start(self) -> list[Request]:
        """What to ask the source for when starting (or restarting) replication."""
        if self.hwm and not self._interrupted:
            self.counters["partial_resyncs"] += 1  # resuming from a stored mark
        return [self._request(snapshot=self._interrupted)]

    @property
    def holding(self) -> bool:
        """Whether the replica stands at `hold_at` (entries past it wait in memory)."""
        return self.hold_at is not None and self.hwm >= self.hold_at

    def release(self, until: int | None = None) -> None:
        """End a hold, or move it on to `until`: apply what waited (a failure stalls the replica, as in `receive`)."""
        self.hold_at = until
        try:
            self._drain()
        except (MalformedEntry, KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            self.counters["malformed"] += 1
            self._stall(f"malformed entry from the source: {error!r}")
        except PyNNDBError as error:
            self._stall(f"{type(error).__name__}: {error}")

    def resync(self) -> list[Request]:
        """Replace this replica's content by a fresh snapshot of its source (asked again until it arrives)."""
        self._interrupted = True  # until the snapshot ends, every retry asks for a snapshot again
        self._snapshot = None
        self.state = "syncing"
        return [self._request(snapshot=True)]

    def receive(self, message: Message) -> list[Request]:
        """Take one message from the source; return the requests to send back (gap repair, snapshots)."""
        if getattr(message, "source", None) != self.source:
            return []
        try:
            if isinstance(message, Entries):
                return self._entries(message)
            if isinstance(message, SnapshotBegin):
                return self._snapshot_begin(message)
            if isinstance(message, SnapshotChunk):
                return self._snapshot_chunk(message)
            if isinstance(message, SnapshotEnd):
                return self._snapshot_end(message)
        except (MalformedEntry, KeyError, IndexError, TypeError, ValueError, AttributeError) as error:
            self.counters["malformed"] += 1
            self._stall(f"malformed message from the source: {error!r}")
        except PyNNDBError as error:
            self._stall(f"{type(error).__name__}: {error}")
        return []

    def tick(self) -> list[Request]:
        """Call now and then: re-sends a request that got no answer, retries after a stall."""
        if self._requested_at is not None and self.clock() - self._requested_at < self.request_timeout:
            return []
        if self.holding:
            return []  # what waits past the hold is not missing
        behind = self.source_last > self.hwm
        if self._snapshot is not None or self._pending or behind or self.state in ("stalled", "syncing"):
            self._snapshot = None
            return [self._request(snapshot=self._interrupted)]
        return []

    # --- entries --------------------------------------------------------------------------------------------
    def _entries(self, message: Entries) -> list[Request]:
        self.source_last = max(self.source_last, message.last, message.last_seq)
        if not message.entries and self.hwm >= message.last:
            self._requested_at = None  # the source's answer "nothing new since your mark"
        if message.entries:
            self.source_clock = max(self.source_clock, message.entries[-1][1])
        if self._snapshot is not None:
            for seq, clock, body in message.entries:
                if seq > self._snapshot.seq:
                    self._hold(seq, clock, body)
            return []
        run: list[tuple[int, int, bytes]] = []
        for seq, clock, body in message.entries:
            if seq <= self.hwm:
                self.counters["duplicates"] += 1
            elif seq == self.hwm + 1 + len(run) and (self.hold_at is None or seq <= self.hold_at):
                run.append((seq, clock, body))
            else:
                self._hold(seq, clock, body)
        if run:
            self._apply(run)
        self._drain()
        if (self._pending or self.source_last > self.hwm) and self._requested_at is None and not self.holding:
            # Entries beyond a gap, or a source that says it is further on than anything we received.
            self.counters["partial_resyncs"] += 1
            return [self._request()]
        self._settle()
        return []

    def _settle(self) -> None:
        if self._snapshot is None and self.state != "stalled":
            self.state = "live" if not self._pending and self.hwm >= self.source_last else "syncing"

    def _hold(self, seq: int, clock: int, body: bytes) -> None:
        if len(self._pending) < self.max_pending:
            self._pending[seq] = (clock, body)

    def _drain(self) -> None:
        while self._pending:
            for seq in [seq for seq in self._pending if seq <= self.hwm]:
                del self._pending[seq]
                self.counters["duplicates"] += 1
            run: list[tuple[int, int, bytes]] = []
            seq = self.hwm + 1
            while seq in self._pending and len(run) < APPLY_BATCH and (self.hold_at is None or seq <= self.hold_at):
                clock, body = self._pending.pop(seq)
                run.append((seq, clock, body))
                seq += 1
            if not run:
                break
            self._apply(run)
        self._settle()

    def _apply(self, run: list[tuple[int, int, bytes]]) -> None:
        for start in range(0, len(run), APPLY_BATCH):
            batch = run[start : start + APPLY_BATCH]
            t = self.db._begin(True, applying=True)
            self.mode = self._current_mode()  # after begin: the schema token is current
            # Decoding a large entry makes many short-lived dicts; the cyclic collector would rescan them all
            # (3x slower) although none can form a cycle.
            collecting = gc.isenabled()
            gc.disable()
            try:
                for _seq, clock, body in batch:
                    self._apply_entry(t, read_entry(body))
                    self.last_applied_clock = clock
                self.db.replication.set_mark(t.txn, self.source, batch[-1][0])
                t.commit()
            except BaseException:
                t.abort()
                raise
            finally:
                if collecting:
                    gc.enable()
            self.hwm = batch[-1][0]
            self.counters["applied"] += len(batch)
        if self.hwm >= self.source_last:
            self._requested_at = None  # else the answer to our request is still arriving
        self.state = "live" if not self._pending and self.hwm >= self.source_last else "syncing"
        self.reason = None

    def _apply_entry(self, t: Transaction, entry: Entry) -> None:
        origin, version, ops = entry
        if origin == self.db.replication.uuid:
            return  # our own change coming back through a two-way pair: never re-apply it
        ops = filter_ops(self.tables, ops)  # ops of other tables are skipped; the mark still passes the entry
        self.counters["applied_documents"] += sum(1 for op in ops if op and op[0] in ("put", "delete"))
        t.origin = uuid_module.UUID(origin).bytes
        t.version = version
        t.source = self.source_bytes
        if self.mode == "two-way":
            for op in ops:
                self._apply_op(t, op, version, t.origin)
        else:
            self._apply_ops_batched(t, ops, version)
        if t.ops:
            self.db.replication.write_entry(t, origin, version)  # a relayed change keeps its origin

    def _apply_ops_batched(self, t: Transaction, ops: list[Any], version: int) -> None:
        """Apply ops in order, writing runs of puts to one table with one `_insert_stored` call (the bulk path of
        read-only replicas, where no version comparison is needed); a put to a key the table holds is an update."""
        table: Table | None = None
        run: list[tuple[bytes, bytes, dict[str, Any]]] = []
        loads = orjson.loads

        def flush() -> None:
            if run:
                assert table is not None
                position = 0
                while (position := table._insert_stored(t, run, position)) < len(run):
                    oid, _stored, fields = run[position]
                    self._put(t, table, oid, fields)
                    position += 1
                run.clear()

        for op in ops:
            if op.__class__ is list and len(op) == 4 and op[0] == "put":
                name = op[1]
                if table is None or name != table.name:
                    flush()
                    table = self._table(t, name)
                key = op[2]
                oid = key.encode() if key.__class__ is str else b""
                if not oid or op[3].__class__ is not bytes:
                    raise MalformedEntry("a put op must carry a key and a document")
                fields = loads(op[3])  # decoded once: the index keys need the fields
                if fields.__class__ is not dict:
                    raise MalformedEntry("a put op's document must be a JSON object")
                run.append((oid, op[3], fields))
                continue
            flush()
            table = None  # another op may drop or re-create a table
            self._apply_op(t, op, version, t.origin)
        flush()

    def _apply_op(self, t: Transaction, op: list[Any], version: int, origin: bytes) -> None:
        kind = op[0]
        db = self.db
        if kind == "put" or kind == "delete":
            oid = op[2].encode()
            # Compare before touching the table: a change older than a drop must not bring the table back.
            if self.mode == "two-way" and not self._newer(t, op[1], oid, version, origin):
                return
            table = self._table(t, op[1])
            fields = _fields(op[3]) if kind == "put" else None
            self._put(t, table, oid, fields)
        elif kind == "create":
            db._create_table(t, op[1])
        elif kind == "drop":
            if self.mode == "aggregate":
                self._remove_source_documents(t, op[1])
            elif self.mode == "two-way":
                self._drop_older(t, op[1], version, origin)
            elif db._table_definition(t.txn, op[1]) is not None:
                db._drop_table(t, op[1])
        elif kind == "empty":
            if self.mode == "aggregate":
                self._remove_source_documents(t, op[1])
            elif self.mode == "two-way":
                self._empty_older(t, self._table(t, op[1]), version, origin)
            else:
                self._table(t, op[1])._empty(t)
        elif kind == "ensure":
            self._ensure(t, self._table(t, op[1]), op[2], op[3])
        elif kind == "drop_index":
            table = self._table(t, op[1])
            if op[2] in table._indexes:
                table._drop_index(t, op[2])
        elif kind == "compress":
            dictionary = None if op[3] is None else base64.b64decode(op[3])
            self._table(t, op[1])._set_compression(t, op[2], dictionary)
        else:
            raise MalformedEntry(f"unknown op {kind!r}")

    def _table(self, t: Transaction, name: str) -> Table:
        if not isinstance(name, str):
            raise MalformedEntry("table name must be a str")
        table = self.db._tables.get(name)
        if table is not None and table._dbi is not None:
            return table
        return self.db._create_table(t, name)

    @staticmethod
    def _ensure(t: Transaction, table: Table, name: str, stored: dict[str, Any]) -> None:
        definition = IndexDefinition.from_json(name, stored)
        existing = table._indexes.get(name)
        if existing is not None and existing.definition.same_as(definition):
            return
        table._ensure(t, definition, force=existing is not None)

    def _newer(self, t: Transaction, table: str, oid: bytes, version: int, origin: bytes) -> bool:
        replication = self.db.replication
        if (version, origin) <= replication.emptied(t.txn, table):
            return False  # the table was emptied after this change was made
        local = replication.version_of(t.txn, table, oid)
        return local is None or (version, origin) > (local.clock, local.origin)

    def _drop_older(self, t: Transaction, name: str, version: int, origin: bytes) -> None:
        """A two-way `drop`: documents written after it (that the peer had not seen) keep the table alive."""
        table = self.db._tables.get(name)
        if table is None or table._dbi is None:
            self.db.replication.record_emptied(t, name)
            return
        self._empty_older(t, table, version, origin)
        if not t.txn.stat(table._dbi)["entries"]:
            self.db._drop_table(t, name)
            self.db.replication.record_emptied(t, name)

    def _empty_older(self, t: Transaction, table: Table, version: int, origin: bytes) -> None:
        """A two-way `empty`: remove what is older than it, keep what the peer did not know about yet."""
        replication = self.db.replication
        older = []
        for oid, _stored in t.txn.cursor(db=table._dbi):
            local = replication.version_of(t.txn, table.name, oid)
            if local is None or (local.clock, local.origin) < (version, origin):
                older.append(oid)
        for oid in older:
            old = table._read(t.txn, oid)
            if old is not None:
                table._write(t, oid, None, old)
        replication.record_emptied(t, table.name)

    @staticmethod
    def _put(t: Transaction, table: Table, oid: bytes, fields: dict[str, Any] | None) -> None:
        old = table._read(t.txn, oid)
        if fields is None:
            if old is not None:
                table._write(t, oid, None, old)
            else:
                table._db.replication.record_version(t, table.name, oid, True)
        else:
            table._write(t, oid, fields, old)

    def _remove_source_documents(self, t: Transaction, name: str) -> None:
        table = self.db._tables.get(name)
        if table is None or table._dbi is None:
            return
        mine = [
            oid for oid, version in self.db.replication.versions(t.txn, name) if version.source == self.source_bytes
        ]
        for oid in mine:
            old = table._read(t.txn, oid)
            if old is not None:
                table._write(t, oid, None, old)

    # --- snapshots ------------------------------------------------------------------------------------------
    def _snapshot_begin(self, message: SnapshotBegin) -> list[Request]:
        if not self._current_stream(message):
            return []  # the answer to a request asked again since: its successor is on its way
        self.counters["full_resyncs"] += 1
        self.mode = self._current_mode()
        self.state = "snapshot"
        self._snapshot = message
        self._requested_at = self.clock()  # answered; a slow snapshot is not a lost one
        self.snapshot_progress = (0, message.documents)
        db = self.db
        t = db._begin(True, applying=True)
        try:
            t.origin = t.source = self.source_bytes
            t.version = 0
            db.replication.meta_put(t.txn, self._snapshot_key, SEQ.pack(message.seq))
            for name in list(db._tables):
                if db._tables[name]._dbi is None or not has_table(self.tables, name):
                    continue  # a filtered replica's other tables are not the source's to replace
                if self.mode == "one-way":
                    db._drop_table(t, name)
                elif self.mode == "aggregate":
                    self._remove_source_documents(t, name)
            for name, definition in message.tables.items():
                if not has_table(self.tables, name):
                    continue
                table = self._table(t, name)
                fast_snapshot.set_compression(t, table, message)
                for index_name, stored in definition.get("indexes", {}).items():
                    self._ensure(t, table, index_name, stored)
            self._finish_snapshot_txn(t)
        except BaseException:
            t.abort()
            raise
        self._interrupted = True
        return []

    def _snapshot_chunk(self, message: SnapshotChunk) -> list[Request]:
        if not self._current_stream(message):
            return []
        self._requested_at = self.clock()  # the answer is arriving: the request timeout measures silence
        if not has_table(self.tables, message.table):
            return []
        stored = message.stored
        documents: list[Any] = []
        if stored is None:
            documents = message.documents if message.raw is None else orjson.loads(message.raw)
        t = self.db._begin(True, applying=True)
        try:
            table = self._table(t, message.table)
            t.origin = t.source = self.source_bytes
            t.version = 0
            if stored is not None:
                codec = fast_snapshot.source_compressor(self._snapshot, message.table)
                if self.mode == "one-way":
                    count = fast_snapshot.write_stored(t, table, stored, self.source_bytes, codec)
                else:
                    count = self._snapshot_documents(t, table, fast_snapshot.stored_documents(stored, codec))
            else:
                count = len(documents)
                for key, fields, version in documents:
                    oid = key.encode()
                    if version is None:
                        t.origin, t.version = self.source_bytes, 0
                    else:
                        t.origin, t.version = uuid_module.UUID(version[1]).bytes, version[0]
                    t.source = self.source_bytes
                    if self.mode == "two-way" and not self._newer(t, message.table, oid, t.version, t.origin):
                        continue
                    self._put(t, table, oid, fields)
            self._finish_snapshot_txn(t)
        except BaseException:
            t.abort()
            raise
        done, total = self.snapshot_progress or (0, 0)
        self.snapshot_progress = (done + count, total)
        return []

    def _snapshot_documents(self, t: Transaction, table: Table, documents: list[fast_snapshot.Document]) -> int:
        """Apply a snapshot's documents one by one (two-way: last writer wins; aggregate: tagged with the source)."""
        for oid, fields, version, origin in documents:
            t.origin, t.version = (self.source_bytes, 0) if origin is None else (origin, version)
            t.source = self.source_bytes
            if self.mode == "two-way" and not self._newer(t, table.name, oid, t.version, t.origin):
                continue
            self._put(t, table, oid, fields)
        return len(documents)

    def _finish_snapshot_txn(self, t: Transaction) -> None:
        if t.ops:
            self.db.replication.write_entry(t, self.source, 0)
        t.commit()

    def _snapshot_end(self, message: SnapshotEnd) -> list[Request]:
        if not self._current_stream(message):
            return []  # (an older stream at the same sequence must not complete this one)
        t = self.db._begin(True, applying=True)
        try:
            self.db.replication.set_mark(t.txn, self.source, message.seq)
            self.db.replication.meta_put(t.txn, self._snapshot_key, None)
            t.commit()
        except BaseException:
            t.abort()
            raise
        self.hwm = message.seq
        self.source_last = max(self.source_last, message.seq)
        self._snapshot = None
        self._interrupted = False
        self._requested_at = None
        self.state = "live"
        self._drain()
        if self._pending:
            return [self._request()]
        return []

    # --- bookkeeping ----------------------------------------------------------------------------------------
    @property
    def requested_at(self) -> float | None:
        """When the unanswered request was made (clock time), or None when no answer is awaited."""
        return self._requested_at

    def request(self, snapshot: bool = False) -> Request:
        """A request for what follows this replica's mark (or a snapshot); it starts the request timeout."""
        return self._request(snapshot)

    def _request(self, snapshot: bool = False) -> Request:
        self._requested_at = self.clock()
        # A new stream id per request: a snapshot still arriving for an earlier request (asked again after a
        # silence, a node restart) must not be mixed with the one answering this request.
        self._stream = secrets.randbits(62) + 1
        return Request(self.source, self.db.replication.uuid, self.hwm + 1, snapshot, listed(self.tables), self._stream)

    def _current_stream(self, message: SnapshotBegin | SnapshotChunk | SnapshotEnd) -> bool:
        """Whether a snapshot message belongs to the snapshot this replica is taking (0: a source that does not
        say, accepted as before)."""
        if isinstance(message, SnapshotBegin):
            return not message.stream or message.stream == self._stream
        taking = self._snapshot
        return taking is not None and message.seq == taking.seq and message.stream == taking.stream

    def _stall(self, reason: str) -> None:
        self.state = "stalled"
        self.reason = reason
        self._snapshot = None
        self._requested_at = self.clock()

    def status(self) -> dict[str, Any]:
        """Where this replica stands: mark, lag, state and counters."""
        self.db._refresh()  # another replica of this database may have registered since (its mode follows)
        # The committed mark, not only the in-memory one: STATUS runs on another thread, which may ask between an
        # apply's commit and the service thread's update of `hwm` (readers of the database already see the data).
        with self.db._env.begin() as txn:
            hwm = max(self.hwm, self.db.replication.mark(txn, self.source))
        lag_entries = max(0, self.source_last - hwm)
        lag_seconds = 0.0
        if lag_entries:
            # The age of the oldest entry known to be missing: a held entry past a gap, else the source's latest
            # (from its entries or its directory announcements). Never the age of our last apply: after an idle
            # spell that would count the idle time as lag.
            pending = self._pending.get(min(self._pending)) if self._pending else None
            missing = pending[0] if pending else self.source_clock or self.last_applied_clock
            if missing:
                lag_seconds = max(0.0, time.time() - (missing >> 16) / 1000)
        return {
            "source": self.source,
            "mode": self._current_mode(),
            "tables": listed(self.tables),
            "hwm": hwm,
            "source_sequence": max(self.source_last, hwm),
            "lag_entries": lag_entries,
            "lag_seconds": round(lag_seconds, 3),
            "state": self.state,
            "reason": self.reason,
            "snapshot_progress": self.snapshot_progress if self.state == "snapshot" else None,
            **self.counters,
        }


def _fields(stored: Any) -> dict[str, Any]:
    """The fields of a put op's document (its stored JSON bytes, see journal.read_entry)."""
    fields = orjson.loads(stored) if stored.__class__ is bytes else None
    if fields.__class__ is not dict:
        raise MalformedEntry("a put op must carry a document (a JSON object)")
    return fields


# --- registrations: which sources a database replicates, kept in the database itself -----------------------------
