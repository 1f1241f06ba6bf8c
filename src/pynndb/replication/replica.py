"""The replica side of replication (sans-IO): apply one source's entries exactly once and in order.

The high-water mark of a source is stored in the same transaction as the ops it covers, so replays and duplicates
are harmless. `Ordering` decides what to apply and what to ask for (a gap, a late start); the applier of the
replica's mode (`appliers`) applies it through the storage seam (`core/storage.py`); a snapshot replaces what came
from that source, then entries continue from the snapshot's sequence + 1. Messages in, requests out: no sockets.
Registration (`register`) is an explicit call: making a Replica writes nothing.
"""

from __future__ import annotations

import logging
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pynndb.core.storage import Storage
from pynndb.errors import InvalidReplication, MalformedEntry, PyNNDBError
from pynndb.replication import snapshot_intake
from pynndb.replication.appliers import APPLIERS, Applier
from pynndb.replication.messages import Entries, Message, Reply, Request, SnapshotBegin, SnapshotChunk, SnapshotEnd
from pynndb.replication.ordering import APPLY_BATCH, Entry, Ordering
from pynndb.replication.registration import (  # noqa: F401  (re-exported: the registration API of a replica)
    REGISTRATION,
    check_filter,
    filters,
    register,
    registrations,
    unregister,
)
from pynndb.replication.table_filter import Tables, has_table, listed, tables_of

if TYPE_CHECKING:
    from pynndb.core.database import Database

MODES = ("one-way", "two-way", "aggregate")
LINK_SILENCE = 0.25  # after a link comes up: how long an unanswered request may stay silent before it is asked again
MALFORMED = (MalformedEntry, KeyError, IndexError, TypeError, ValueError, AttributeError)
# applied_documents: put and delete ops applied (metrics); snapshots_retaken: snapshots that came with a hole (a lost
# chunk), asked for again.
COUNTERS = (
    "applied",
    "duplicates",
    "partial_resyncs",
    "full_resyncs",
    "malformed",
    "applied_documents",
    "snapshots_retaken",
)
STATES_THAT_ASK = ("stalled", "syncing", "snapshot")  # a request of a replica in these states that got no answer
log = logging.getLogger("pynndb.replication")


class Replica:
    """Keeps database `db` a replica of the database whose UUID is `source`; call `register()` once to record it
    in `db` (resumed on restart).

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
        self.source_bytes = _checked(db, source, mode)
        self.db = db
        self.storage = Storage(db)
        self.source = source
        self.two_way = mode == "two-way"
        self.tables: Tables = tables_of(tables)
        self._mode_cache: tuple[bytes | None, str] | None = None
        self.clock = clock
        self.request_timeout = request_timeout
        self.state = "syncing"
        self.reason: str | None = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_applied_clock = 0
        self.source_clock = 0  # the clock of the source's latest entry, as far as we know (for lag in seconds)
        self.snapshot_progress: tuple[int, int] | None = None  # (documents received, documents in the snapshot)
        self._snapshot: snapshot_intake.Taking | None = None
        self.ordering = Ordering(self.storage.mark(source), max_pending)
        self._interrupted = self.storage.snapshot_marker(source) is not None
        self.mode = self._current_mode()
        self._applier: Applier = APPLIERS[self.mode](self.source_bytes)

    def register(self) -> Replica:
        """Record in the database that it replicates this source (idempotent; see registration.register)."""
        register(self.db, self.source, self.two_way, self.tables)
        self._interrupted = self.storage.snapshot_marker(self.source) is not None
        self.mode = self._current_mode()
        return self

    def _current_mode(self) -> str:
        if self.two_way:
            return "two-way"
        # Registrations change the schema token (see register): read them again only when it changed.
        token = self.storage.schema_token()
        if self._mode_cache is None or self._mode_cache[0] != token:
            read_only = [source for source, mode in registrations(self.db).items() if mode != "two-way"]
            self._mode_cache = (token, "aggregate" if len(read_only) > 1 else "one-way")
        return self._mode_cache[1]

    def _follow_mode(self) -> Applier:
        """The applier of the current mode (it changes when registrations do; call it in a transaction)."""
        self.mode = self._current_mode()
        if self._applier.mode != self.mode:
            self._applier = APPLIERS[self.mode](self.source_bytes)
        return self._applier

    # --- where it stands (kept by the ordering) ------------------------------------------------------------------
    @property
    def hwm(self) -> int:
        """The highest sequence of the source applied here."""
        return self.ordering.hwm

    @property
    def source_last(self) -> int:
        """The source's latest sequence, as far as this replica knows."""
        return self.ordering.source_last

    @source_last.setter
    def source_last(self, value: int) -> None:
        self.ordering.source_last = value

    @property
    def hold_at(self) -> int | None:
        """Apply nothing past this sequence (a divergence check compares there); None: no hold."""
        return self.ordering.hold_at

    @hold_at.setter
    def hold_at(self, value: int | None) -> None:
        self.ordering.hold_at = value

    @property
    def holding(self) -> bool:
        """Whether the replica stands at `hold_at` (entries past it wait in memory)."""
        return self.ordering.holding

    @property
    def requested_at(self) -> float | None:
        """When the unanswered request was made (clock time), or None when no answer is awaited."""
        return self.ordering.requested_at

    # --- inputs --------------------------------------------------------------------------------------------------
    def start(self) -> list[Reply]:
        """What to ask the source for when starting (or restarting) replication."""
        if self.hwm and not self._interrupted:
            self.counters["partial_resyncs"] += 1  # resuming from a stored mark
        return [self.request(snapshot=self._interrupted)]

    def release(self, until: int | None = None) -> None:
        """End a hold, or move it on to `until`: apply what waited (a failure stalls the replica, as in `receive`)."""
        self.hold_at = until
        self._guarded(self._drain, "entry")

    def resync(self) -> list[Reply]:
        """Replace this replica's content by a fresh snapshot of its source (asked again until it arrives)."""
        self._interrupted = True  # until the snapshot ends, every retry asks for a snapshot again
        self._snapshot = None
        self.state = "syncing"
        return [self.request(snapshot=True)]

    def receive(self, message: Message) -> list[Reply]:
        """Take one message from the source; return the requests to send back (gap repair, snapshots)."""
        if getattr(message, "source", None) != self.source:
            return []
        if isinstance(message, Entries):
            return self._guarded(lambda: self._entries(message), "message")
        if isinstance(message, SnapshotBegin):
            return self._guarded(lambda: self._snapshot_begin(message), "message")
        if isinstance(message, SnapshotChunk):
            return self._guarded(lambda: self._snapshot_chunk(message), "message")
        if isinstance(message, SnapshotEnd):
            return self._guarded(lambda: self._snapshot_end(message), "message")
        return []

    def _guarded(self, work: Callable[[], list[Reply] | None], what: str) -> list[Reply]:
        """Run `work`; a malformed input or a storage error stalls the replica (retried by `tick`)."""
        try:
            return work() or []
        except MALFORMED as error:
            self.counters["malformed"] += 1
            self._stall(f"malformed {what} from the source: {error!r}")
        except PyNNDBError as error:
            self._stall(f"{type(error).__name__}: {error}")
        return []

    def link_restored(self) -> None:
        """A mesh link came (back) up: a request still unanswered may have been lost in the fault, so it is asked
        again if no answer comes within LINK_SILENCE, not after the whole request timeout."""
        self.ordering.hurry(self.clock(), self.request_timeout, LINK_SILENCE)

    def tick(self) -> list[Reply]:
        """Call now and then: re-sends a request that got no answer, retries after a stall."""
        ordering, taking = self.ordering, self._snapshot
        if ordering.waiting(self.clock(), self.request_timeout) or ordering.holding:
            # (what waits past a hold is not missing); a snapshot under way may acknowledge again
            return [] if taking is None else taking.ack_again(self.db.replication.uuid, self.clock())
        if self._snapshot is not None or ordering.pending or ordering.behind or self.state in STATES_THAT_ASK:
            self._snapshot = None
            return [self.request(snapshot=self._interrupted)]
        return []

    # --- entries -------------------------------------------------------------------------------------------------
    def _entries(self, message: Entries) -> list[Reply]:
        ordering = self.ordering
        if not message.entries and ordering.hwm >= message.last:
            ordering.requested_at = None  # the source's answer "nothing new since your mark"
        if message.entries:
            self.source_clock = max(self.source_clock, message.entries[-1][1])
        if self._interrupted:  # a snapshot is under way or still to come: nothing applies on a partial content
            ordering.source_last = max(ordering.source_last, message.last, message.last_seq)
            floor = 0 if self._snapshot is None else self._snapshot.seq
            for entry in message.entries:
                if entry[0] > floor:
                    ordering.hold(entry)
            return []
        run = ordering.take(message.entries, max(message.last, message.last_seq))
        if run:
            self._apply(run)
        self._drain()
        if ordering.should_ask():
            # Entries beyond a gap, or a source that says it is further on than anything we received.
            self.counters["partial_resyncs"] += 1
            return [self.request()]
        self._settle()
        return []

    def _settle(self) -> None:
        if self._snapshot is None and self.state != "stalled":
            self.state = "live" if self.ordering.current else "syncing"

    def _drain(self) -> None:
        while not self._interrupted and (run := self.ordering.held_run()):
            self._apply(run)
        self.counters["duplicates"] = self.ordering.duplicates
        self._settle()

    def _apply(self, run: list[Entry]) -> None:
        for start in range(0, len(run), APPLY_BATCH):
            batch = run[start : start + APPLY_BATCH]
            documents = 0
            for tx in self.storage.transactions(self.source):
                with tx:
                    applier = self._follow_mode()  # after begin: the schema token is current
                    documents = applier.apply_entries(tx, batch, self.db.replication.uuid, self.tables)
                    tx.set_mark(self.source, batch[-1][0])
            self.last_applied_clock = batch[-1][1]
            self.ordering.applied(batch[-1][0])
            self.counters["applied"] += len(batch)
            self.counters["applied_documents"] += documents
        self.counters["duplicates"] = self.ordering.duplicates
        self.state = "live" if self.ordering.current else "syncing"
        self.reason = None

    # --- snapshots -----------------------------------------------------------------------------------------------
    def _snapshot_begin(self, message: SnapshotBegin) -> list[Reply]:
        if message.stream and message.stream != self.ordering.stream:  # (0: a source that does not say)
            return []  # the answer to a request asked again since: its successor is on its way
        if message.seq <= self.hwm and not self._interrupted:
            # An earlier request's answer came first and took it past S: taking this one would move it back in time.
            self.ordering.requested_at = None
            return []
        self.counters["full_resyncs"] += 1
        self._follow_mode()
        self.state = "snapshot"
        self._snapshot = snapshot_intake.Taking(message)
        self.ordering.requested_at = self.clock()  # answered; a slow snapshot is not a lost one
        self.snapshot_progress = (0, message.documents)
        snapshot_intake.begin(self.storage, self._applier, self.source, self.tables, message)
        self._interrupted = True
        return []

    def _snapshot_chunk(self, message: SnapshotChunk) -> list[Reply]:
        taking = self._snapshot
        if taking is None or not taking.accepts(message):
            return []
        self.ordering.requested_at = self.clock()  # the answer is arriving: the request timeout measures silence
        order = taking.arrived(message)
        if order == "gap":
            return self._retake(f"chunk {taking.chunks + 1} of the snapshot at {taking.seq} never came")
        if order == "next" and has_table(self.tables, message.table):
            count = snapshot_intake.chunk(self.storage, self._applier, self.source, taking.begin, message)
            done, total = self.snapshot_progress or (0, 0)
            self.snapshot_progress = (done + count, total)
        return taking.ack(self.db.replication.uuid, self.clock())  # (chunks skipped are taken too)

    def _snapshot_end(self, message: SnapshotEnd) -> list[Reply]:
        taking = self._snapshot
        if taking is None or not taking.accepts(message):
            return []  # (an older stream at the same sequence must not complete this one)
        if not taking.complete(message):
            return self._retake(f"the snapshot at {message.seq} came with {taking.chunks} of {message.chunks} chunks")
        snapshot_intake.end(self.storage, self._applier, self.source, message.seq)
        self.ordering.restart_at(message.seq)
        self._snapshot = None
        self._interrupted = False
        self.state = "live"
        self._drain()
        if self.ordering.pending:
            return [self.request()]
        return []

    # --- bookkeeping ---------------------------------------------------------------------------------------------
    def request(self, snapshot: bool = False) -> Request:
        """A request for what follows this replica's mark (or a snapshot); it starts the request timeout."""
        stream = self.ordering.ask(self.clock())
        uuid = self.db.replication.uuid
        return Request(self.source, uuid, self.hwm + 1, snapshot, listed(self.tables), stream, snapshot_intake.WINDOW)

    def _retake(self, why: str) -> list[Reply]:
        """Part of the snapshot was lost on the way: none of it becomes the content (its marker stays, so a restart
        asks again too); ask for a new one."""
        log.warning("replica of %s in %s: %s; asking for a new snapshot", self.source, self.db.path, why)
        self.counters["snapshots_retaken"] += 1
        self._snapshot = None
        return [self.request(snapshot=True)]

    def _stall(self, reason: str) -> None:
        self.state = "stalled"
        self.reason = reason
        self._snapshot = None
        self.ordering.requested_at = self.clock()

    def status(self) -> dict[str, Any]:
        """Where this replica stands: mark, lag, state and counters."""
        self.storage.refresh()  # another replica of this database may have registered since (its mode follows)
        # The committed mark, not only the in-memory one: STATUS runs on another thread, which may ask between an
        # apply's commit and the service step's update of `hwm` (readers of the database already see the data).
        hwm = max(self.hwm, self.storage.mark(self.source))
        lag_entries, lag_seconds = _lag(self, hwm)
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
            **(self.counters | self._applier.stats),  # (the applier's: keyed_documents)
        }


def _lag(replica: Replica, hwm: int) -> tuple[int, float]:
    """(entries, seconds) a replica at `hwm` is behind its source."""
    lag_entries = max(0, replica.source_last - hwm)
    # The age of the oldest entry known to be missing: a held entry past a gap, else the source's latest (from its
    # entries or its directory announcements). Never the age of our last apply: after an idle spell that would count
    # the idle time as lag.
    missing = replica.ordering.oldest_missing_clock() or replica.source_clock or replica.last_applied_clock
    return lag_entries, max(0.0, time.time() - (missing >> 16) / 1000) if lag_entries and missing else 0.0


def _checked(db: Database, source: str, mode: str) -> bytes:
    """The source UUID's bytes, or InvalidReplication for a bad mode or source."""
    if mode not in MODES:
        raise InvalidReplication(f"mode must be one of {MODES}, not {mode!r}")
    try:
        source_bytes = uuid_module.UUID(source).bytes
    except (ValueError, AttributeError, TypeError):
        raise InvalidReplication(f"source must be a database UUID, not {source!r}") from None
    if source == db.replication.uuid:
        raise InvalidReplication("a database cannot replicate itself")
    return source_bytes
