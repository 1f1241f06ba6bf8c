"""Routing decisions: the seen-cache that stops duplicates and loops, and next hops for topics and targets.

Pure functions over the directory's link graph, and `Routes`, which caches their answers until the directory or
the links change (loop-free: the engine passes the graph and its neighbors).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any


class SeenCache:
    """A bounded set of message keys (origin + message id), evicting the oldest first."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._keys: set[bytes] = set()
        self._order: deque[bytes] = deque()

    def check_and_add(self, key: bytes) -> bool:
        """Return True if the key is new (and remember it), False if it was seen before."""
        if key in self._keys:
            return False
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self.capacity:
            self._keys.discard(self._order.popleft())
        return True

    def __len__(self) -> int:
        return len(self._keys)


def _reachable(graph: dict[str, set[str]], start: str, excluded: str) -> set[str]:
    """Nodes reachable from ``start`` without passing through ``excluded``."""
    seen = {start}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for peer in graph.get(node, ()):
            if peer != excluded and peer not in seen:
                seen.add(peer)
                frontier.append(peer)
    return seen


def topic_next_hops(
    graph: dict[str, set[str]], self_id: str, neighbors: Iterable[str], subscribers: set[str]
) -> set[str]:
    """Neighbors behind which some subscriber lives (every such path stays hot, so a cut loses nothing)."""
    wanted = subscribers - {self_id}
    if not wanted:
        return set()
    hops = set()
    for neighbor in neighbors:
        if neighbor in wanted or _reachable(graph, neighbor, self_id) & wanted:
            hops.add(neighbor)
    return hops


def _distances(graph: dict[str, set[str]], source: str) -> dict[str, int]:
    distance = {source: 0}
    frontier = [source]
    while frontier:
        following = []
        for node in frontier:
            for peer in graph.get(node, ()):
                if peer not in distance:
                    distance[peer] = distance[node] + 1
                    following.append(peer)
        frontier = following
    return distance


def target_next_hops(graph: dict[str, set[str]], self_id: str, neighbors: Iterable[str], target: str) -> set[str]:
    """Neighbors strictly closer to the target (all of them on equal-cost paths); every neighbor if unknown."""
    neighbors = set(neighbors)
    if target in neighbors:
        return {target}
    distance = _distances(graph, target)
    own = distance.get(self_id)
    closer = {n for n in neighbors if n in distance and (own is None or distance[n] < own)}
    # An unknown or unreachable target, or a stale graph: flood, the seen-cache removes duplicates.
    return closer or neighbors


class Routes:
    """Next hops per topic and per target of one node, valid for one (directory version, links version) key."""

    def __init__(self, self_id: str, max_targets: int = 10_000) -> None:
        self.self_id = self_id
        self.max_targets = max_targets
        self.key: Any = None
        self.graph: dict[str, set[str]] = {}
        self.topics: dict[str, set[str]] = {}
        self.targets: dict[str, set[str]] = {}

    def refresh(self, key: Any, graph: Callable[[], dict[str, set[str]]], neighbors: Collection[str]) -> bool:
        """Start over when ``key`` changed: ``graph()`` (the directory's link graph) plus this node's own links."""
        if key == self.key:
            return False
        self.key = key
        self.topics.clear()
        self.targets.clear()
        links = graph()
        own = set(neighbors)
        links[self.self_id] = own
        for peer in own:
            links.setdefault(peer, set()).add(self.self_id)
        self.graph = links
        return True

    def topic_hops(self, topic: str, subscribers: Callable[[str], set[str]], neighbors: Collection[str]) -> set[str]:
        hops = self.topics.get(topic)
        if hops is None:
            hops = self.topics[topic] = topic_next_hops(self.graph, self.self_id, neighbors, subscribers(topic))
        return hops

    def target_hops(self, target: str, neighbors: Collection[str]) -> set[str]:
        hops = self.targets.get(target)
        if hops is None:
            hops = target_next_hops(self.graph, self.self_id, neighbors, target)
            if len(self.targets) < self.max_targets:
                self.targets[target] = hops
        return hops

    def reachable(self) -> set[str]:
        """Every node the link graph reaches from this one."""
        return _reachable(self.graph, self.self_id, "")
