"""Regressions found by the chaos harness (tests/chaos) that need node processes, named after their fault."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pynndb.errors import PyNNDBError
from pynndb.mesh.links import HANDSHAKE_SECONDS
from tests.chaos.cluster import Node
from tests.chaos.proxy import BLACKHOLE, UP, FaultProxy
from tests.helpers import wait_until
from tests.mesh.conftest import free_port

pytestmark = pytest.mark.timeout(90)
ROOT = str(Path(__file__).resolve().parents[2])


def linked(node: Node, address: str) -> bool:
    try:
        links = node.call("STATUS", timeout=2)["links"]
    except PyNNDBError:
        return False
    return any(link["address"] == address and link["up"] for link in links)


def test_node_restarted_while_its_peer_is_frozen_links_when_the_peer_thaws(nodes: list[Node], tmp_path: Path) -> None:
    """`pynndb node --connect PEER` started while PEER is frozen (SIGSTOP: a GC pause, a partition) gave up after
    its first attempt and stayed cut off from the mesh for ever; it must link once the peer answers again."""
    peer = Node("a", tmp_path / "a.log", ports=(free_port(), free_port(), free_port()))
    nodes.append(peer)
    peer.start(ROOT)
    address = f"tcp://127.0.0.1:{peer.ports[0]}"
    peer.signal(signal.SIGSTOP)
    try:
        late = Node("b", tmp_path / "b.log", ports=(free_port(), free_port(), free_port()), connect=[address])
        nodes.append(late)
        assert late.start(ROOT, wait=30)  # READY after its first attempt gave up
        assert not linked(late, address)
    finally:
        peer.signal(signal.SIGCONT)
    wait_until(lambda: linked(late, address), timeout=20, interval=0.2)
    assert wait_until(lambda: peer.call("LOOKUP", {"name": "b"}).get("peer"), timeout=10, interval=0.2) == late.id


def test_a_link_reconnected_into_a_black_hole_comes_back_once_the_path_carries_traffic(
    nodes: list[Node], tmp_path: Path
) -> None:
    """The peer restarts while the path to it swallows every byte (a middlebox that accepts connections and forwards
    nothing): the node's reconnection opens, but its ZeroMQ handshake never completes, and libzmq gives such a
    connection 30 s by default before it drops and dials again. Once the path carries traffic, the link must be back
    within a few seconds (chaos seed 2076: the link stayed down past the harness's 15 s after the heal)."""
    proxy = FaultProxy()
    try:
        peer = Node("a", tmp_path / "a.log", ports=(free_port(), free_port(), free_port()))
        nodes.append(peer)
        peer.start(ROOT)
        path = proxy.add("b->a", peer.ports[0], peer.ports[1])
        node = Node("b", tmp_path / "b.log", ports=(free_port(), free_port(), free_port()), connect=[path.address])
        nodes.append(node)
        node.start(ROOT)
        wait_until(lambda: linked(node, path.address), timeout=20, interval=0.2)
        proxy.set_mode("b->a", BLACKHOLE)
        before = path.connections
        peer.terminate()
        peer.start(ROOT)
        # The node dials again (its connection through the proxy ended with the peer's); the greeting goes nowhere.
        wait_until(lambda: path.connections > before, timeout=20, interval=0.05)
        wait_until(lambda: not linked(node, path.address), timeout=10, interval=0.05)  # (silent: it goes down)
        proxy.set_mode("b->a", UP)
        wait_until(lambda: linked(node, path.address), timeout=HANDSHAKE_SECONDS + 8, interval=0.2)
    finally:
        proxy.close()
