"""Digests a divergence check can wait for without holding a replica: DIGEST {'uuid', 'pin': true} answers the
sequence as soon as a read transaction is open on the database, and the digest is taken from that transaction on a
worker meanwhile; DIGEST {'uuid', 'ticket'} answers it when done.

A replica is held at the sequence a check compares at; with a digest that answers only once every document is read
(hundreds of ms for 200k documents, seconds for millions), the replica stood still that long every check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pynndb.errors import CommandError
from pynndb.mesh.commands import BUSY, NOT_FOUND, TIMEOUT
from pynndb.replication.digest import sequenced_summary

if TYPE_CHECKING:
    from pynndb.core.database import Database

WORKERS = 2  # digests taken at once (each reads every document of its database)
KEPT = 16  # tickets kept at most; the oldest go first
KEPT_FOR = 300.0  # seconds a ticket's digest is kept for its caller
PIN_WITHIN = 5.0  # seconds to open the read transaction (the workers may all be busy)


@dataclass
class _Job:
    uuid: str
    future: Future[tuple[int, dict[str, Any]]]
    pinned: threading.Event = field(default_factory=threading.Event)
    sequence: int | None = None
    created: float = field(default_factory=time.monotonic)


class PinnedDigests:
    """Digests by ticket, taken on this node's digest workers."""

    def __init__(self, label: str) -> None:
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"pynndb-{label}-digest")
        self._lock = threading.Lock()
        self._jobs: dict[int, _Job] = {}
        self._tickets = 0

    def pin(self, db: Database, done: Callable[[], None], within: float = PIN_WITHIN) -> tuple[int, int]:
        """Start a digest of `db`: (the sequence it is taken at, its ticket), as soon as its read is open. `done`
        runs when the digest no longer reads `db` (finished, failed or never started)."""
        job = _Job(db.replication.uuid, Future())

        def pinned(sequence: int) -> None:
            job.sequence = sequence
            job.pinned.set()

        def work() -> tuple[int, dict[str, Any]]:
            try:
                return sequenced_summary(db, pinned)
            finally:
                job.pinned.set()  # (failed before its read was open: `pin` says so)
                done()

        try:
            job.future = self._pool.submit(work)
        except RuntimeError:  # stopped
            done()
            raise CommandError("the node is stopping", BUSY) from None
        if not job.pinned.wait(within):
            if job.future.cancel():
                done()
            raise CommandError(f"no digest worker was free within {within:g}s", BUSY)
        if job.sequence is None:
            job.future.result()  # raises what failed
            raise CommandError("the digest did not start", NOT_FOUND)
        with self._lock:
            self._forget_old()
            self._tickets += 1
            ticket = self._tickets
            self._jobs[ticket] = job
        return job.sequence, ticket

    def result(self, uuid: str, ticket: int, wait: float) -> tuple[int, dict[str, Any]]:
        """(sequence, tables) of a pinned digest of database `uuid`, waiting up to `wait` seconds for it."""
        with self._lock:
            job = self._jobs.get(ticket)
        if job is None or job.uuid != uuid:
            raise CommandError(f"no digest with ticket {ticket} on this node (unknown or expired)", NOT_FOUND)
        try:
            done = job.future.result(timeout=wait)
        except FutureTimeout:
            raise CommandError(f"the digest of ticket {ticket} is not done yet", TIMEOUT) from None
        with self._lock:
            self._jobs.pop(ticket, None)
        return done

    def _forget_old(self) -> None:
        now = time.monotonic()
        for ticket in [ticket for ticket, job in self._jobs.items() if now - job.created > KEPT_FOR]:
            del self._jobs[ticket]
        while len(self._jobs) >= KEPT:
            del self._jobs[min(self._jobs)]

    def stop(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._jobs.clear()
