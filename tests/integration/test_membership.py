"""Membership with `pynndb node` processes: a stalled node (SIGSTOP) is suspected, not killed off; one stalled for
long is marked gone and comes back by itself when it runs again; a SIGKILLed one is marked gone everywhere."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pynndb.mesh.plugin import Plugin
from tests.helpers import wait_until
from tests.integration.deployment import NodeProcess, free_ports

pytestmark = pytest.mark.timeout(90)
PERIOD = 1.0  # the default probe period: what "one missed beat" means to users


def alive_at(plugin: Plugin, node_id: str) -> bool:
    return bool(plugin.call("NODES", timeout=5)["nodes"].get(node_id, {}).get("alive"))


def test_stalled_node_is_suspected_not_gone_a_long_stall_comes_back_and_a_kill_is_gone(tmp_path: Path) -> None:
    started: list[NodeProcess] = []
    plugins: list[Plugin] = []
    try:
        a = NodeProcess(tmp_path / "a.log", "a", free_ports(), [], [], heartbeat=PERIOD)
        started.append(a)
        address_a = f"tcp://127.0.0.1:{a.ports[0]}"
        b = NodeProcess(tmp_path / "b.log", "b", free_ports(), [], [address_a], heartbeat=PERIOD)
        started.append(b)
        address_b = f"tcp://127.0.0.1:{b.ports[0]}"
        c = NodeProcess(tmp_path / "c.log", "c", free_ports(), [], [address_a, address_b], heartbeat=PERIOD)
        started.append(c)
        for node in (a, b):
            plugins.append(Plugin(f"tcp://127.0.0.1:{node.ports[2]}").connect())
        wait_until(lambda: all(alive_at(p, c.id) for p in plugins))

        # Two seconds stopped: probes go unanswered, c is suspected, and refutes when it runs again.
        os.kill(c.process.pid, signal.SIGSTOP)
        seen_gone = False
        until = time.monotonic() + 2.0
        while time.monotonic() < until:
            seen_gone |= not all(alive_at(p, c.id) for p in plugins)
            time.sleep(0.1)
        os.kill(c.process.pid, signal.SIGCONT)
        until = time.monotonic() + 3 * PERIOD
        while time.monotonic() < until:
            seen_gone |= not all(alive_at(p, c.id) for p in plugins)
            time.sleep(0.1)
        assert not seen_gone

        # Stopped for long: marked gone; running again, it learns that and comes back by itself.
        os.kill(c.process.pid, signal.SIGSTOP)
        try:
            wait_until(lambda: not any(alive_at(p, c.id) for p in plugins), timeout=30)
        finally:
            os.kill(c.process.pid, signal.SIGCONT)
        wait_until(lambda: all(alive_at(p, c.id) for p in plugins), timeout=30)

        c.stop(signal.SIGKILL)
        wait_until(lambda: not any(alive_at(p, c.id) for p in plugins), timeout=30)
        assert all(alive_at(p, b.id) for p in plugins[:1]) and alive_at(plugins[1], a.id)
    finally:
        for plugin in plugins:
            plugin.close()
        for process in started:
            process.stop(signal.SIGKILL)


def test_nodes_cut_off_by_a_kill_are_marked_gone_on_both_sides(tmp_path: Path) -> None:
    started: list[NodeProcess] = []
    plugins: list[Plugin] = []
    try:
        a = NodeProcess(tmp_path / "a.log", "a", free_ports(), [], [], heartbeat=0.2)
        started.append(a)
        b = NodeProcess(tmp_path / "b.log", "b", free_ports(), [], [f"tcp://127.0.0.1:{a.ports[0]}"], heartbeat=0.2)
        started.append(b)
        c = NodeProcess(tmp_path / "c.log", "c", free_ports(), [], [f"tcp://127.0.0.1:{b.ports[0]}"], heartbeat=0.2)
        started.append(c)
        plugin_a, plugin_c = (Plugin(f"tcp://127.0.0.1:{node.ports[2]}").connect() for node in (a, c))
        plugins += [plugin_a, plugin_c]
        wait_until(lambda: alive_at(plugin_a, c.id) and alive_at(plugin_c, a.id))
        b.stop(signal.SIGKILL)  # the only path between a and c: neither can probe the other any more
        wait_until(lambda: not alive_at(plugin_a, c.id) and not alive_at(plugin_c, a.id), timeout=30)
        assert not alive_at(plugin_a, b.id) and not alive_at(plugin_c, b.id)
    finally:
        for plugin in plugins:
            plugin.close()
        for process in started:
            process.stop(signal.SIGKILL)
