"""Faults drawn from a seed: node SIGKILL + restart, SIGSTOP/SIGCONT, link cuts, black holes and delays, writer
SIGKILL mid-transaction, long outages past journal retention, and a node restarted with a replica wiped.

Each fault is logged with a timestamp; its repair is scheduled on the same clock. A target under one fault is not
chosen for another until repaired, and `heal_all` runs every pending repair at once.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.cluster import Cluster
from tests.chaos.monitor import Monitor
from tests.chaos.proxy import BLACKHOLE, CUT, DELAY, UP

KINDS = {
    "node_kill": 3,
    "node_stop": 3,
    "link_cut": 3,
    "link_blackhole": 2,
    "link_delay": 2,
    "writer_kill": 3,
    "long_outage": 1,
    "replica_wipe": 1,
}
READY_WITHIN = 40.0
MAX_ATTEMPTS = 5
WIPEABLE = ("a1", "afar", "b3", "c0")  # one-way replicas: nothing is lost by starting them again empty


def in_transaction(journal: Path) -> bool:
    """Whether a writer's journal ends with an attempt line (its transaction is open, or its commit returning)."""
    try:
        with open(journal, "rb") as file:
            file.seek(max(0, os.path.getsize(journal) - 512))
            lines = file.read().splitlines()
    except OSError:
        return False
    return bool(lines) and lines[-1].startswith(b'{"t":"try"')


@dataclass
class Repair:
    at: float
    target: str
    action: Callable[[], None]
    what: str
    ready: Callable[[], bool] | None = None  # a condition to wait for (at most READY_WITHIN s past `at`)
    attempts: int = 0


@dataclass
class Faults:
    cluster: Cluster
    monitor: Monitor
    rng: random.Random
    log: list[dict[str, object]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    pending: list[Repair] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # node labels that do not answer now (killed or stopped)
    problems: list[str] = field(default_factory=list)  # faults or repairs the harness could not carry out
    starting: dict[str, float] = field(default_factory=dict)  # node label -> deadline for its READY line
    first: list[str] | None = None

    def note(self, kind: str, target: str, detail: str = "") -> None:
        self.log.append({"time": round(time.time(), 3), "kind": kind, "target": target, "detail": detail})

    @property
    def busy(self) -> set[str]:
        return {repair.target for repair in self.pending} | set(self.starting)

    def inject(self) -> None:
        """Draw one fault kind and a free target, and inflict it."""
        if self.first is None:  # every kind once first (in a seeded order), so even a short run has each
            self.first = list(KINDS)
            self.rng.shuffle(self.first)
        kinds = list(KINDS)
        kind = self.first.pop() if self.first else self.rng.choices(kinds, weights=[KINDS[k] for k in kinds])[0]
        try:
            getattr(self, kind)()
        except Exception as error:  # noted as a finding; the run goes on
            self.problems.append(f"{time.time():.3f} {kind} failed: {error!r}")
            self.note("fault_failed", kind, repr(error))

    def due(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.started()
        for repair in [repair for repair in self.pending if repair.at <= now and self._ready(repair, now)]:
            self._repair(repair)

    def _repair(self, repair: Repair) -> None:
        self.pending.remove(repair)
        try:
            repair.action()
        except Exception as error:  # noted as a finding; retried a few times so the run can go on
            self.problems.append(f"{time.time():.3f} repair {repair.what} of {repair.target} failed: {error!r}")
            self.note("repair_failed", repair.target, repr(error))
            repair.attempts += 1
            if repair.attempts < MAX_ATTEMPTS:
                repair.at, repair.ready = time.monotonic() + 1.0, None
                self.pending.append(repair)
            return
        self.note("repair", repair.target, repair.what)

    @staticmethod
    def _ready(repair: Repair, now: float) -> bool:
        return repair.ready is None or now > repair.at + READY_WITHIN or repair.ready()

    def heal_all(self) -> None:
        self.cluster.proxy.heal()
        deadline = time.monotonic() + 2 * READY_WITHIN
        # Bounded: repairs are retried at most MAX_ATTEMPTS times, restarts end at their deadline.
        while (self.pending or self.starting) and time.monotonic() < deadline:
            self.started()
            for repair in sorted(self.pending, key=lambda repair: repair.at):
                waited = time.monotonic() > repair.at + READY_WITHIN
                if repair.target not in self.starting and (repair.ready is None or repair.ready() or waited):
                    self._repair(repair)
            time.sleep(0.05)
        if self.pending or self.starting:
            self.problems.append(f"not healed: {[r.what for r in self.pending]} {sorted(self.starting)}")

    def _free(self, names: list[str]) -> str | None:
        free = [name for name in names if name not in self.busy]
        return self.rng.choice(free) if free else None

    def _later(
        self,
        seconds: float,
        target: str,
        action: Callable[[], None],
        what: str,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.pending.append(Repair(time.monotonic() + seconds, target, action, what, ready))

    # --- nodes ------------------------------------------------------------------------------------------------
    def node_kill(self) -> None:
        label = self._free(list(self.cluster.nodes))
        if label is None:
            return
        node = self.cluster.nodes[label]
        pause = self.rng.uniform(0.2, 3.0)
        node.kill()
        self.down.add(label)
        self.counts["node_kill"] += 1
        self.note("node_kill", label, f"restart in {pause:.2f}s")
        self._later(pause, label, lambda: self._restart(label), "restarted")

    def _restart(self, label: str) -> None:
        """Start the node again without waiting: a node may take seconds to say READY (its --connect peers may
        be frozen), and the other faults' clocks must not wait for it."""
        self.cluster.nodes[label].start(self.cluster.cwd, wait=0)
        self.starting[label] = time.monotonic() + READY_WITHIN

    def started(self) -> None:
        """Nodes that said READY are up again; one that takes too long is a finding (and is started again)."""
        for label, deadline in list(self.starting.items()):
            node = self.cluster.nodes[label]
            try:
                ready = node.ready()
            except RuntimeError as error:
                ready, deadline = False, 0.0
                self.problems.append(f"{time.time():.3f} {label} exited while starting: {error}")
            if ready:
                del self.starting[label]
                self.down.discard(label)
                self.note("ready", label)
            elif time.monotonic() > deadline:
                self.problems.append(f"{time.time():.3f} {label} not READY within {READY_WITHIN}s")
                node.kill()
                self._restart(label)

    def node_stop(self) -> None:
        label = self._free(list(self.cluster.nodes))
        if label is None:
            return
        pause = self.rng.uniform(0.5, 5.0)
        self.cluster.nodes[label].signal(signal.SIGSTOP)
        self.down.add(label)
        self.counts["node_stop"] += 1
        self.note("node_stop", label, f"SIGCONT in {pause:.2f}s")

        def resume() -> None:
            self.cluster.nodes[label].signal(signal.SIGCONT)
            self.down.discard(label)

        self._later(pause, label, resume, "SIGCONT")

    # --- links ------------------------------------------------------------------------------------------------
    def _link(self, kind: str, mode: str, delay: float = 0.0) -> None:
        name = self._free(list(self.cluster.proxy.links))
        if name is None:
            return
        pause = self.rng.uniform(0.5, 5.0)
        self.cluster.proxy.set_mode(name, mode, delay)
        self.counts[kind] += 1
        self.note(kind, name, f"for {pause:.2f}s" + (f", {delay * 1000:.0f} ms" if delay else ""))
        self._later(pause, name, lambda: self.cluster.proxy.set_mode(name, UP), "link up")

    def link_cut(self) -> None:
        self._link("link_cut", CUT)

    def link_blackhole(self) -> None:
        self._link("link_blackhole", BLACKHOLE)

    def link_delay(self) -> None:
        self._link("link_delay", DELAY, self.rng.uniform(0.01, 0.3))

    # --- writers ----------------------------------------------------------------------------------------------
    def writer_kill(self) -> None:
        name = self._free([f"writer:{name}" for name in self.cluster.writers])
        if name is None:
            return
        writer = self.cluster.writers[name.split(":")[1]]
        # Mid-transaction: the last line of its journal is an attempt not yet acknowledged (bounded wait).
        deadline = time.monotonic() + 1.0
        while not in_transaction(writer.journal) and time.monotonic() < deadline:
            time.sleep(0.0005)
        time.sleep(self.rng.choice([0.0, self.rng.uniform(0.0, 0.006)]))  # before, during or after its commit
        writer.kill()
        pause = self.rng.uniform(0.1, 1.0)
        self.counts["writer_kill"] += 1
        self.note("writer_kill", name, f"restart in {pause:.2f}s")
        self._later(pause, name, lambda: writer.start(self.cluster.cwd), "restarted")

    # --- outages past retention -------------------------------------------------------------------------------
    def long_outage(self) -> None:
        """Kill the node of a replica of `a` and let writer a write past the journal's retention meanwhile."""
        label = self._free(["n1", self.cluster.holders["afar"]])
        status = self.monitor.status("n0") if "n0" not in self.down else None
        figures = (status or {}).get("databases", {}).get(self.cluster.paths["a"])
        if label is None or "writer:a" in self.busy or not figures:
            return
        sequence = int(figures["sequence"])
        self.cluster.nodes[label].kill()
        self.down.add(label)
        self.counts["long_outage"] += 1
        self.note("long_outage", label, f"down until the journal of a no longer holds {sequence + 1}")
        self.cluster.writers["a"].signal(signal.SIGUSR1)  # a burst of fast transactions

        def trimmed() -> bool:
            return self.monitor.retained_first.get("a", 0) > sequence + 1

        self._later(1.0, label, lambda: self._restart(label), "restarted", ready=trimmed)
        self._later(1.0, "writer:a", lambda: None, "burst written", ready=trimmed)

    def replica_wipe(self) -> None:
        name = self.rng.choice(WIPEABLE)
        label = self.cluster.holders[name]
        if label in self.busy:
            return
        self.cluster.nodes[label].kill()
        self.cluster.wipe(name)
        self.monitor.forced(name)
        self.counts["replica_wipe"] += 1
        self.note("replica_wipe", label, f"{name} deleted, node restarted, REPLICATE again")
        self._restart(label)
        for replication in self.cluster.replications:
            if replication.target == name:
                self._later(
                    0.0,
                    label,
                    lambda replication=replication: self.cluster.replicate(replication),
                    "REPLICATE",
                    ready=lambda: label not in self.starting,
                )
