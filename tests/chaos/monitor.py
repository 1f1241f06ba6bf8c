"""Watches a chaos run through STATUS: lag, stalls, and every full resync with whether an outage forced it.

Counters live in node processes and start again at zero when a node restarts, so the monitor keeps what it saw
per node incarnation. A full resync is expected when the replica's last seen mark + 1 was already trimmed from
the source's journal (the psync2 invariant), after a RESYNC, or when a snapshot was interrupted by a restart.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pynndb import Manager
from pynndb.errors import PyNNDBError
from tests.chaos.cluster import Cluster


def journal_start(path: str) -> int:
    """The first sequence the journal of the database at `path` holds now (0 when it cannot be read)."""
    try:
        with Manager() as manager:
            return int(manager.database(path, config={"readonly": True}).replication.retained[0])
    except PyNNDBError:
        return 0


def snapshot_under_way(path: str, source: str) -> bool:
    """Whether the database at `path` records a snapshot of `source` under way (False when it cannot be read)."""
    try:
        with Manager() as manager:
            return source in manager.database(path, config={"readonly": True}).replication.snapshots()
    except PyNNDBError:
        return False


@dataclass
class ReplicaView:
    hwm: int = 0
    state: str = ""
    full: int = 0  # counters of the current incarnation
    partial: int = 0
    retaken: int = 0
    under_way: bool = False  # the replica's database recorded a snapshot under way at the last poll
    incarnation: int = -1
    forced: bool = False  # a full resync is due (RESYNC sent, database wiped, snapshot interrupted)


@dataclass
class Monitor:
    cluster: Cluster
    replicas: dict[tuple[str, str], ReplicaView] = field(default_factory=dict)  # (target, source name)
    retained_first: dict[str, int] = field(default_factory=dict)  # source name -> first retained sequence
    sequence: dict[str, int] = field(default_factory=dict)
    full_expected: int = 0
    full_unexpected: list[str] = field(default_factory=list)
    full_seen: int = 0
    full_reasons: Counter[str] = field(default_factory=Counter)
    partial_seen: int = 0
    max_lag_entries: int = 0
    max_lag_seconds: float = 0.0
    polls: int = 0
    verify: dict[tuple[str, int], dict[str, int]] = field(default_factory=dict)  # (node, incarnation) -> counters
    diverged: list[str] = field(default_factory=list)  # each time a replica turned 'diverged', with its reason
    mark_regressions: list[str] = field(default_factory=list)  # a replica's mark seen lower than before

    def status(self, label: str, timeout: float = 1.0) -> dict[str, Any] | None:
        node = self.cluster.nodes[label]
        if not node.alive():
            return None
        try:
            return node.call("STATUS", timeout=timeout)
        except PyNNDBError:
            return None

    def poll(self, skip: set[str] = frozenset()) -> dict[str, dict[str, Any]]:  # type: ignore[assignment]
        """Read STATUS of every node not in `skip`; returns the replica statuses by (target, source name)."""
        self.polls += 1
        names = {uuid: name for name, uuid in self.cluster.uuids.items()}
        statuses = {label: self.status(label) for label in self.cluster.nodes if label not in skip}
        for label, status in statuses.items():
            counters = (status or {}).get("replication", {})
            if "verify_checks" in counters:
                key = (label, self.cluster.nodes[label].starts)
                self.verify[key] = {name[7:]: value for name, value in counters.items() if name.startswith("verify_")}
        # A source's node may be frozen or down while its writer goes on trimming the journal: where each journal
        # starts is read from the database file too, not only from its node's STATUS (stale while it is away).
        for name in self.cluster.writers:
            self.retained_first[name] = max(self.retained_first.get(name, 0), journal_start(self.cluster.paths[name]))
        # Whether each replica's database records a snapshot under way: a node killed mid-snapshot between two
        # STATUS polls never showed the state 'snapshot', but its database keeps the record.
        under_way = {
            (replication.target, source): snapshot_under_way(
                self.cluster.paths[replication.target], self.cluster.uuids[source]
            )
            for replication in self.cluster.replications
            for source in replication.sources
        }
        for status in statuses.values():
            for figures in (status or {}).get("databases", {}).values():
                name = names.get(figures["uuid"])
                if name in self.cluster.writers:
                    self.retained_first[name] = max(self.retained_first.get(name, 0), figures["retained"][0])
                    self.sequence[name] = max(self.sequence.get(name, 0), figures["sequence"])
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for label, status in statuses.items():
            for figures in (status or {}).get("databases", {}).values():
                target = names.get(figures["uuid"])
                for replica in figures["replicas"]:
                    source = names.get(replica["source"])
                    if target is None or source is None:
                        continue
                    found[(target, source)] = replica
                    self._observe(label, target, source, replica)
        for key, view in self.replicas.items():
            view.under_way = under_way.get(key, False)  # (also while its node is down: read from the file)
        return found

    def _observe(self, label: str, target: str, source: str, replica: dict[str, Any]) -> None:
        view = self.replicas.setdefault((target, source), ReplicaView())
        incarnation = self.cluster.nodes[label].starts
        if incarnation != view.incarnation:
            view.full = view.partial = view.retaken = 0
            view.incarnation = incarnation
        full, partial = replica["full_resyncs"], replica["partial_resyncs"]
        retakes = replica.get("snapshots_retaken", 0) - view.retaken  # each asked for one more snapshot
        view.retaken += retakes
        if full > view.full:
            first = self.retained_first.get(source, 0)
            for _ in range(full - view.full):
                self.full_seen += 1
                reason = (
                    "wiped or RESYNC"
                    if view.forced
                    else "journal trimmed past the mark"
                    if view.hwm + 1 < first
                    else "snapshot interrupted"
                    if view.state == "snapshot" or view.under_way
                    else "snapshot retaken after a lost chunk"
                    if retakes > 0
                    else None
                )
                retakes -= reason == "snapshot retaken after a lost chunk"
                if reason is not None:
                    self.full_expected += 1
                    self.full_reasons[reason] += 1
                    view.forced = False
                else:
                    self.full_unexpected.append(
                        f"{time.time():.3f} {target}<-{source}: full resync at mark {view.hwm}, journal from {first}"
                    )
        self.partial_seen += max(0, partial - view.partial)
        if replica["state"] == "diverged" and view.state != "diverged":
            self.diverged.append(f"{time.time():.3f} {target}<-{source} on {label}: {replica.get('reason')}")
        view.full, view.partial = full, partial
        if replica["hwm"] < view.hwm and not view.forced:  # a replica never goes back in time (but when wiped)
            self.mark_regressions.append(f"{time.time():.3f} {target}<-{source}: mark {view.hwm} -> {replica['hwm']}")
        view.hwm, view.state = replica["hwm"], replica["state"]
        if not view.forced:  # a wiped replica (starting again from nothing) is not lagging
            # The replica's own figure, or the gap to the source's sequence as its node last reported it.
            behind = self.sequence.get(source, 0) - replica["hwm"]
            self.max_lag_entries = max(self.max_lag_entries, replica["lag_entries"], behind)
            self.max_lag_seconds = max(self.max_lag_seconds, replica["lag_seconds"])

    def verifications(self) -> dict[str, int]:
        """The divergence detector's periodic checks in every node incarnation seen: checks, matches, mismatches..."""
        return dict(sum((Counter(counters) for counters in self.verify.values()), Counter()))

    def forced(self, target: str) -> None:
        """A full resync of every replication into `target` is now due (wiped, or RESYNC sent)."""
        for source in self.cluster.source_of(target):
            view = self.replicas.setdefault((target, source), ReplicaView())
            view.forced = True
            if target not in self.cluster.writers:
                view.hwm = 0

    def converged(self) -> tuple[bool, dict[tuple[str, str], dict[str, Any]]]:
        """Every replica live with its mark at its source's sequence (as the source's node reports it now)."""
        found = self.poll()
        expected = {(r.target, source) for r in self.cluster.replications for source in r.sources}
        done = expected <= set(found) and all(
            found[key]["state"] == "live" and found[key]["hwm"] >= self.sequence.get(key[1], 0) for key in expected
        )
        return done, found
