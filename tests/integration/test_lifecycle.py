"""Process lifecycle: a node serves every command from its first answer; nothing dropped unclosed can hang.

Each case runs in a child process with a deadline, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pynndb.errors import PyNNDBError
from pynndb.mesh.plugin import Plugin
from tests.integration.deployment import Child, free_ports

pytestmark = pytest.mark.timeout(60)


def run_script(source: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `source` in a fresh interpreter; a hang past `timeout` fails the test."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(source)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"the child hung: {expired.stdout!r} {expired.stderr!r}") from None


def test_an_unclosed_plugin_in_a_reference_cycle_is_collected_without_hanging() -> None:
    p1, p2, p3 = free_ports()
    done = run_script(
        f"""
        import gc, sys, time
        from pynndb import Controller, Plugin
        node = Controller({p1}, {p2}, {p3}, label="solo").start()

        def leak_in_a_cycle():
            cmd = Plugin(node)
            cmd.connect()
            assert cmd.call("PING")["pong"] is True
            holder = {{"cmd": cmd}}
            holder["self"] = holder  # a reference cycle, as a traceback's frame makes

        def leak_in_a_traceback():
            cmd = Plugin(node).connect()
            cmd.call("PING")
            try:
                raise RuntimeError("a failed test")
            except RuntimeError as error:
                return error  # its traceback holds this frame, which holds cmd: a cycle

        gc.disable()
        for _ in range(3):
            leak_in_a_cycle()
            kept = leak_in_a_traceback()
            del kept
        started = time.monotonic()
        gc.collect()
        print("collected in", round(time.monotonic() - started, 3), flush=True)
        # A Plugin made after the collection still works, and the node was never disturbed.
        fresh = Plugin(node).connect()
        assert fresh.call("PING")["pong"] is True
        print("still serving", flush=True)
        """,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert "collected in" in done.stdout and "still serving" in done.stdout, done.stdout


def test_nodes_and_plugins_left_open_at_exit_do_not_hang_the_interpreter() -> None:
    a, b = free_ports(), free_ports()
    started = time.monotonic()
    done = run_script(
        f"""
        from pynndb import Controller, Plugin
        nodea = Controller(*{a}, label="a").start()
        nodeb = Controller(*{b}, label="b").start()
        nodea.connect(nodeb)
        cmd = Plugin(nodea)
        cmd.connect()
        assert cmd.call("PING", target="b")["label"] == "b"
        print("done", flush=True)
        # no close(), no stop(): the interpreter exits
        """,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    assert time.monotonic() - started < 20


def test_a_node_process_serves_every_command_from_its_first_answer(tmp_path: Path) -> None:
    ports = free_ports()
    args = [sys.executable, "-m", "pynndb", "node", "--label", "early", "--ports", ",".join(map(str, ports))]
    child = Child(args, tmp_path / "early.log")
    cmd = Plugin(f"tcp://127.0.0.1:{ports[2]}").connect()
    try:
        deadline = time.monotonic() + 20
        first = None
        while first is None:  # bounded by the deadline: ask until the node first answers
            assert time.monotonic() < deadline, "the node never answered"
            try:
                first = cmd.call("HELP", timeout=0.2)
            except PyNNDBError:
                continue
        for name in ("REGISTER", "REPLICATE", "UNREPLICATE", "STATUS", "DIGEST", "LOOKUP", "PING"):
            assert name in first["commands"], (name, sorted(first["commands"]))
    finally:
        cmd.close()
        child.stop()
