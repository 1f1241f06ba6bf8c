"""Regressions found by the chaos harness (tests/chaos) that need node processes, named after their fault."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from pynndb.errors import PyNNDBError
from tests.chaos.cluster import Node
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
