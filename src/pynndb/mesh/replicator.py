"""The replication service of a node: serves registered databases as sources and keeps replicas in sync.

The mesh only moves the replication engine's frames: live entries are published on topic ``db:<uuid>``; requests
(gap repair, snapshots) and their answers are targeted messages of kind ``repl``. All replica state lives in the
databases (marks, registrations), so a restarted node resumes where it stood. The service's steps run on the node's
socket loop (a `loop.LoopTask`), which owns every `Replica` and `Publisher`; command handlers
(`replication_commands`) only queue work for it or read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pynndb.core.database import Database
from pynndb.errors import MalformedEntry, PyNNDBError
from pynndb.mesh.divergence import DivergenceDetector
from pynndb.mesh.replication_commands import ReplicationCommands
from pynndb.mesh.replication_holdings import Holdings, Hosted
from pynndb.mesh.replication_inbox import Arrival, Inbox, coalesce
from pynndb.mesh.replication_info import SERVICE, replica_holder, source_owners, source_progress
from pynndb.mesh.replication_outbox import RequestOutbox, clear_missing_source, stall_for_missing_source
from pynndb.mesh.replication_serving import SourceServer
from pynndb.mesh.watch import CommitWake, Waker
from pynndb.replication.messages import Entries, Message, Reply, Request, SnapshotAck, decode, encode
from pynndb.replication.replica import Replica, check_filter, filters, registrations, unregister
from pynndb.replication.table_filter import listed, tables_of

if TYPE_CHECKING:
    from pynndb.mesh.controller import Controller

log = logging.getLogger("pynndb.replication")
KIND = "repl"
TOPIC = "db:"
UUID_LENGTH = 36
POLL_IDLE = 0.002  # journal polling for a served database whose doorbell cannot be used
SAFETY_POLL = 0.5  # everything is woken by doorbells and messages: this only catches a ring that never came
REPLICA_TICK = 0.05  # hosted replicas re-send unanswered requests on ticks
SLICE_FRAMES = 1000  # arrivals taken by one step (a step holds up the node's sockets: long work goes in slices)
SLICE_BYTES = 4 << 20
TARGETED_SLICE_BYTES = 64 << 10  # answers a step takes after the live frames: one snapshot chunk (bulk.CHUNK_PAIRS)
SLICE_MESSAGES = 8  # batches of live entries (each up to 1 MiB) a step publishes per served database
INFO_EVERY = 0.5
# wakeups: steps run because something woke the thread (not its timer); the serving counters are SourceServer's.
COUNTERS = ("published", "received", "malformed", "found_by_polling", "wakeups")


class ReplicationService:
    """Plugged into a Controller (a node service): adds REGISTER, UNREGISTER, REPLICATE, UNREPLICATE, STOP, START,
    DIGEST, DUMP, VERIFY, RESYNC and per-database figures in STATUS."""

    def __init__(self, node: Controller, poll_interval: float = POLL_IDLE) -> None:
        self.node = node
        self.poll_interval = poll_interval
        self._waker = Waker()
        self._commits = CommitWake(self._waker)
        self.holdings = Holdings(self._waker, self._commits)
        self._inbox = Inbox()  # live topic frames first, then answers and requests (see replication_inbox)
        self._outbox = RequestOutbox()  # requests waiting for their source's node to be known
        # When the next step is due even if nothing wakes it (0: at once). A plain attribute, not a property: the node's
        # loop reads it in every turn (loop.LoopTask's `deadline`).
        self.deadline = 0.0
        self._routine_due = 0.0  # when a step that was woken runs the routine part too (see _step)
        self._info_at = 0.0
        self._woken = False
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._server = SourceServer(node.label, self._answer, self.counters)  # (answers run on its threads)
        self._source_clocks: dict[str, int] = {}  # source uuid -> clock of its latest entry, from announcements
        self.divergence = DivergenceDetector(self)
        self.commands = ReplicationCommands(self)
        self.commands.install(node)
        node.on_message(KIND, self._on_message, inline=True)
        node.on_peer_change(self._on_peer_change)
        node.run_task(self)  # the steps run on the node's socket loop: see "the service's steps" below

    # --- databases ------------------------------------------------------------------------------------------
    def open(self, path: str) -> Database:
        """Open (or share) the database at `path`; it must already exist."""
        return self.holdings.open(path)

    def attach(self, path: str) -> dict[str, Any]:
        """Serve a database as a source (if it keeps a journal) and resume every replication recorded in it."""
        db = self.open(path)
        result: dict[str, Any] = {"uuid": db.replication.uuid, "replicas": []}
        if db.replication.enabled:
            self.register(db)
        chosen = filters(db)
        for source, mode in registrations(db).items():
            self.replicate(db, source, "two-way" if mode == "two-way" else "one-way", listed(chosen.get(source)))
            result["replicas"].append(source)
        return result

    def register(self, db: Database) -> None:
        """Serve ``db`` (which keeps a journal) as a source."""
        if self.holdings.serve(db):
            self._announce()

    def unregister(self, db: Database) -> bool:
        """Stop serving ``db`` as a source; False if it was not served here."""
        if not self.holdings.unserve(db):
            return False
        self._announce()
        return True

    def replicate(self, db: Database, source: str, mode: str, tables: list[str] | None = None) -> Replica:
        """Host a replica of database ``source`` in ``db`` (an existing one of the same mode is kept)."""
        key = (db.replication.uuid, source)
        with self.holdings.lock:
            hosted = self.holdings.hosted(key)
            check_filter(db, source, tables_of(tables))
            if hosted is not None and hosted.replica.mode == mode or hosted is not None and mode == "one-way":
                return hosted.replica
            replica = Replica(db, source, mode, tables=tables).register()
            self.holdings.host(key, replica)
            self.node.subscribe(TOPIC + source, self._on_topic, inline=True)
            self.queue_requests(replica.start())
        self._announce()
        self._waker.set()
        return replica

    def unreplicate(self, db: Database, source: str) -> bool:
        """Stop replicating ``source`` into ``db`` and forget the registration (the data stays); False if none."""
        hosted, still_used = self.holdings.unhost((db.replication.uuid, source))
        if hosted is None:
            return False
        unregister(db, source)
        if not still_used:
            self.node.unsubscribe(TOPIC + source)
        self._announce()
        return True

    def _announce(self) -> None:
        self.node.set_service_info(SERVICE, self.holdings.info().to_wire())
        self._info_at = time.monotonic()

    # --- where sources are ----------------------------------------------------------------------------------
    def source_owners(self) -> dict[str, str]:
        """Source uuid -> node serving it (this node for its own sources)."""
        owners = source_owners(self.node.directory())
        for source in self.holdings.snapshot()[1]:
            owners[source.publisher.uuid] = self.node.id
        return owners

    def replica_holder(self, target: str, source: str) -> tuple[str, str] | None:
        """(node id, path) of database `target` if it replicates `source` somewhere in the mesh."""
        found = replica_holder(self.node.directory(), target, source)
        if found is not None:
            return found
        hosted = self.holdings.hosted((target, source))
        return (self.node.id, hosted.replica.db.path) if hosted is not None else None

    # --- asking for steps ------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Make the service run a step now (from any thread)."""
        self._waker.set()

    def queue_requests(self, requests: list[Reply]) -> None:
        """Send replicas' requests to their sources' nodes on the service's next step."""
        self._outbox.add(requests)

    # --- the service's steps: a task of the node's socket loop (loop.LoopTask) ----------------------------------
    # Live entries arrive on the loop (inline callbacks queue them), commits of any process ring the served
    # databases' doorbells, which the loop waits on with its sockets, and what a step publishes is flushed in the
    # same turn: no thread hand-off from a commit to its frame on the wire, nor from a frame to its apply.
    @property
    def pending(self) -> bool:
        return self._waker.pending

    def fileno(self) -> int:
        return self._waker.fileno()

    def collect(self) -> bool:
        return self._waker.collect()

    def step(self) -> None:
        """One step: what arrived, the served journals, the replicas' ticks; then when the next is due."""
        waker = self._waker
        waker.owner = threading.get_ident()
        self._woken = waker.pending
        waker.pending = False  # cleared before the step: a wake-up during it runs another step
        if self._woken:
            self.counters["wakeups"] += 1
        try:
            self._step()
        except Exception:  # a node never dies of replication trouble; the cause is logged
            log.exception("replication step failed")
        finally:
            self._commits.end()
            # Always: a step that keeps failing must wait for its interval, not run again in every loop turn.
            self.deadline = time.monotonic() + step_interval(self.holdings, bool(self._outbox), self.poll_interval)

    def _step(self) -> None:
        self.holdings.settle()
        self._commits.begin()
        arrived, more = self._inbox.take(SLICE_FRAMES, SLICE_BYTES, TARGETED_SLICE_BYTES)
        if more:
            self._waker.pending = True  # the loop serves its sockets, then steps again at once
        if arrived:
            self.take(arrived)
        _databases, sources, hosted_list = self.holdings.snapshot()
        self._commits.polling()  # (commits before this, the applies of this step, woke nobody)
        for source in sources:
            messages = source.publisher.poll(SLICE_MESSAGES)
            if len(messages) == SLICE_MESSAGES:
                self._waker.pending = True  # more may wait: the rest in the next step, after the loop's sockets
            for message in messages:
                if not self._woken:
                    self.counters["found_by_polling"] += 1
                self.node.publish(TOPIC + source.publisher.uuid, encode(message))
                self.counters["published"] += 1
                # Replicas on this very node get the entries directly (a node does not receive its own topics).
                if self.holdings.follows(message.source):
                    self._deliver(message, None)
        now = time.monotonic()
        # A step that something woke (entries arrived, a commit rang) does only that work; the routine below runs
        # at its own pace, REPLICA_TICK apart, or at once when requests wait, a link came up or a divergence check
        # is under way. A stream of small commits then costs each node less a step.
        if (
            self._woken
            and now < self._routine_due
            and not self._outbox
            and not self.holdings.link_came_up
            and not self.divergence.under_way
        ):
            return
        self._routine_due = now + REPLICA_TICK
        self._routine(hosted_list, now)

    def _routine(self, hosted_list: list[Hosted], now: float) -> None:
        """Hosted replicas' ticks and catching up, divergence checks, announcements, requests to send."""
        restored = self.holdings.take_link_up()
        known = {}
        if now - self._info_at >= INFO_EVERY:
            known = self.holdings.source_sequences(source_progress(self.node.directory()), self._source_clocks)
        for hosted in hosted_list:
            if restored:
                hosted.link_restored()
            self.queue_requests(hosted.tick(known, self._source_clocks, now))
        self.divergence.step(hosted_list, now)
        if known:
            self._announce()
        self._send_requests()

    def take(self, arrived: list[Arrival]) -> None:
        """Handle what arrived, in order (live entries of one source that arrived together are applied together)."""
        coalesce(arrived, self._decode, lambda message: self._deliver(message, None), self._handle)

    def _decode(self, payload: bytes, origin: str, start: int = 0) -> Message | None:
        self.counters["received"] += 1
        try:
            return decode(payload, start)
        except (MalformedEntry, UnicodeDecodeError) as error:
            self.counters["malformed"] += 1
            log.warning("dropped a malformed replication frame from %s: %s", origin, error)
            return None

    def _handle(self, payload: bytes, origin: str) -> None:
        """A targeted frame: a request to a source served here, or an answer for one of our replicas."""
        try:
            target = payload[:UUID_LENGTH].decode()
        except UnicodeDecodeError as error:
            self.counters["received"] += 1
            self.counters["malformed"] += 1
            log.warning("dropped a malformed replication frame from %s: %s", origin, error)
            return
        message = self._decode(payload, origin, UUID_LENGTH)  # (no copy of a large frame)
        if isinstance(message, (Request, SnapshotAck)):
            self.serve(message, origin)
        elif message is not None:
            self._deliver(message, target)

    def _deliver(self, message: Message, target: str | None) -> None:
        source = getattr(message, "source", None)
        for hosted in self.holdings.following(source, target):
            if hosted.paused:
                if isinstance(message, Entries):  # keep the lag of a paused replica true
                    hosted.replica.source_last = max(hosted.replica.source_last, message.last, message.last_seq)
                continue
            before = hosted.replica.hwm
            self.queue_requests(hosted.replica.receive(message))
            if hosted.replica.hwm != before:
                hosted.last_progress = time.monotonic()

    def serve(self, request: Reply, origin: str) -> None:
        """Answer a replica's request for a source served here, on a serving thread (unknown sources: ignored), or
        hand an acknowledgement of snapshot chunks to the answer under way."""
        if isinstance(request, SnapshotAck):
            return self._server.acknowledge(request)
        source = self.holdings.source(request.source)
        if source is not None:  # else not (or no longer) ours: the replica will ask again and find the right node
            db = source.db
            self.holdings.lease(db)  # (on the service's thread: it cannot have been released since `source`)
            self._server.submit(source.publisher, request, origin, lambda: self.holdings.unlease(db))

    def _answer(self, origin: str, frame: bytes) -> threading.Event:
        """Hand an answer frame to the loop (serving threads): the loop's marker for it (replication_serving)."""
        if origin == self.node.id:
            self._inbox.targeted(frame, origin)
            self._waker.set()
        else:
            self.node.send(origin, KIND, frame)
        return self.node.turn_marker()

    def _send_requests(self) -> None:
        routed = self._outbox.route(self.source_owners)
        for request in routed.missing:
            self._on_replica(request, stall_for_missing_source)
        for request in routed.found:
            self._on_replica(request, clear_missing_source)
        for owner, request in routed.send:
            if owner == self.node.id:
                self.serve(request, self.node.id)
                continue
            try:
                self.node.send(owner, KIND, request.replica.encode() + encode(request))
            except PyNNDBError as error:
                log.info("request for %s not sent: %s", request.source, error)

    def _on_replica(self, request: Reply, change: Callable[[Replica], None]) -> None:
        hosted = self.holdings.hosted((request.replica, request.source))
        if hosted is not None:
            change(hosted.replica)

    # --- mesh callbacks (mesh threads: only queue) ----------------------------------------------------------
    def _on_topic(self, topic: str, payload: bytes, origin: str) -> None:
        self._inbox.topic(payload, origin)
        self._waker.set()

    def _on_message(self, payload: bytes, origin: str) -> None:
        self._inbox.targeted(payload, origin)
        self._waker.set()

    def _on_peer_change(self, node_id: str, change: str) -> None:
        if change == "up":
            self.holdings.link_up()  # the next step (on the loop thread) tells the hosted replicas
            self._waker.set()
        else:
            self._server.forget(node_id)  # answers to it end: its replicas ask again when it is back

    def stop(self) -> None:
        """Stop the service's steps and release the databases."""
        self.node.stop_task(self)
        self.divergence.stop()
        self.commands.digests.stop()
        self._waker.close()
        self._server.stop()
        self.holdings.release()


def step_interval(holdings: Holdings, waiting: bool, poll_interval: float) -> float:
    """How long the service may sleep unless woken: it polls only journals it has no doorbell for, and requests
    waiting for their source's node; hosted replicas tick (re-sending unanswered requests)."""
    hosting, serving = holdings.busy()
    if not (hosting or serving or waiting):
        return 1.0
    if waiting or not holdings.all_watched:
        return poll_interval
    return REPLICA_TICK if hosting else SAFETY_POLL
