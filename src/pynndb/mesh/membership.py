"""SWIM failure detection for one node: which members to probe each period, and when a silence becomes a suspicion.

Loop-free and clock-injected: the engine calls ``tick`` with the neighbors and live members, sends what it returns
(PROBE, PROBE_REQ, SUSPECT) and reports answers with ``answered`` / ``heard``. Per period a node probes each
neighbor it has not just heard from (one hop) and, every ``RANDOM_EVERY`` periods, one other member in randomized
round-robin, chosen by the caller among nodes two hops away (one relay), so its cost does not grow with the mesh.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

INDIRECT_HELPERS = 3  # members asked to probe a silent node on our behalf (SWIM's k)
DIRECT_SHARE = 0.5  # of the probe timeout: waiting for the direct answer before asking helpers
PROBE_TIMEOUT = 0.8  # of a period: a probe answered by nobody (directly or through helpers) by then is a suspicion
MIN_PROBE_TIMEOUT = 0.4  # seconds: a probe gets at least this long in all, however short the period
RANDOM_EVERY = 6  # periods between probes of a random member two hops away (each costs a relay)
RECENT_SHARE = 0.6  # of a period: a neighbor heard from this recently (its own probe, any message) is not probed


@dataclass
class Probe:
    """One probe in flight: ours (``requester`` None) or one a helper runs for ``requester``'s probe ``request``."""

    target: str
    started: float
    requester: str | None = None
    request: int = 0
    indirect: bool = False


@dataclass
class Action:
    """Something the engine must send: ``probe`` target, ``probe_req`` helper for target, ``ack`` requester, or
    ``suspect`` target."""

    kind: str
    peer: str
    number: int = 0
    target: str = ""


@dataclass
class Membership:
    """Probe schedule and probes in flight of one node."""

    self_id: str
    period: float
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    pending: dict[int, Probe] = field(default_factory=dict)
    next_round: float = 0.0
    counter: int = 0
    order: list[str] = field(default_factory=list)
    targets: dict[str, int] = field(default_factory=dict)  # target -> probes of it in flight
    rounds: int = 0

    @property
    def timeout(self) -> float:
        return max(PROBE_TIMEOUT * self.period, MIN_PROBE_TIMEOUT)

    def _start(self, target: str, now: float, requester: str | None = None, request: int = 0) -> Action:
        self.counter += 1
        self.pending[self.counter] = Probe(target, now, requester, request)
        self.targets[target] = self.targets.get(target, 0) + 1
        return Action("probe", target, self.counter)

    def _drop(self, number: int) -> Probe | None:
        probe = self.pending.pop(number, None)
        if probe is not None:
            left = self.targets.get(probe.target, 1) - 1
            if left > 0:
                self.targets[probe.target] = left
            else:
                self.targets.pop(probe.target, None)
        return probe

    def _next_member(self, members: Collection[str], skip: Collection[str]) -> str | None:
        """Randomized round-robin over the members (SWIM): each is probed once per pass, in a fresh order."""
        for _ in range(2):
            while self.order:
                candidate = self.order.pop()
                if candidate in members and candidate not in skip:
                    return candidate
            self.order = [m for m in members if m not in skip]
            self.rng.shuffle(self.order)
        return None

    def tick(
        self,
        neighbors: Collection[str],
        members: Collection[str],
        links: Callable[[str], Iterable[str]],
        heard: Mapping[str, float] | None = None,
        distant: Collection[str] | None = None,
    ) -> list[Action]:
        """Start this period's probes when due, and turn late answers into indirect probes or suspicions.

        ``members`` are the live nodes (not this one); ``links(node)`` names a node's neighbors, the helpers that
        reach it over another link than ours; ``heard`` when each node was last heard from (a neighbor that probed
        us a moment ago needs no probe back: one probe per link and period is enough); ``distant`` the members the
        random probe picks from (default: all)."""
        now = self.clock()
        actions: list[Action] = []
        timeout = self.timeout
        for number, probe in list(self.pending.items()):
            age = now - probe.started
            if age >= timeout:
                self._drop(number)
                if probe.requester is None and probe.target in members:
                    actions.append(Action("suspect", probe.target))
            elif probe.requester is None and not probe.indirect and age >= DIRECT_SHARE * timeout:
                probe.indirect = True
                for helper in self._helpers(probe.target, members, links):
                    actions.append(Action("probe_req", helper, number, probe.target))
        if now >= self.next_round:
            self.next_round = now + self.period
            self.rounds += 1
            busy = {probe.target for probe in self.pending.values() if probe.requester is None}
            recent = now - RECENT_SHARE * self.period
            for neighbor in neighbors:
                if neighbor in members and neighbor not in busy and (heard or {}).get(neighbor, -1e18) < recent:
                    actions.append(self._start(neighbor, now))
            if self.rounds % RANDOM_EVERY == 1 or RANDOM_EVERY == 1:
                pool = members if distant is None else [m for m in distant if m in members]
                member = self._next_member(pool, busy | set(neighbors) | {self.self_id})
                if member is not None:
                    actions.append(self._start(member, now))
        return actions

    def _helpers(self, target: str, members: Collection[str], links: Callable[[str], Iterable[str]]) -> list[str]:
        """Up to k helpers: the target's own neighbors first (one hop from it), then random members."""
        near = [n for n in links(target) if n in members and n not in (target, self.self_id)]
        self.rng.shuffle(near)
        chosen = near[:INDIRECT_HELPERS]
        if len(chosen) < INDIRECT_HELPERS:
            others = [m for m in members if m not in chosen and m not in (target, self.self_id)]
            chosen += self.rng.sample(others, min(len(others), INDIRECT_HELPERS - len(chosen)))
        return chosen

    def probe_for(self, requester: str, request: int, target: str) -> Action:
        """Run a probe on behalf of ``requester`` (a PROBE_REQ); its answer is passed back as an ack."""
        return self._start(target, self.clock(), requester, request)

    def answered(self, number: int) -> Action | None:
        """An ACK for probe ``number`` came; if we ran it for someone, the ack to pass back."""
        probe = self._drop(number)
        if probe is not None and probe.requester is not None:
            return Action("ack", probe.requester, probe.request)
        return None

    def heard(self, node_id: str) -> list[Action]:
        """Any message from ``node_id`` answers every probe of it in flight."""
        actions: list[Action] = []
        if node_id not in self.targets:
            return actions
        for number, probe in list(self.pending.items()):
            if probe.target == node_id:
                action = self.answered(number)
                if action is not None:
                    actions.append(action)
        return actions

    def busy(self) -> bool:
        """True while probes are in flight (the engine then checks deadlines finely)."""
        return bool(self.pending)
