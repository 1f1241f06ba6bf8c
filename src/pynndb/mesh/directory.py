"""The mesh directory: every node's latest entry, and whether it is alive, suspected or gone.

Loop-free and clock-injected, so it is tested without sockets. A node's ``seq`` is its incarnation (SWIM): a newer
entry overrides a suspicion or a death at an older ``seq``; a suspicion or death at ``seq`` overrides that entry.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any, TypedDict

import orjson

from pynndb.errors import MalformedMessage

SUSPECT_PERIODS = 2.0  # a suspected node that does not refute within this many probe periods is gone
MIN_SUSPICION = 1.0  # seconds: a short probe period must not turn a brief stall into a death
PRUNE_AFTER_HEARTBEATS = 600
MAX_LINKS = 4096
MAX_TOPICS = 65536


class Entry(TypedDict):
    """A node's directory entry as announced (HEARTBEAT), handed over on a handshake and in SYNC (PROTOCOL.md)."""

    id: str
    label: str
    address: str
    links: list[str]
    services: dict[str, Any]
    topics: list[str]
    public_key: str | None
    heartbeat: float
    seq: int
    started: float


def is_node_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def validate_entry(raw: Any) -> Entry:
    """Check a decoded entry field by field; raise MalformedMessage if any is missing or wrong."""
    if not isinstance(raw, dict):
        raise MalformedMessage("entry must be an object")
    checks: dict[str, Callable[[Any], bool]] = {
        "id": is_node_id,
        "label": lambda v: isinstance(v, str) and 0 < len(v) <= 256,
        "address": lambda v: isinstance(v, str) and len(v) <= 512,
        "links": lambda v: isinstance(v, list) and len(v) <= MAX_LINKS and all(is_node_id(x) for x in v),
        "services": lambda v: isinstance(v, dict),
        "topics": lambda v: isinstance(v, list) and len(v) <= MAX_TOPICS and all(isinstance(x, str) for x in v),
        "public_key": lambda v: v is None or isinstance(v, str) and len(v) == 40,
        "heartbeat": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 3600,
        "seq": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "started": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    for name, check in checks.items():
        if not check(raw.get(name)):
            raise MalformedMessage(f"entry field {name!r} missing or invalid")
    return Entry(
        id=raw["id"],
        label=raw["label"],
        address=raw["address"],
        links=list(raw["links"]),
        services=dict(raw["services"]),
        topics=list(raw["topics"]),
        public_key=raw["public_key"],
        heartbeat=float(raw["heartbeat"]),
        seq=raw["seq"],
        started=float(raw["started"]),
    )


Change = tuple[str, str]  # (node id, 'up' | 'down')


class Directory:
    """Entries by node id, with liveness; ``version`` changes whenever routing-relevant state changes."""

    def __init__(self, self_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.self_id = self_id
        self.clock = clock
        self.entries: dict[str, Entry] = {}
        self.alive: dict[str, bool] = {}
        self.heard: dict[str, float] = {}
        self.last_seen: dict[str, float] = {}
        self.gone_since: dict[str, float] = {}
        self.gone_seq: dict[str, int] = {}  # the seq a node was declared dead at (SYNC hands it on)
        self.suspects: dict[str, tuple[int, float, bool]] = {}  # id -> (seq, deadline, suspected by this node)
        self.confirmed: list[tuple[str, int]] = []  # deaths this node declared, for the engine to announce
        self.superseded: set[str] = set()  # ids of nodes that restarted under a new id: never alive again
        self.version = 0
        self.state_version = 0  # changes with any entry or liveness change (the digest's cache key)
        self._digest: tuple[int, str] = (-1, "")
        self._encoded: tuple[int, bytes] = (-1, b"")

    def merge(self, entry: Entry) -> list[Change]:
        """Take a newer entry for a node (an older or equal ``seq`` changes nothing)."""
        return self.accept(entry)[1]

    def accept(self, entry: Entry) -> tuple[bool, list[Change]]:
        """Merge an entry; also say whether it was news (worth passing on to the neighbors)."""
        node_id = entry["id"]
        changes: list[Change] = []
        if node_id in self.superseded:
            return False, changes  # its announcements may still arrive by a slow path: the restarted node replaced it
        known = self.entries.get(node_id)
        if known is None and node_id != self.self_id:
            changes += self.supersede(entry)
        if known is not None and entry["seq"] <= known["seq"]:
            return False, changes  # a stale copy (a directory dump, a slow path) never revives a node that left
        if node_id in self.gone_seq and entry["seq"] <= self.gone_seq[node_id]:
            return False, changes  # the death outranks this incarnation
        if (
            known is None
            or known["links"] != entry["links"]
            or known["topics"] != entry["topics"]
            or known["label"] != entry["label"]
        ):
            self.version += 1
        self.entries[node_id] = entry
        self.state_version += 1
        self.suspects.pop(node_id, None)
        self.heard[node_id] = self.clock()
        self.last_seen[node_id] = time.time()
        if not self.alive.get(node_id, False) and node_id != self.self_id:
            changes.append((node_id, "up"))
            self.version += 1
        self.alive[node_id] = True
        self.gone_since.pop(node_id, None)
        self.gone_seq.pop(node_id, None)
        return True, changes

    def supersede(self, entry: Entry) -> list[Change]:
        """A node new to us with the label and address of a live one is that node restarted: the old one is gone.

        (Two live nodes cannot share an address: the new one could bind its ports only because the old one died.)"""
        changes: list[Change] = []
        for other_id, other in list(self.entries.items()):
            if (
                other_id != entry["id"]
                and other_id != self.self_id
                and other["label"] == entry["label"]
                and other["address"] == entry["address"]
                and other["started"] <= entry["started"]
            ):
                changes += self.mark_gone(other_id)
                self.superseded.add(other_id)
        return changes

    def touch(self, node_id: str) -> None:
        """Record that a live node was heard from (any message it originated)."""
        if self.alive.get(node_id):
            self.heard[node_id] = self.clock()

    def suspect(self, node_id: str, seq: int, period: float, mine: bool = False) -> bool:
        """Suspect a node at incarnation ``seq``; True if that is news (it then has a while to refute)."""
        entry = self.entries.get(node_id)
        if node_id == self.self_id or entry is None or not self.alive.get(node_id) or entry["seq"] > seq:
            return False
        current = self.suspects.get(node_id)
        if current is not None and current[0] >= seq:
            return False
        self.suspects[node_id] = (seq, self.clock() + max(SUSPECT_PERIODS * period, MIN_SUSPICION), mine)
        return True

    def is_suspect(self, node_id: str) -> bool:
        return node_id in self.suspects

    def confirm(self, node_id: str, seq: int) -> tuple[bool, list[Change]]:
        """A node was declared dead at incarnation ``seq``: mark it gone unless it has refuted since."""
        entry = self.entries.get(node_id)
        if node_id == self.self_id or entry is None or entry["seq"] > seq or not self.alive.get(node_id):
            return False, []
        changes = self.mark_gone(node_id)
        self.gone_seq[node_id] = seq
        return True, changes

    def mark_gone(self, node_id: str) -> list[Change]:
        """Mark a node gone now (it said goodbye, its death was declared, or a restart replaced it)."""
        if node_id == self.self_id or not self.alive.get(node_id):
            return []
        self.alive[node_id] = False
        self.gone_since[node_id] = self.clock()
        self.suspects.pop(node_id, None)
        self.version += 1
        self.state_version += 1
        return [(node_id, "down")]

    def expire(self, own_heartbeat: float) -> list[Change]:
        """Mark gone every suspect whose time to refute is over; forget long-gone nodes.

        Deaths this node declares itself (its own suspicions) are appended to ``confirmed`` for announcing."""
        now = self.clock()
        changes: list[Change] = []
        for node_id, (seq, deadline, mine) in list(self.suspects.items()):
            if now >= deadline:
                _, down = self.confirm(node_id, seq)
                changes += down
                self.suspects.pop(node_id, None)
                if down and mine:
                    self.confirmed.append((node_id, seq))
        for node_id, gone in list(self.gone_since.items()):
            entry = self.entries.get(node_id)
            period = max(entry["heartbeat"] if entry is not None else 0.0, own_heartbeat)
            if now - gone > PRUNE_AFTER_HEARTBEATS * period:
                self.forget(node_id)
        return changes

    def forget(self, node_id: str) -> None:
        """Drop every trace of a node."""
        self.entries.pop(node_id, None)
        self.alive.pop(node_id, None)
        for times in (self.heard, self.last_seen, self.gone_since):
            times.pop(node_id, None)
        self.gone_seq.pop(node_id, None)
        self.suspects.pop(node_id, None)
        self.superseded.discard(node_id)
        self.version += 1
        self.state_version += 1

    def digest(self) -> str:
        """A short hash of which nodes are alive at which ``seq``: neighbors that agree have equal digests."""
        if self._digest[0] != self.state_version:
            hasher = hashlib.blake2b(digest_size=8)
            for node_id in sorted(self.entries):
                if self.is_alive(node_id):
                    hasher.update(b"%s:%d;" % (node_id.encode(), self.entries[node_id]["seq"]))
            self._digest = (self.state_version, hasher.hexdigest())
        return self._digest[1]

    def gone_facts(self) -> list[list[Any]]:
        """``[id, seq]`` of every node declared dead (not those that left or were superseded)."""
        return [[node_id, seq] for node_id, seq in self.gone_seq.items()]

    def lookup(self, name: str) -> Entry | None:
        """Find a node by id, or by label (the live, most recently started one wins)."""
        if name in self.entries:
            return self.entries[name]
        matches = [e for e in self.entries.values() if e["label"] == name]
        if not matches:
            return None
        matches.sort(key=lambda e: (self.alive.get(e["id"], False), e["started"]))
        return matches[-1]

    def is_alive(self, node_id: str) -> bool:
        return node_id == self.self_id or self.alive.get(node_id, False)

    def alive_entries(self) -> list[Entry]:
        """Entries of the nodes believed alive (what a link handshake hands over)."""
        return [e for node_id, e in self.entries.items() if self.is_alive(node_id)]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """A copy of the directory for callers outside the loop, with liveness fields added.

        Services poll it every second; a JSON round trip of a cached encoding is ~20x cheaper than deepcopy."""
        if self._encoded[0] != self.state_version:
            self._encoded = (self.state_version, orjson.dumps(self.entries))
        result: dict[str, dict[str, Any]] = orjson.loads(self._encoded[1])
        for node_id, public in result.items():
            public["alive"] = self.is_alive(node_id)
            public["last_seen"] = self.seen_at(node_id)
            public["suspect"] = node_id in self.suspects
        return result

    def seen_at(self, node_id: str) -> float:
        """Wall-clock time this node was last heard from (an entry, a probe answer, any message it sent)."""
        wall = self.last_seen.get(node_id, time.time())
        heard = self.heard.get(node_id)
        if heard is not None:
            wall = max(wall, time.time() - (self.clock() - heard))
        return wall

    def graph(self) -> dict[str, set[str]]:
        """Undirected link graph among live nodes (an edge counts if either end reports it)."""
        adjacency: dict[str, set[str]] = {}
        for node_id, entry in self.entries.items():
            if not self.is_alive(node_id):
                continue
            adjacency.setdefault(node_id, set())
            for peer in entry["links"]:
                if self.is_alive(peer):
                    adjacency[node_id].add(peer)
                    adjacency.setdefault(peer, set()).add(node_id)
        return adjacency

    def subscribers(self, topic: str) -> set[str]:
        """Live nodes that subscribed to a topic."""
        return {node_id for node_id, e in self.entries.items() if self.is_alive(node_id) and topic in e["topics"]}
