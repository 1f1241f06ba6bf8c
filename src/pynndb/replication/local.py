"""`LocalReplicator`: replication between databases in one process, no network (the engine driven directly).

``LocalReplicator(source, target).sync()`` copies everything pending (a snapshot first when needed);
``start()``/``stop()`` keep the target in sync in a background thread that wakes on every commit this process
makes and polls briefly for commits made by other processes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from pynndb.errors import InvalidReplication
from pynndb.replication.messages import Entries, Message, Reply, Request
from pynndb.replication.replica import Replica
from pynndb.replication.source import Publisher

if TYPE_CHECKING:
    from pynndb.core.database import Database

MAX_ROUNDS = 10_000


class _Direction:
    """One direction of replication: a publisher on the source, a replica on the target."""

    def __init__(self, source: Database, target: Database, two_way: bool, tables: Iterable[str] | None) -> None:
        self.publisher = Publisher(source)
        mode = "two-way" if two_way else "one-way"
        self.replica = Replica(target, source.replication.uuid, mode, tables=tables).register()
        self.requests: list[Reply] = self.replica.start()

    def step(self) -> int:
        """Deliver what is pending in this direction; return how many entries were applied."""
        before = self.replica.counters["applied"]
        requests, self.requests = self.requests, []
        for request in requests:
            if isinstance(request, Request):  # served here at once: no flow control, no acknowledgements
                for message in self.publisher.serve(replace(request, window=0)):
                    self._deliver(message)
        for message in self.publisher.poll():
            self._deliver(message)
        self.requests.extend(self.replica.tick())
        return self.replica.counters["applied"] - before

    def _deliver(self, message: Message) -> None:
        self.requests.extend(self.replica.receive(message))

    @property
    def settled(self) -> bool:
        return not self.requests and self.replica.state == "live" and self.replica.hwm >= self._source_sequence()

    def _source_sequence(self) -> int:
        return self.publisher.db.replication.sequence


class LocalReplicator:
    """Keep `target` a replica of `source` (one-way, read-only) or a writable pair with it (`two_way=True`).

    Several replicators into one target make a many-to-one aggregation. `tables`: replicate only these tables
    (both ways for a pair).
    """

    def __init__(
        self,
        source: Database,
        target: Database,
        two_way: bool = False,
        poll_interval: float = 0.005,
        tables: Iterable[str] | None = None,
    ):
        if source is target:
            raise InvalidReplication("source and target must be different databases")
        self.source = source
        self.target = target
        self.two_way = two_way
        self.poll_interval = poll_interval
        chosen = None if tables is None else list(tables)
        self._directions = [_Direction(source, target, two_way, chosen)]
        if two_way:
            self._directions.append(_Direction(target, source, True, chosen))
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def replicas(self) -> list[Replica]:
        return [direction.replica for direction in self._directions]

    def sync(self, max_rounds: int = MAX_ROUNDS) -> int:
        """Apply everything pending (snapshot first if needed); return the number of journal entries applied."""
        applied = 0
        with self._lock:
            for _round in range(max_rounds):
                progress = sum(direction.step() for direction in self._directions)
                applied += progress
                if not progress and all(direction.settled for direction in self._directions):
                    break
        return applied

    def start(self) -> LocalReplicator:
        """Keep syncing in a background thread until `stop()`."""
        if self._thread is not None:
            return self
        self._stop.clear()
        for db in (self.source, self.target):
            db.add_listener(self._wake.set)
        self._thread = threading.Thread(target=self._run, name="pynndb-local-replicator", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync(max_rounds=100)
            except Exception as error:  # keep the thread alive; the error is visible to the caller
                self.error = error
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def stop(self) -> None:
        """Stop the background thread (after one last sync)."""
        if self._thread is None:
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self._thread = None
        for db in (self.source, self.target):
            db.remove_listener(self._wake.set)

    def status(self) -> list[dict[str, object]]:
        """Each direction's replica status."""
        return [replica.status() for replica in self.replicas]

    def __enter__(self) -> LocalReplicator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Entries", "LocalReplicator"]
