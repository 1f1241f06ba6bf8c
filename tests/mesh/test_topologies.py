"""Whole meshes on real sockets: redundant links, multi-hop routing, cuts, and many nodes joining and leaving."""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import pytest

from pynndb.mesh.controller import Controller
from tests.helpers import wait_until
from tests.mesh.conftest import Mesh

pytestmark = pytest.mark.timeout(60)


def link(a: Controller, b: Controller) -> None:
    a.connect(b)


class Counts:
    """What each node received on a topic. The callbacks run on the nodes' threads, so the test reads copies taken
    under the same lock (a Counter compared while another thread adds to it can raise)."""

    def __init__(self, nodes: list[Controller], topic: str) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, Counter[bytes]] = {node.id: Counter() for node in nodes}
        for node in nodes:
            node.subscribe(topic, lambda t, payload, origin, node_id=node.id: self._add(node_id, payload))

    def _add(self, node_id: str, payload: bytes) -> None:
        with self._lock:
            self._seen[node_id][payload] += 1

    def __getitem__(self, node_id: str) -> Counter[bytes]:
        with self._lock:
            return Counter(self._seen[node_id])


def subscribe_counting(nodes: list[Controller], topic: str) -> Counts:
    return Counts(nodes, topic)


def everyone_knows_topic(nodes: list[Controller], topic: str) -> bool:
    return all(topic in node.directory().get(other.id, {}).get("topics", []) for node in nodes for other in nodes)


def test_full_mesh_of_four_survives_any_two_cuts_per_node(mesh: Mesh) -> None:
    for cut_node, cut_pair in itertools.product(range(4), itertools.combinations(range(3), 2)):
        nodes = [mesh.node(f"n{cut_node}{''.join(map(str, cut_pair))}-{i}") for i in range(4)]
        for a, b in itertools.combinations(nodes, 2):
            link(a, b)
        center = nodes[cut_node]
        others = [n for n in nodes if n is not center]
        for index in cut_pair:
            center.disconnect(others[index])
        topic = "t"
        received = subscribe_counting(nodes, topic)
        assert wait_until(lambda ns=nodes, t=topic: mesh.converged(ns) and everyone_knows_topic(ns, t))
        for source in nodes:
            for target in nodes:
                assert source.call("PING", target=target.id, timeout=3)["peer"] == target.id
            source.publish(topic, source.id.encode())
        expected = Counter(n.id.encode() for n in nodes)

        def delivered(ns: list[Controller] = nodes, seen: dict = received, want: Counter = expected) -> bool:
            return all(seen[n.id] + Counter([n.id.encode()]) == want for n in ns)

        assert wait_until(delivered)
        # One topology at a time keeps the thread count and the run time down.
        for node in nodes:
            node.stop()


def build_two_clusters(mesh: Mesh) -> tuple[list[Controller], list[tuple[int, int]]]:
    """Nodes 0-3 and 5-8 are two full-mesh clusters; node 4 sits on one long link; 3-8 is the other."""
    nodes = [mesh.node(f"c{i}") for i in range(9)]
    edges = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    edges += [(5, 6), (5, 7), (5, 8), (6, 7), (6, 8), (7, 8)]
    edges += [(0, 4), (4, 5), (3, 8)]
    for a, b in edges:
        link(nodes[a], nodes[b])
    return nodes, edges


def test_nine_node_partial_mesh_routes_everywhere_and_loses_nothing_on_a_cut(mesh: Mesh) -> None:
    nodes, _ = build_two_clusters(mesh)
    assert wait_until(lambda: mesh.converged(nodes), timeout=10)
    plugins = [mesh.plugin(node) for node in nodes]
    for plugin in plugins:
        for target in nodes:
            assert plugin.call("PING", target=target.label, timeout=3)["peer"] == target.id

    topic = "stream"
    receivers = nodes[5:]
    received = subscribe_counting(receivers, topic)
    assert wait_until(lambda: all(topic in nodes[1].directory()[r.id]["topics"] for r in receivers))
    source = nodes[1]
    total = 3000
    for index in range(total // 2):
        source.publish(topic, b"%d" % index)
    # Cut one long link mid-stream (data in flight on it); the other long link still carries everything.
    assert wait_until(lambda: all(sum(received[r.id].values()) >= 100 for r in receivers))
    nodes[4].disconnect(nodes[5])
    for index in range(total // 2, total):
        source.publish(topic, b"%d" % index)
    expected = Counter(b"%d" % i for i in range(total))
    assert wait_until(lambda: all(received[r.id] == expected for r in receivers), timeout=15)
    assert all(max(received[r.id].values()) == 1 for r in receivers)


def test_twenty_two_nodes_join_exchange_and_leave(mesh: Mesh) -> None:
    nodes = [mesh.node(f"m{i:02}", heartbeat=0.15) for i in range(22)]
    # A ring with a few chords: several hops between most pairs, and redundancy everywhere.
    for index, node in enumerate(nodes):
        link(node, nodes[(index + 1) % len(nodes)])
    for index in range(0, len(nodes), 5):
        link(nodes[index], nodes[(index + 11) % len(nodes)])
    assert wait_until(lambda: mesh.converged(nodes), timeout=15)

    received = subscribe_counting(nodes, "all")
    assert wait_until(lambda: everyone_knows_topic(nodes, "all"), timeout=10)
    for node in nodes:
        node.publish("all", node.label.encode())
    want = Counter(n.label.encode() for n in nodes)
    assert wait_until(lambda: all(received[n.id] + Counter([n.label.encode()]) == want for n in nodes), timeout=10)
    assert nodes[0].call("PING", target=nodes[11].id)["peer"] == nodes[11].id
    assert nodes[3].call("LOOKUP", {"name": "m17"}, target="m09")["peer"] == nodes[17].id

    leaving = nodes[7]
    leaving_id = leaving.id
    leaving.stop()
    assert wait_until(lambda: all(not n.directory()[leaving_id]["alive"] for n in nodes if n.running))

    # It comes back (a new id: nodes are stateless) on the same ports; its old neighbor relinks on its own.
    leaving.start()
    assert wait_until(lambda: mesh.converged(nodes), timeout=15)
    # Links it had opened itself are not remembered (no configuration on disk): the operator redoes them.
    leaving.connect(nodes[8])
    assert nodes[0].call("LOOKUP", {"name": "m07"})["peer"] == leaving.id

    for node in nodes[10:]:
        node.stop()
    survivors = nodes[:10]
    gone = {n.id for n in nodes[10:]}
    assert wait_until(
        lambda: all(not n.directory()[g]["alive"] for n in survivors for g in gone) and mesh.converged(survivors),
        timeout=15,
    )
