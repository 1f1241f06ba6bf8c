"""The mesh directory: every node's latest entry as carried by heartbeats, and who is alive.

Loop-free and clock-injected, so it is tested without sockets; the controller feeds it entries and ticks.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, TypedDict

from pynndb.errors import MalformedMessage

GONE_AFTER_HEARTBEATS = 3.5
PRUNE_AFTER_HEARTBEATS = 600
MAX_LINKS = 4096
MAX_TOPICS = 65536


class Entry(TypedDict):
    """A node's directory entry as sent in heartbeats (see PROTOCOL.md)."""

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


def _is_node_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def validate_entry(raw: Any) -> Entry:
    """Check a decoded entry field by field; raise MalformedMessage if any is missing or wrong."""
    if not isinstance(raw, dict):
        raise MalformedMessage("entry must be an object")
    checks: dict[str, Callable[[Any], bool]] = {
        "id": _is_node_id,
        "label": lambda v: isinstance(v, str) and 0 < len(v) <= 256,
        "address": lambda v: isinstance(v, str) and len(v) <= 512,
        "links": lambda v: isinstance(v, list) and len(v) <= MAX_LINKS and all(_is_node_id(x) for x in v),
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
        self.superseded: set[str] = set()  # ids of nodes that restarted under a new id: never alive again
        self.version = 0

    def merge(self, entry: Entry) -> list[Change]:
        """Take a newer entry for a node (older or equal ``seq`` only refreshes liveness)."""
        node_id = entry["id"]
        changes: list[Change] = []
        if node_id in self.superseded:
            return changes  # its heartbeats may still arrive by a slow path: the restarted node replaced it
        known = self.entries.get(node_id)
        now = self.clock()
        if known is None and node_id != self.self_id:
            changes += self.supersede(entry)
        if known is None or entry["seq"] > known["seq"]:
            if (
                known is None
                or known["links"] != entry["links"]
                or known["topics"] != entry["topics"]
                or known["label"] != entry["label"]
            ):
                self.version += 1
            self.entries[node_id] = entry
        elif entry["seq"] < known["seq"] or not self.alive.get(node_id, False):
            # A stale copy (a directory dump, a slow path) must not revive a node that has left.
            return changes
        self.heard[node_id] = now
        self.last_seen[node_id] = time.time()
        if not self.alive.get(node_id, False) and node_id != self.self_id:
            changes.append((node_id, "up"))
            self.version += 1
        self.alive[node_id] = True
        self.gone_since.pop(node_id, None)
        return changes

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

    def mark_gone(self, node_id: str) -> list[Change]:
        """Mark a node gone now (it said goodbye, or its heartbeats stopped)."""
        if node_id == self.self_id or not self.alive.get(node_id):
            return []
        self.alive[node_id] = False
        self.gone_since[node_id] = self.clock()
        self.version += 1
        return [(node_id, "down")]

    def expire(self, own_heartbeat: float) -> list[Change]:
        """Mark gone every node silent for a few of its heartbeat periods; forget long-gone nodes."""
        now = self.clock()
        changes: list[Change] = []
        for node_id, entry in list(self.entries.items()):
            if node_id == self.self_id:
                continue
            period = max(entry["heartbeat"], own_heartbeat)
            if self.alive.get(node_id) and now - self.heard.get(node_id, now) > GONE_AFTER_HEARTBEATS * period:
                changes += self.mark_gone(node_id)
            gone = self.gone_since.get(node_id)
            if gone is not None and now - gone > PRUNE_AFTER_HEARTBEATS * period:
                self.forget(node_id)
        return changes

    def forget(self, node_id: str) -> None:
        """Drop every trace of a node."""
        for table in (self.entries, self.alive, self.heard, self.last_seen, self.gone_since):
            table.pop(node_id, None)
        self.superseded.discard(node_id)
        self.version += 1

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
        """A deep copy of the directory for callers outside the loop, with liveness fields added."""
        result: dict[str, dict[str, Any]] = {}
        for node_id, entry in self.entries.items():
            public: dict[str, Any] = copy.deepcopy(dict(entry))
            public["alive"] = self.is_alive(node_id)
            public["last_seen"] = self.last_seen.get(node_id, time.time())
            result[node_id] = public
        return result

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
