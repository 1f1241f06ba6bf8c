"""Divergence detection: a one-way replica compares a digest of its content with its source's at the same mark.

A check holds the replica where it stands and asks the source's node for a digest pinned at its sequence S
(`DIGEST` with pin: it answers S as soon as its read transaction is open, and reads every document meanwhile). The
replica applies up to exactly S and is digested on a worker thread (a digest reads every document: never on the
loop); as soon as that worker's read transaction is open at S, the hold ends and the replica goes on applying while
both digests are read. The worker then fetches the source's digest (`DIGEST` with the ticket) and the next step
compares. A source node of an older release, which knows no pin, answers the whole digest at once (the replica is
then held while it is read, as before). A mismatch shows the replica as `diverged` in STATUS until `RESYNC`
replaces its content by a fresh snapshot. Checks run every `every` seconds and on demand (`VERIFY`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from pynndb.errors import CommandError, PyNNDBError
from pynndb.mesh.commands import BAD_PARAMS
from pynndb.replication.digest import replica_summary
from pynndb.replication.table_filter import has_table

if TYPE_CHECKING:
    from pynndb.core.database import Database
    from pynndb.mesh.replication_holdings import Hosted
    from pynndb.mesh.replicator import ReplicationService
    from pynndb.replication.replica import Replica

VERIFY_EVERY = 30.0  # seconds between periodic checks of one replica (a digest reads every document)
CATCH_UP_WITHIN = 5.0  # how long a replica may take to reach the source's digest sequence
RETRY_AFTER = 5.0  # after an inconclusive check (the replica went past S, or the source was unreachable)
TICKET_WAIT = 60.0  # how long the source's node is asked to wait for its pinned digest (it reads every document)
Key = tuple[str, str]  # (replica database uuid, source uuid)


@dataclass
class Check:
    sequence: int  # S: the source's digest is taken there, the replica's too
    tables: dict[str, Any] | None  # the source's digest (None until fetched by its ticket)
    deadline: float  # for the replica to reach S
    ticket: int | None = None  # of the source's pinned digest
    owner: str = ""  # the node that serves the source
    pinned: bool = False  # the replica's digest is being read at S: the replica no longer needs holding


def key_of(replica: Replica) -> Key:
    return replica.db.replication.uuid, replica.source


class DivergenceDetector:
    """Owned by a `ReplicationService`: `step` runs with the service's steps, digests are fetched and taken on a
    worker."""

    def __init__(self, service: ReplicationService, every: float = VERIFY_EVERY) -> None:
        self.service = service
        self.every = every
        self.counters = {"checks": 0, "matches": 0, "mismatches": 0, "inconclusive": 0}
        self._fetcher = ThreadPoolExecutor(1, thread_name_prefix=f"pynndb-{service.node.label}-verify")
        self._changed = threading.Condition()
        self._checks: dict[Key, Check] = {}
        self._fetching: set[Key] = set()  # source digests being fetched, replica digests being taken
        # The replica's digest once taken, with the mark it shows (None: a snapshot was under way).
        self._mine: dict[Key, tuple[int | None, dict[str, Any]]] = {}
        self._wanted: set[Key] = set()  # checks asked for (VERIFY) that the service's steps have not started yet
        self._next: dict[Key, float] = {}
        self._outcome: dict[Key, tuple[int, str]] = {}  # (generation, last outcome)
        self._diverged: dict[Key, str] = {}
        self._verified: dict[Key, float] = {}

    # --- the service's steps -------------------------------------------------------------------------------
    def step(self, hosted_list: list[Hosted], now: float) -> None:
        """Start wanted or due checks; finish a check whose replica stands at the source's digest sequence.

        A check first holds the replica where it stands, then asks for the source's digest (at S, never behind the
        replica), then lets the replica apply up to exactly S: however entries are batched, the two meet at S."""
        for hosted in hosted_list:
            replica = hosted.replica
            if replica.mode != "one-way" or hosted.paused:
                continue
            key = key_of(replica)
            settled = replica.state not in ("snapshot", "stalled")
            with self._changed:
                check = self._checks.get(key)
                fetching = key in self._fetching
                due = key in self._wanted or now >= self._next.setdefault(key, now + self.every)
            if check is not None and check.pinned and replica.hold_at is not None:
                replica.release()  # its digest reads at S from a transaction already open: it goes on meanwhile
            if fetching:
                continue
            if check is None:
                if replica.hold_at is not None:
                    replica.release()  # the digest never came (source unreachable): let the replica go on
                if due and settled:
                    replica.hold_at = replica.hwm
                    self._fetch_later(key, replica.source)
                elif due and key in self._wanted:
                    self._finish(key, "inconclusive", f"the replica is {replica.state}")
                continue
            if check.pinned:
                with self._changed:
                    taken = self._mine.pop(key, None)
                if taken is None:
                    continue  # (the worker finished the check itself)
                at, mine = taken
                if at != check.sequence or check.tables is None:  # (a snapshot came in while it was taken)
                    self._finish(key, "inconclusive", f"the replica's digest shows mark {at}, not {check.sequence}")
                    continue
                different = sorted(
                    name
                    for name in set(mine) | set(check.tables)
                    if mine.get(name) != check.tables.get(name) and has_table(replica.tables, name)
                )
                if different:
                    detail = f"content differs from the source at sequence {check.sequence}: tables {different}"
                    self._finish(key, "mismatch", detail)
                else:
                    self._finish(key, "match")
            elif replica.hwm == check.sequence and settled:
                self._digest_later(key, replica)  # held at S until the worker's read transaction is open
                continue
            elif replica.hwm > check.sequence or now > check.deadline or not settled:
                self._finish(key, "inconclusive")
            else:
                if replica.hold_at != check.sequence:
                    replica.release(until=check.sequence)  # go on up to S, exactly
                continue
            if replica.hold_at is not None:
                replica.release()

    @property
    def under_way(self) -> bool:
        """Whether a check is asked for or in progress (a peek without the lock: the service's steps then run
        `step` each time, so a check never waits for the routine's pace)."""
        return bool(self._wanted or self._fetching or self._checks or self._mine)

    def request(self, replica: Replica) -> int:
        """Ask for a check of `replica` (unless one is under way); returns the generation that will finish it."""
        key = key_of(replica)
        with self._changed:
            generation = self._outcome.get(key, (0, ""))[0]
            self._wanted.add(key)
        self.service.wake()
        return generation + 1

    def _fetch_later(self, key: Key, source: str) -> None:
        with self._changed:
            self._wanted.discard(key)
            self._fetching.add(key)
            self._next[key] = time.monotonic() + self.every
        self._fetcher.submit(self._fetch, key, source)

    def _digest_later(self, key: Key, replica: Replica) -> None:
        """Digest the replica on the worker (it reads every document: never on the node's loop)."""
        with self._changed:
            self._fetching.add(key)
        db = replica.db
        self.service.holdings.lease(db)  # (on the service's thread: the replica is hosted)
        try:
            self._fetcher.submit(self._digest, key, db)
        except RuntimeError:  # stopped
            self.service.holdings.unlease(db)

    def _digest(self, key: Key, db: Database) -> None:
        try:
            self._digest_leased(key, db)
        finally:
            self.service.holdings.unlease(db)

    def _digest_leased(self, key: Key, db: Database) -> None:
        def pinned(_mark: int | None) -> None:
            with self._changed:
                check = self._checks.get(key)
                if check is not None:
                    check.pinned = True
            self.service.wake()  # the next step ends the hold

        def work() -> tuple[int | None, dict[str, Any]]:
            mark, tables = replica_summary(db, key[1], pinned)
            with self._changed:
                check = self._checks.get(key)
            if check is not None and check.tables is None and check.ticket is not None:
                params = {"uuid": key[1], "ticket": check.ticket, "wait": TICKET_WAIT}
                check.tables = dict(self._call_digest(check.owner, params, TICKET_WAIT + 5.0)["tables"])
            return mark, orjson.loads(orjson.dumps(tables))  # the same types as the source's digest (JSON)

        self._on_worker(key, work, self._mine, starts_check=False)

    def _fetch(self, key: Key, source: str) -> None:
        self._on_worker(key, lambda: self._source_digest(source), self._checks, starts_check=True)

    def _source_digest(self, source: str) -> Check:
        owner = self.service.source_owners().get(source)
        if owner is None:
            raise PyNNDBError(f"source {source} is not registered on any node")
        try:
            reply = self._call_digest(owner, {"uuid": source, "pin": True}, 5.0)
        except CommandError as error:
            if error.code != BAD_PARAMS:
                raise
            reply = self._call_digest(owner, {"uuid": source}, 5.0)  # a release without pins: the whole digest
        tables = reply.get("tables")
        return Check(
            int(reply["sequence"]),
            None if tables is None else dict(tables),
            time.monotonic() + CATCH_UP_WITHIN,
            reply.get("ticket"),
            owner,
        )

    def _call_digest(self, owner: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        if owner == self.service.node.id:
            return self.service.commands.digest(params, {})
        return dict(self.service.node.call("DIGEST", params, target=owner, timeout=timeout))

    def _on_worker(self, key: Key, work: Callable[[], Any], results: dict[Key, Any], starts_check: bool) -> None:
        """Run a check's slow part on the worker; keep its result in `results` for the service's next step, or end
        the check as inconclusive if it failed. The source's digest starts a check (`starts_check`); the replica's
        own digest is kept only while its check is still on."""
        try:
            value = work()
        except (PyNNDBError, KeyError, TypeError, ValueError) as error:
            with self._changed:
                self._fetching.discard(key)
            self._finish(key, "inconclusive", str(error))
            return
        with self._changed:
            self._fetching.discard(key)
            if starts_check or key in self._checks:
                results[key] = value
        self.service.wake()

    def _finish(self, key: Key, outcome: str, detail: str = "") -> None:
        with self._changed:
            self._checks.pop(key, None)
            self._mine.pop(key, None)
            self._wanted.discard(key)
            self.counters["checks"] += 1
            if outcome == "match":
                self.counters["matches"] += 1
                self._diverged.pop(key, None)
                self._verified[key] = time.time()
                self._next[key] = time.monotonic() + self.every
            elif outcome == "mismatch":
                self.counters["mismatches"] += 1
                self._diverged[key] = detail
                self._verified.pop(key, None)
                self._next[key] = time.monotonic() + self.every
            else:
                self.counters["inconclusive"] += 1
                self._next[key] = time.monotonic() + min(self.every, RETRY_AFTER)
            generation = self._outcome.get(key, (0, ""))[0] + 1
            self._outcome[key] = (generation, outcome)
            self._changed.notify_all()

    # --- status and commands --------------------------------------------------------------------------------
    def status(self, replica: Replica) -> dict[str, Any]:
        """What to add to (or override in) the replica's STATUS entry."""
        key = key_of(replica)
        with self._changed:
            result: dict[str, Any] = {
                "verified": self._verified.get(key),
                "verification": self._outcome.get(key, (0, None))[1],
            }
            if key in self._diverged:
                result["state"] = "diverged"
                result["reason"] = self._diverged[key]
        return result

    def cmd_verify(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """VERIFY {'path'?, 'uuid'?}: compare matching one-way replicas with their sources now (waits, bounded)."""
        timeout = params.get("timeout") or 2 * CATCH_UP_WITHIN  # params validated by the command's spec
        chosen = [hosted for hosted in self.service.holdings.select(params) if hosted.replica.mode == "one-way"]
        waiting = {key_of(hosted.replica): self.request(hosted.replica) for hosted in chosen}
        self.service.wake()
        with self._changed:
            self._changed.wait_for(
                lambda: all(self._outcome.get(key, (0, ""))[0] >= generation for key, generation in waiting.items()),
                timeout,
            )
        with self.service.holdings.leased_snapshot() as (_databases, _sources, hosted_now):
            # (a replica that UNREPLICATE took away meanwhile is left out: its database may be released)
            still = {id(hosted) for hosted in hosted_now}
            chosen = [hosted for hosted in chosen if id(hosted) in still]
            return {"replicas": [{**hosted.replica.status(), **self.status(hosted.replica)} for hosted in chosen]}

    def cmd_resync(self, params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        """RESYNC {'path', 'uuid'}: replace a replica's content by a fresh snapshot of its source."""
        chosen = self.service.holdings.select(params)  # both params required by the command's spec
        for hosted in chosen:
            key = key_of(hosted.replica)
            with self._changed:
                self._diverged.pop(key, None)
                self._checks.pop(key, None)
            self.service.queue_requests(hosted.replica.resync())
        self.service.wake()
        return {"resyncing": len(chosen)}

    def stop(self) -> None:
        self._fetcher.shutdown(wait=True, cancel_futures=True)
