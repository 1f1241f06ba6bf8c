"""The replication service of a node: serves registered databases as sources and keeps replicas in sync.

The mesh only moves the replication engine's frames: live entries are published on topic ``db:<uuid>``; requests
(gap repair, snapshots) and their answers are targeted messages of kind ``repl``. All replica state lives in the
databases (marks, registrations), so a restarted node resumes where it stood. One service thread owns every
`Replica` and `Publisher`; command handlers only queue work for it or read.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pynndb.core import registry
from pynndb.core.database import Database
from pynndb.errors import CommandError, MalformedEntry, MeshError, PyNNDBError
from pynndb.mesh.commands import BAD_PARAMS, NOT_FOUND
from pynndb.mesh.divergence import DivergenceDetector
from pynndb.mesh.watch import Waker
from pynndb.replication.digest import sequenced_summary, table_content
from pynndb.replication.messages import Entries, Message, Request, decode, encode
from pynndb.replication.replica import Replica, check_filter, filters, registrations, unregister
from pynndb.replication.source import Publisher
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
CATCH_UP_AFTER = 0.25
INFO_EVERY = 0.5
SOURCE_MISSING_AFTER = 3.0


@dataclass
class Source:
    db: Database
    publisher: Publisher


@dataclass
class Hosted:
    replica: Replica
    paused: bool = False
    last_progress: float = field(default_factory=time.monotonic)


class ReplicationService:
    """Attach to a Controller: adds REGISTER, UNREGISTER, REPLICATE, UNREPLICATE, STOP, START, DIGEST, DUMP,
    VERIFY, RESYNC and per-database figures in STATUS."""

    def __init__(self, node: Controller, poll_interval: float = POLL_IDLE) -> None:
        self.node = node
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._databases: dict[str, Database] = {}  # by path
        self._sources: dict[str, Source] = {}  # by uuid
        self._replicas: dict[tuple[str, str], Hosted] = {}  # by (target uuid, source uuid)
        self._inbox: queue.SimpleQueue[tuple[str, bytes, str]] = queue.SimpleQueue()
        self._outbox: list[tuple[Request, float]] = []  # requests waiting for their source to be found
        self._servers = ThreadPoolExecutor(2, thread_name_prefix=f"pynndb-{node.label}-serve")
        self._stop = threading.Event()
        self._wake = Waker()
        self._info_at = 0.0
        self._woken = False
        self._all_watched = True  # every served database has a doorbell (else poll the journals)
        self.counters = {"published": 0, "received": 0, "malformed": 0, "requests_served": 0, "found_by_polling": 0}
        self._source_clocks: dict[str, int] = {}  # source uuid -> clock of its latest entry, from announcements
        self.divergence = DivergenceDetector(self)
        for name, handler in [
            ("REGISTER", self.cmd_register),
            ("UNREGISTER", self.cmd_unregister),
            ("REPLICATE", self.cmd_replicate),
            ("UNREPLICATE", self.cmd_unreplicate),
            ("STOP", self.cmd_stop),
            ("START", self.cmd_start),
            ("DIGEST", self.cmd_digest),
            ("DUMP", self.cmd_dump),
            ("DATABASES", self.cmd_databases),
            ("VERIFY", self.divergence.cmd_verify),
            ("RESYNC", self.divergence.cmd_resync),
        ]:
            node.register_command(name, handler)
        builtin_status = node.command("STATUS")
        self._builtin_status = builtin_status.handler if builtin_status is not None else None
        node.register_command("STATUS", self.cmd_status)
        node.on_message(KIND, self._on_message, inline=True)
        node.on_peer_change(self._on_peer_change)
        self._thread = threading.Thread(target=self._run, name=f"pynndb-{node.label}-replication", daemon=True)
        self._thread.start()

    # --- databases ------------------------------------------------------------------------------------------
    def open(self, path: str) -> Database:
        """Open (or share) the database at `path`; it must already exist."""
        real = os.path.realpath(path)
        with self._lock:
            db = self._databases.get(real)
            if db is not None and not db.closed:
                return db
            if not os.path.isfile(os.path.join(real, "data.mdb")):
                raise CommandError(f"{path} is not a pynndb database (no data.mdb)", NOT_FOUND)
            db = registry.open_database(real, real)
            db.add_listener(self._wake.set)
            self._databases[real] = db
            return db

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
        with self._lock:
            if db.replication.uuid in self._sources:
                return
            self._sources[db.replication.uuid] = Source(db, Publisher(db))
            watched = self._wake.watch(db.path)
            self._all_watched = self._all_watched and watched
        self._announce()

    def replicate(self, db: Database, source: str, mode: str, tables: list[str] | None = None) -> Replica:
        key = (db.replication.uuid, source)
        with self._lock:
            hosted = self._replicas.get(key)
            check_filter(db, source, tables_of(tables))
            if hosted is not None and hosted.replica.mode == mode or hosted is not None and mode == "one-way":
                return hosted.replica
            replica = Replica(db, source, mode, tables=tables)
            self._replicas[key] = Hosted(replica)
            self._subscribe(source)
            self._queue_requests(replica.start())
        self._announce()
        self._wake.set()
        return replica

    def _subscribe(self, source: str) -> None:
        self.node.subscribe(TOPIC + source, self._on_topic, inline=True)

    def _announce(self) -> None:
        with self._lock:
            sources = {
                uuid: {
                    "path": state.db.path,
                    "seq": state.publisher.published,
                    "clock": state.publisher.published_clock,
                }
                for uuid, state in self._sources.items()
            }
            replicas: dict[str, Any] = {}
            for (target, source), hosted in self._replicas.items():
                entry = replicas.setdefault(target, {"path": hosted.replica.db.path, "sources": {}})
                entry["sources"][source] = {"mode": hosted.replica.mode, "hwm": hosted.replica.hwm}
        self.node.set_service_info("replication", {"sources": sources, "replicas": replicas})
        self._info_at = time.monotonic()

    # --- the service thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # a node never dies of replication trouble; the cause is logged
                log.exception("replication step failed")
            with self._lock:
                busy = bool(self._sources or self._replicas or self._outbox)
            # Commits of any process ring the served databases' doorbells and messages set the waker, so the
            # thread sleeps until then; it polls only journals it has no doorbell for, and waiting requests.
            with self._lock:
                waiting = bool(self._outbox)
                hosting = bool(self._replicas)
            if not busy:
                interval = 1.0
            elif waiting or not self._all_watched:
                interval = self.poll_interval
            elif hosting:
                interval = REPLICA_TICK
            else:
                interval = SAFETY_POLL
            self._woken = self._wake.wait(interval)

    def _step(self) -> None:
        arrived = []
        for _ in range(1000):
            try:
                arrived.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        self._take(arrived)
        with self._lock:
            sources = list(self._sources.values())
            hosted_list = list(self._replicas.values())
        for source in sources:
            for message in source.publisher.poll():
                if not self._woken:
                    self.counters["found_by_polling"] += 1
                self.node.publish(TOPIC + source.publisher.uuid, encode(message))
                self.counters["published"] += 1
                # Replicas on this very node get the entries directly (a node does not receive its own topics).
                self._deliver_local(message)
        now = time.monotonic()
        known = self._source_sequences() if now - self._info_at >= INFO_EVERY else {}
        for hosted in hosted_list:
            replica = hosted.replica
            if replica.source in known:
                replica.source_last = max(replica.source_last, known[replica.source])
                replica.source_clock = max(replica.source_clock, self._source_clocks.get(replica.source, 0))
            if hosted.paused:
                continue
            requests = replica.tick()
            behind = known.get(replica.source, 0) > replica.hwm
            if (
                not requests
                and behind
                and replica._requested_at is None
                and now - hosted.last_progress > CATCH_UP_AFTER
            ):
                requests = [replica._request()]
            self._queue_requests(requests)
        self.divergence.step(hosted_list, now)
        if known:
            self._announce()
        self._flush_requests()

    def _take(self, arrived: list[tuple[str, bytes, str]]) -> None:
        """Handle what arrived, in order; live entries of one source that arrived together are applied together.

        A replica that fell behind a burst of small commits then catches up in one transaction, not one per message."""
        merged: Entries | None = None
        for kind, payload, origin in arrived:
            if kind == "topic":
                self.counters["received"] += 1
                message = self._decode(payload, origin)
                if isinstance(message, Entries):
                    if merged is not None and merged.source == message.source:
                        merged = Entries(
                            message.source, merged.entries + message.entries, max(merged.last, message.last)
                        )
                    else:
                        if merged is not None:
                            self._deliver(merged, None)
                        merged = message
                    continue
                if merged is not None:
                    self._deliver(merged, None)
                    merged = None
                if message is not None:
                    self._deliver(message, None)
                continue
            if merged is not None:
                self._deliver(merged, None)
                merged = None
            self._handle(kind, payload, origin)
        if merged is not None:
            self._deliver(merged, None)

    def _decode(self, payload: bytes, origin: str) -> Message | None:
        try:
            return decode(payload)
        except (MalformedEntry, UnicodeDecodeError) as error:
            self.counters["malformed"] += 1
            log.warning("dropped a malformed replication frame from %s: %s", origin, error)
            return None

    def _handle(self, kind: str, payload: bytes, origin: str) -> None:
        """A targeted frame: a request to a source served here, or an answer for one of our replicas."""
        self.counters["received"] += 1
        try:
            target = payload[:UUID_LENGTH].decode()
        except UnicodeDecodeError as error:
            self.counters["malformed"] += 1
            log.warning("dropped a malformed replication frame from %s: %s", origin, error)
            return
        message = self._decode(payload[UUID_LENGTH:], origin)
        if isinstance(message, Request):
            self._serve(message, origin)
        elif message is not None:
            self._deliver(message, target)

    def _deliver(self, message: Message, target: str | None) -> None:
        source = getattr(message, "source", None)
        with self._lock:
            hosted_list = [
                hosted
                for (replica_uuid, source_uuid), hosted in self._replicas.items()
                if source_uuid == source and (target is None or replica_uuid == target)
            ]
        for hosted in hosted_list:
            if hosted.paused:
                if isinstance(message, Entries):  # keep the lag of a paused replica true
                    hosted.replica.source_last = max(hosted.replica.source_last, message.last, message.last_seq)
                continue
            before = hosted.replica.hwm
            self._queue_requests(hosted.replica.receive(message))
            if hosted.replica.hwm != before:
                hosted.last_progress = time.monotonic()

    def _deliver_local(self, message: Entries) -> None:
        with self._lock:
            local = any(source == message.source for (_target, source) in self._replicas)
        if local:
            self._deliver(message, None)

    def _serve(self, request: Request, origin: str) -> None:
        with self._lock:
            source = self._sources.get(request.source)
        if source is None:
            return  # not (or no longer) ours: the replica will ask again and find the right node

        def answer() -> None:
            prefix = request.replica.encode()
            try:
                for message in source.publisher.serve(request):
                    frame = prefix + encode(message)
                    if origin == self.node.id:
                        self._inbox.put(("targeted", frame, origin))
                        self._wake.set()
                    else:
                        self.node.send(origin, KIND, frame)
                self.counters["requests_served"] += 1
            except MeshError as error:
                # The requester went away (killed, restarted with a new id): it will ask again when back.
                log.info("answer to %s for %s dropped: %s", origin, request.source, error)
            except Exception:
                log.exception("serving a replication request failed")

        self._servers.submit(answer)

    # --- requests -------------------------------------------------------------------------------------------
    def _queue_requests(self, requests: list[Request]) -> None:
        if requests:
            with self._lock:
                self._outbox.extend((request, time.monotonic()) for request in requests)

    def _flush_requests(self) -> None:
        with self._lock:
            waiting, self._outbox = self._outbox, []
        if not waiting:
            return
        owners = self._source_owners()
        for request, since in waiting:
            owner = owners.get(request.source)
            if owner is None:
                waited = time.monotonic() - since
                if waited > SOURCE_MISSING_AFTER:
                    self._report_missing(request)
                if waited < 30:
                    with self._lock:
                        self._outbox.append((request, since))  # its source is not known yet: keep asking
                continue
            self._clear_missing(request)
            frame = request.replica.encode() + encode(request)
            if owner == self.node.id:
                self._serve(request, self.node.id)
            else:
                try:
                    self.node.send(owner, KIND, frame)
                except PyNNDBError as error:
                    log.info("request for %s not sent: %s", request.source, error)

    def _report_missing(self, request: Request) -> None:
        with self._lock:
            hosted = self._replicas.get((request.replica, request.source))
        if hosted is not None and hosted.replica.state != "stalled":
            hosted.replica.state = "stalled"
            hosted.replica.reason = f"source {request.source} is not registered on any node of the mesh (yet)"

    def _clear_missing(self, request: Request) -> None:
        with self._lock:
            hosted = self._replicas.get((request.replica, request.source))
        if hosted is not None and hosted.replica.reason and hosted.replica.reason.startswith("source "):
            hosted.replica.reason = None
            hosted.replica.state = "live" if hosted.replica.hwm >= hosted.replica.source_last else "syncing"

    def _source_owners(self) -> dict[str, str]:
        owners: dict[str, str] = {}
        heard: dict[str, float] = {}
        for node_id, entry in self.node.directory().items():
            if not entry.get("alive", True):
                continue
            info = (entry.get("services") or {}).get("replication") or {}
            seen = entry.get("last_seen", 0.0)
            for uuid in info.get("sources", {}):
                # A restarted node has a new id while its old entry lingers: trust the one heard from last.
                if seen >= heard.get(uuid, -1.0):
                    owners[uuid], heard[uuid] = node_id, seen
        with self._lock:
            for uuid in self._sources:
                owners[uuid] = self.node.id
        return owners

    def _source_sequences(self) -> dict[str, int]:
        sequences: dict[str, int] = {}
        for entry in self.node.directory().values():
            info = (entry.get("services") or {}).get("replication") or {}
            for uuid, state in info.get("sources", {}).items():
                sequences[uuid] = max(sequences.get(uuid, 0), int(state.get("seq", 0)))
                clock = state.get("clock")
                if isinstance(clock, int) and clock > self._source_clocks.get(uuid, 0):
                    self._source_clocks[uuid] = clock  # the latest entry's time: lag stays true while it is idle
        with self._lock:
            for uuid, source in self._sources.items():
                sequences[uuid] = source.db.replication.sequence
                self._source_clocks[uuid] = max(self._source_clocks.get(uuid, 0), source.publisher.published_clock)
        return sequences

    # --- mesh callbacks (mesh threads: only queue) ----------------------------------------------------------
    def _on_topic(self, topic: str, payload: bytes, origin: str) -> None:
        self._inbox.put(("topic", payload, origin))
        self._wake.set()

    def _on_message(self, payload: bytes, origin: str) -> None:
        self._inbox.put(("targeted", payload, origin))
        self._wake.set()

    def _on_peer_change(self, node_id: str, change: str) -> None:
        if change == "up":
            with self._lock:
                for hosted in self._replicas.values():
                    hosted.last_progress = 0.0  # let the catch-up check ask at once
            self._wake.set()

    # --- commands (params validated against pynndb.mesh.command_specs.replication before a handler runs) ----------
    def cmd_register(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """REGISTER {'path'}: serve this database (opened with replication on) as a source to the mesh."""
        db = self.open(params["path"])
        if not db.replication.enabled:
            raise CommandError(
                f"{db.path} does not keep a journal: open it with config={{'replication': True}}", BAD_PARAMS
            )
        self.register(db)
        return {"uuid": db.replication.uuid, "path": db.path, "sequence": db.replication.sequence}

    def cmd_unregister(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """UNREGISTER {'path'}: stop serving this database as a source (replicas keep what they have)."""
        db = self.open(params["path"])
        with self._lock:
            removed = self._sources.pop(db.replication.uuid, None)
        if removed is None:
            raise CommandError(f"{db.path} is not registered on this node", NOT_FOUND)
        self._announce()
        return {"uuid": db.replication.uuid, "unregistered": True}

    def cmd_replicate(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """REPLICATE {'path', 'uuid', 'mode'?, 'tables'?}: make the database at path a replica of database uuid.

        mode: 'one-way' (read-only copy), 'two-way' (a writable pair), or 'auto' (default: two-way when the
        source already replicates this database, which also turns that side into two-way, with the same tables).
        tables: only these tables; another filter for a registered replica is refused (filter_conflict)."""
        source, mode, tables = params["uuid"], params.get("mode", "auto"), params.get("tables")
        db = self.open(params["path"])
        if source == db.replication.uuid:
            raise CommandError("a database cannot replicate itself", BAD_PARAMS)
        check_filter(db, source, tables_of(tables))  # before the other side of a pair is changed
        reverse = self._replicates(source, db.replication.uuid)
        if mode == "auto":
            mode = "two-way" if reverse is not None else "one-way"
        if mode == "two-way":
            if not db.replication.enabled:
                db.replication.enable(True)
            if reverse is not None:
                node_id, other_path = reverse
                other = {"path": other_path, "uuid": db.replication.uuid, "mode": "two-way"}
                if tables is not None:
                    other["tables"] = tables
                self.node.call("REPLICATE", other, target=node_id)
        replica = self.replicate(db, source, mode, tables)
        result = {"path": db.path, "uuid": db.replication.uuid, "source": source, "mode": replica.mode}
        return {**result, "tables": listed(replica.tables)}

    def _replicates(self, target: str, source: str) -> tuple[str, str] | None:
        """(node id, path) of database `target` if it replicates `source` somewhere in the mesh."""
        for node_id, entry in self.node.directory().items():
            info = (entry.get("services") or {}).get("replication") or {}
            replica = info.get("replicas", {}).get(target)
            if replica and source in replica.get("sources", {}):
                return node_id, replica["path"]
        with self._lock:
            hosted = self._replicas.get((target, source))
            if hosted is not None:
                return self.node.id, hosted.replica.db.path
        return None

    def cmd_unreplicate(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """UNREPLICATE {'path', 'uuid'}: stop replicating database uuid into path (its data stays)."""
        db = self.open(params["path"])
        source = params["uuid"]
        with self._lock:
            hosted = self._replicas.pop((db.replication.uuid, source), None)
            still_used = any(other == source for (_target, other) in self._replicas)
        if hosted is None:
            raise CommandError(f"{db.path} does not replicate {source} on this node", NOT_FOUND)
        unregister(db, source)
        if not still_used:
            self.node.unsubscribe(TOPIC + source)
        self._announce()
        return {"path": db.path, "source": source, "unreplicated": True}

    def _select(self, params: dict[str, Any]) -> list[Hosted]:
        path, source = params.get("path"), params.get("uuid")
        with self._lock:
            chosen = [
                hosted
                for (target, origin), hosted in self._replicas.items()
                if (path is None or os.path.realpath(path) == hosted.replica.db.path)
                and (source is None or source == origin)
            ]
        if not chosen and (path is not None or source is not None):
            raise CommandError("no replica on this node matches", NOT_FOUND)
        return chosen

    def cmd_stop(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """STOP {'path'?, 'uuid'?}: pause matching replicas (all on this node by default); they keep their mark."""
        chosen = self._select(params)
        for hosted in chosen:
            hosted.paused = True
        return {"paused": len(chosen)}

    def cmd_start(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """START {'path'?, 'uuid'?}: resume paused replicas from where they stood."""
        chosen = self._select(params)
        for hosted in chosen:
            if hosted.paused:
                hosted.paused = False
                self._queue_requests(hosted.replica.start())
        self._wake.set()
        return {"resumed": len(chosen)}

    def _database(self, uuid: str) -> Database:
        with self._lock:
            for db in self._databases.values():
                if not db.closed and db.replication.uuid == uuid:
                    return db
        raise CommandError(f"database {uuid} is not on this node", NOT_FOUND)

    def cmd_digest(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """DIGEST {'uuid'}: per table index definitions, record count and content digest of a database here, and
        the journal sequence they were taken at (one read transaction)."""
        db = self._database(params["uuid"])
        sequence, tables = sequenced_summary(db)
        return {"uuid": db.replication.uuid, "sequence": sequence, "tables": tables}

    def cmd_dump(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """DUMP {'uuid', 'table'}: one table's index definitions and documents (for diff)."""
        db = self._database(params["uuid"])
        return table_content(db, params["table"])

    def cmd_databases(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """DATABASES: the databases this node serves and replicates, with their figures."""
        return {"databases": self.figures()}

    def cmd_status(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """STATUS: node health, links, message counters, and per database: sequence, journal range, replicas."""
        result = dict(self._builtin_status(params, context)) if self._builtin_status else {}
        result["databases"] = self.figures()
        result["replication"] = {**self.counters, **{f"verify_{k}": v for k, v in self.divergence.counters.items()}}
        return result

    def figures(self) -> dict[str, Any]:
        """Per database path: uuid, sequence, retained journal range, role, and each replica's status."""
        with self._lock:
            databases = list(self._databases.values())
            sources = set(self._sources)
            hosted_list = list(self._replicas.values())
        result: dict[str, Any] = {}
        for db in databases:
            if db.closed:
                continue
            first, last = db.replication.retained
            result[db.path] = {
                "uuid": db.replication.uuid,
                "sequence": last,
                "retained": [first, last],
                "source": db.replication.uuid in sources,
                "read_only": db.replication.read_only,
                "replicas": [],
            }
        for hosted in hosted_list:
            entry = result.get(hosted.replica.db.path)
            if entry is not None:
                status = hosted.replica.status()
                status["paused"] = hosted.paused
                status.update(self.divergence.status(hosted.replica))
                entry["replicas"].append(status)
        return result

    def stop(self) -> None:
        """Stop the service thread and release the databases."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.divergence.stop()
        self._wake.close()
        self._servers.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            databases = list(self._databases.values())
            self._databases.clear()
            self._sources.clear()
            self._replicas.clear()
        for db in databases:
            db.remove_listener(self._wake.set)
            registry.release(db)


Handler = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
