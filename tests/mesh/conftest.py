"""Fixtures for mesh tests: free loopback ports, nodes and plugins that are always stopped, a polling wait."""

from __future__ import annotations

import socket
from typing import Any

from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin
from tests.helpers import wait_until  # noqa: F401  (re-exported for the mesh tests)

HEARTBEAT = 0.1
_used_ports: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this session has not handed out."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return int(port)
    raise RuntimeError("no free port found")


class Mesh:
    """Creates nodes and plugins for one test and stops them all at teardown."""

    def __init__(self) -> None:
        self.nodes: list[Controller] = []
        self.plugins: list[Plugin] = []

    def node(self, label: str, heartbeat: float = HEARTBEAT, **options: Any) -> Controller:
        node = Controller(free_port(), free_port(), free_port(), label=label, heartbeat=heartbeat, **options)
        self.nodes.append(node)
        return node.start()

    def plugin(self, node: Controller | str, **options: Any) -> Plugin:
        plugin = Plugin(node, **options)
        self.plugins.append(plugin)
        return plugin.connect()

    def converged(self, nodes: list[Controller] | None = None) -> bool:
        """Every running node sees every other running node alive."""
        nodes = [n for n in (nodes or self.nodes) if n.running]
        ids = {n.id for n in nodes}
        for node in nodes:
            directory = node.directory()
            if not all(directory.get(i, {}).get("alive") for i in ids):
                return False
        return True

    def close(self) -> None:
        for plugin in self.plugins:
            plugin.close()
        for node in self.nodes:
            node.stop()


def linked_pair(mesh: Mesh) -> tuple[Controller, Controller, Plugin, str]:
    """Nodes 'a' and 'b' linked, a plugin connected to 'a', and the id under which 'a' finds 'b'."""
    nodea, nodeb = mesh.node("a"), mesh.node("b")
    nodea.connect(nodeb)
    cmd = mesh.plugin(nodea)
    return nodea, nodeb, cmd, cmd.call("LOOKUP", {"name": "b"})["peer"]
