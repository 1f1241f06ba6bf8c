"""What a node's replication service holds: open databases, the sources it serves, the replicas it hosts.

Thread-safe (one lock): the service's steps (on the node loop), command handlers and mesh callbacks all read it;
only the service's methods change it. It also says what the node advertises (`ReplicationInfo`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pynndb.core import registry
from pynndb.core.database import Database
from pynndb.errors import CommandError
from pynndb.mesh.commands import NOT_FOUND
from pynndb.mesh.replication_info import ReplicaInfo, ReplicaSourceInfo, ReplicationInfo, SourceInfo
from pynndb.mesh.watch import Waker
from pynndb.replication.messages import Reply
from pynndb.replication.replica import Replica
from pynndb.replication.source import Publisher

Key = tuple[str, str]  # (replica database uuid, source uuid)
CATCH_UP_AFTER = 0.25  # seconds a hosted replica known to be behind waits for entries before it asks


@dataclass
class Source:
    db: Database
    publisher: Publisher


@dataclass
class Hosted:
    replica: Replica
    paused: bool = False
    last_progress: float = field(default_factory=time.monotonic)

    def link_restored(self) -> None:
        """A mesh link came (back) up: ask at once if behind, and do not wait long for a request the fault lost."""
        self.last_progress = 0.0  # the catch-up check asks at once
        self.replica.link_restored()

    def tick(self, known: dict[str, int], clocks: dict[str, int], now: float) -> list[Reply]:
        """The replica's periodic part: what its source is known to have reached (`known`: source -> sequence,
        `clocks`: source -> its latest entry's clock), its requests to re-send, and one to catch up when it stayed
        behind without asking for CATCH_UP_AFTER."""
        replica = self.replica
        if replica.source in known:
            replica.source_last = max(replica.source_last, known[replica.source])
            replica.source_clock = max(replica.source_clock, clocks.get(replica.source, 0))
        if self.paused:
            return []
        requests = replica.tick()
        behind = known.get(replica.source, 0) > replica.hwm
        if not requests and behind and replica.requested_at is None and now - self.last_progress > CATCH_UP_AFTER:
            requests = [replica.request()]
        return requests


class Holdings:
    """Databases by path, served sources by uuid, hosted replicas by (replica uuid, source uuid)."""

    def __init__(self, waker: Waker, on_commit: Callable[[], None] | None = None) -> None:
        self.lock = threading.RLock()
        self._waker = waker
        # Called after each commit this process makes to a database held here (default: wake the service).
        self._on_commit = waker.set if on_commit is None else on_commit
        self._databases: dict[str, Database] = {}
        self._sources: dict[str, Source] = {}
        self._replicas: dict[Key, Hosted] = {}
        self.all_watched = True  # every served database has a doorbell (else the service polls the journals)
        self._restored = False  # a mesh link came up since the service last looked
        self._unwatched: list[str] = []  # paths of databases no longer served, whose doorbells are still watched
        # Real paths of databases no longer served or hosted here: the service's next step releases each one that
        # no answer, digest or command is using (`_leases`: real path -> uses under way off the service's thread).
        self._idle: set[str] = set()
        self._leases: dict[str, int] = {}

    def open(self, path: str) -> Database:
        """Open (or share) the database at `path`; it must already exist."""
        real = os.path.realpath(path)
        with self.lock:
            db = self._databases.get(real)
            if db is not None and not db.closed:
                return db
            if not os.path.isfile(os.path.join(real, "data.mdb")):
                raise CommandError(f"{path} is not a pynndb database (no data.mdb)", NOT_FOUND)
            db = registry.open_database(real, real)
            db.add_listener(self._on_commit)
            self._databases[real] = db
            return db

    @contextmanager
    def open_checked(self, path: str, check: Callable[[Database], None]) -> Iterator[Database]:
        """Open (or share) the database at `path` and run `check` on it, under the lock; leased while the block
        runs (a command's work on it). When `check` refuses it (raises), a database this call opened is released
        again: a refused command leaves nothing open (no other thread can have taken it meanwhile, since the lock
        was held from its opening to its release)."""
        with self.lock:
            before = self._databases.get(os.path.realpath(path))
            held = before is not None and not before.closed
            db = self.open(path)
            try:
                check(db)
            except BaseException:
                if not held:
                    del self._databases[os.path.realpath(path)]
                    self._let_go(db)
                raise
            self.lease(db)
        try:
            yield db
        finally:
            self.unlease(db)

    @contextmanager
    def opened(self, path: str) -> Iterator[Database | None]:
        """The database at `path` if this node has it open, without opening it (a database the node does not hold
        cannot be served or hosted here: commands that only undo those need not open it); leased while the block
        runs."""
        with self.lock:
            db = self._databases.get(os.path.realpath(path))
            if db is not None and not db.closed:
                self.lease(db)
            else:
                db = None
        try:
            yield db
        finally:
            if db is not None:
                self.unlease(db)

    def serve(self, db: Database) -> bool:
        """Serve ``db`` as a source; False if it already was."""
        with self.lock:
            if db.replication.uuid in self._sources:
                return False
            self._sources[db.replication.uuid] = Source(db, Publisher(db))
            watched = self._waker.watch(db.path)
            self.all_watched = self.all_watched and watched
        return True

    def unserve(self, db: Database) -> bool:
        """Stop serving ``db``; False if it was not served here. The service's next step stops watching its
        doorbell (other processes' commits to it no longer wake the node) and releases it once nothing here uses
        it (`settle`)."""
        with self.lock:
            if self._sources.pop(db.replication.uuid, None) is None:
                return False
            self._unwatched.append(db.path)
            self._idle.add(os.path.realpath(db.path))
        self._waker.set()
        return True

    def settle(self) -> None:
        """Stop watching the doorbells of databases no longer served, and release the databases neither served nor
        hosted here any more that nothing uses (a user may then delete them, or make a new database at the same
        path: the node opens that one on its next REGISTER or REPLICATE, not the old one). On the service's thread,
        the only one that reads the doorbells and steps publishers and replicas (nothing is closed under them);
        under the lock `serve`, `host` and `lease` take (a database used again meanwhile stays)."""
        if not self._unwatched and not self._idle:
            return
        released = []
        with self.lock:
            paths, self._unwatched = self._unwatched, []
            served = {source.db.path for source in self._sources.values()}
            for path in paths:
                if path not in served:
                    self._waker.unwatch(path)
            held = {os.path.realpath(db.path) for db in served_or_hosted(self._sources, self._replicas)}
            for real in list(self._idle):
                if real in self._leases:
                    continue  # the last use to end wakes the service (`unlease`)
                self._idle.discard(real)
                db = None if real in held else self._databases.pop(real, None)
                if db is not None:
                    released.append(db)
        for db in released:
            self._let_go(db)

    def lease(self, db: Database) -> None:
        """A use of `db` off the service's thread begins (an answer, a digest, a command): it stays open until
        the matching `unlease`, even if it is no longer served or hosted meanwhile."""
        real = os.path.realpath(db.path)
        with self.lock:
            self._leases[real] = self._leases.get(real, 0) + 1

    def unlease(self, db: Database) -> None:
        """A use that `lease` began ends (any thread)."""
        real = os.path.realpath(db.path)
        with self.lock:
            left = self._leases.get(real, 1) - 1
            if left > 0:
                self._leases[real] = left
                return
            self._leases.pop(real, None)
            idle = real in self._idle
        if idle:
            self._waker.set()  # the service's next step releases it

    @contextmanager
    def leased(self, uuid: str) -> Iterator[Database]:
        """The open database with this uuid on this node, leased while the block runs (CommandError not_found
        when there is none)."""
        db = self.database(uuid)  # (leased under the lock it was found under)
        try:
            yield db
        finally:
            self.unlease(db)

    @contextmanager
    def leased_snapshot(self) -> Iterator[tuple[list[Database], list[Source], list[Hosted]]]:
        """`snapshot`, with every database in it leased while the block runs."""
        with self.lock:
            taken = self.snapshot()
            for db in taken[0]:
                self.lease(db)
        try:
            yield taken
        finally:
            for db in taken[0]:
                self.unlease(db)

    def source(self, uuid: str) -> Source | None:
        with self.lock:
            return self._sources.get(uuid)

    def host(self, key: Key, replica: Replica) -> None:
        with self.lock:
            self._replicas[key] = Hosted(replica)

    def hosted(self, key: Key) -> Hosted | None:
        with self.lock:
            return self._replicas.get(key)

    def link_up(self) -> None:
        """A mesh link came up (any thread): the service's next step tells every hosted replica."""
        with self.lock:
            self._restored = True

    @property
    def link_came_up(self) -> bool:
        """Whether `take_link_up` has news (a peek, without the lock: the step that acts on it takes it)."""
        return self._restored

    def take_link_up(self) -> bool:
        """Whether a link came up since the last call (read and cleared under the lock: no report is lost)."""
        with self.lock:
            restored, self._restored = self._restored, False
        return restored

    def unhost(self, key: Key) -> tuple[Hosted | None, bool]:
        """Remove a hosted replica; also say whether another replica here still follows its source."""
        with self.lock:
            hosted = self._replicas.pop(key, None)
            still_used = any(other == key[1] for (_target, other) in self._replicas)
            if hosted is not None:
                self._idle.add(os.path.realpath(hosted.replica.db.path))
        if hosted is not None:
            self._waker.set()
        return hosted, still_used

    def following(self, source: str | None, target: str | None = None) -> list[Hosted]:
        """Hosted replicas of ``source`` (into database ``target`` only, when given)."""
        with self.lock:
            return [
                hosted
                for (replica_uuid, source_uuid), hosted in self._replicas.items()
                if source_uuid == source and (target is None or replica_uuid == target)
            ]

    def follows(self, source: str) -> bool:
        with self.lock:
            return any(other == source for (_target, other) in self._replicas)

    def select(self, params: dict[str, Any]) -> list[Hosted]:
        """Hosted replicas matching ``path`` and ``uuid`` (source) params, all when neither is given."""
        path, source = params.get("path"), params.get("uuid")
        with self.lock:
            chosen = [
                hosted
                for (_target, origin), hosted in self._replicas.items()
                if (path is None or os.path.realpath(path) == hosted.replica.db.path)
                and (source is None or source == origin)
            ]
        if not chosen and (path is not None or source is not None):
            raise CommandError("no replica on this node matches", NOT_FOUND)
        return chosen

    def database(self, uuid: str) -> Database:
        """The open database with this uuid on this node, leased: the caller must `unlease` it (CommandError
        not_found when there is none)."""
        with self.lock:
            for db in self._databases.values():
                if not db.closed and db.replication.uuid == uuid:
                    self.lease(db)
                    return db
        raise CommandError(f"database {uuid} is not on this node", NOT_FOUND)

    def snapshot(self) -> tuple[list[Database], list[Source], list[Hosted]]:
        """A consistent copy: open databases, served sources, hosted replicas."""
        with self.lock:
            return list(self._databases.values()), list(self._sources.values()), list(self._replicas.values())

    def source_sequences(
        self, advertised: tuple[dict[str, int], dict[str, int]], clocks: dict[str, int]
    ) -> dict[str, int]:
        """Source uuid -> its latest sequence known here: what nodes advertise (`advertised`: sequences and clocks,
        see replication_info.source_progress), and their own for the sources served here. `clocks` (source -> the
        time of its latest entry, so lag stays true while a source is idle) is brought up to date."""
        sequences, advertised_clocks = advertised
        for uuid, clock in advertised_clocks.items():
            if clock > clocks.get(uuid, 0):
                clocks[uuid] = clock
        for source in self.snapshot()[1]:
            uuid = source.publisher.uuid
            sequences[uuid] = source.db.replication.sequence
            clocks[uuid] = max(clocks.get(uuid, 0), source.publisher.published_clock)
        return sequences

    def busy(self) -> tuple[bool, bool]:
        """(hosts any replica, serves any source)."""
        with self.lock:
            return bool(self._replicas), bool(self._sources)

    def info(self) -> ReplicationInfo:
        """What this node advertises in its directory entry."""
        with self.lock:
            sources = {
                uuid: SourceInfo(state.db.path, state.publisher.published, state.publisher.published_clock)
                for uuid, state in self._sources.items()
            }
            replicas: dict[str, ReplicaInfo] = {}
            for (target, source), hosted in self._replicas.items():
                replica = hosted.replica
                info = replicas.get(target)
                if info is None:
                    info = replicas[target] = ReplicaInfo(replica.db.path)
                info.sources[source] = ReplicaSourceInfo(replica.mode, replica.hwm)
        return ReplicationInfo(sources, replicas)

    def release(self) -> None:
        """Forget everything and release the databases (the service stopped)."""
        with self.lock:
            databases = list(self._databases.values())
            self._databases.clear()
            self._sources.clear()
            self._replicas.clear()
            self._idle.clear()
        for db in databases:
            self._let_go(db)

    def _let_go(self, db: Database) -> None:
        """This node's use of `db` ends (the registry closes it when no one else in the process uses it)."""
        db.remove_listener(self._on_commit)
        registry.release(db)


def served_or_hosted(sources: dict[str, Source], replicas: dict[Key, Hosted]) -> Iterator[Database]:
    """The databases of served sources and of hosted replicas."""
    for source in sources.values():
        yield source.db
    for hosted in replicas.values():
        yield hosted.replica.db
