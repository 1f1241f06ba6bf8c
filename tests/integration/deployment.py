"""Two ways to run a mesh for one test: nodes in the test process, or `pynndb node` OS processes.

Scenarios take the `deployment` fixture (parametrized over both) and use one small interface: start a node with its
databases and links, get a Plugin, kill a node (SIGKILL for processes) and restart it with the same label, ports and
database files. The test process plays the application: it opens its own handles on the same database files.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pynndb import Database
from pynndb.errors import MeshError
from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin
from tests.mesh.conftest import free_port

HEARTBEAT = 0.2


def read_line(stream: IO[str], deadline: float) -> str:
    """One line from a child's stdout, or fail at the deadline (never blocks past it)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not selector.select(remaining):
            raise AssertionError("no output from the child process in time")
    return stream.readline()


class Child:
    """A child process with a line-oriented stdout and its stderr in a log file; killed at teardown."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log_path = log
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1
            )

    def line(self, timeout: float = 20) -> str:
        line = read_line(self.process.stdout, time.monotonic() + timeout)  # type: ignore[arg-type]
        if not line:
            raise AssertionError(f"{self.args} exited ({self.process.wait(5)}): {self.log_path.read_text()[-2000:]}")
        return line

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout)
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()


class Addresses:
    """The loopback addresses of a node from its three ports."""

    ports: tuple[int, int, int]

    @property
    def address(self) -> str:
        """The front door (port1), what other nodes connect to."""
        return f"tcp://127.0.0.1:{self.ports[0]}"

    @property
    def command_address(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[2]}"


class NodeProcess(Child, Addresses):
    """`pynndb node` in its own process; `id` is the node id from its READY line."""

    def __init__(
        self,
        log: Path,
        label: str,
        ports: tuple[int, int, int],
        databases: list[str],
        connect: list[str],
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self.label, self.ports = label, ports
        args = [sys.executable, "-m", "pynndb", "node", "--label", label, "--ports", ",".join(map(str, ports))]
        args += ["--heartbeat", str(heartbeat)]
        for path in databases:
            args += ["--db", path]
        for address in connect:
            args += ["--connect", address]
        super().__init__(args, log)
        words = self.line().split()
        assert words[:1] == ["READY"] and words[2] == label, words
        self.id = words[1]


def free_ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


@dataclass
class Node(Addresses):
    """One node of a deployment, whichever way it runs."""

    label: str
    ports: tuple[int, int, int]
    databases: list[str]
    connect: list[str]
    id: str = ""
    runner: Any = field(default=None, repr=False)  # a Controller or a NodeProcess


class Deployment:
    """Nodes and plugins of one test; everything started is stopped at `close()`."""

    kind = "abstract"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.nodes: list[Node] = []
        self.plugins: list[Plugin] = []

    def node(self, label: str, databases: list[str] | None = None, connect: list[Node] | None = None) -> Node:
        """Start a node serving `databases` (paths) and linked to the `connect` nodes."""
        node = Node(label, free_ports(), list(databases or []), [peer.address for peer in connect or []])
        for attempt in range(3):
            try:
                self._start(node)
                break
            except (AssertionError, MeshError) as error:
                # A port found free can be taken by another program before the node binds it: pick others.
                if "Address already in use" not in str(error) or attempt == 2:
                    raise
                node.ports = free_ports()
        self.nodes.append(node)
        return node

    def chain(self, *labels: str) -> list[Node]:
        """Nodes linked in a line (each connects to the one before)."""
        created: list[Node] = []
        for label in labels:
            created.append(self.node(label, connect=created[-1:]))
        return created

    def plugin(self, node: Node) -> Plugin:
        plugin = Plugin(node.command_address).connect()
        self.plugins.append(plugin)
        return plugin

    def restart(self, node: Node) -> Node:
        """The same node (label, ports, database files, links) started again: a new node id, the same data."""
        self._start(node)
        return node

    def kill(self, node: Node) -> None:
        raise NotImplementedError

    def _start(self, node: Node) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for plugin in self.plugins:
            plugin.close()
        for node in self.nodes:
            if node.runner is not None:
                self.kill(node)


class InProcess(Deployment):
    """Every node is a Controller in the test process (sharing its database objects with the test)."""

    kind = "in-process"

    def _start(self, node: Node) -> None:
        controller = Controller(*node.ports, label=node.label, heartbeat=HEARTBEAT).start()
        node.runner = controller
        node.id = controller.id
        assert controller.replication is not None
        for path in node.databases:
            controller.replication.attach(path)
        for address in node.connect:
            controller.connect(address, timeout=10.0)

    def kill(self, node: Node) -> None:
        controller, node.runner = node.runner, None
        if controller is not None:
            controller.stop()


class Processes(Deployment):
    """Every node is a `pynndb node` OS process; the test process only holds its own database handles."""

    kind = "processes"

    def _start(self, node: Node) -> None:
        log = self.tmp_path / f"{node.label}.log"
        process = NodeProcess(log, node.label, node.ports, node.databases, node.connect)
        node.runner = process
        node.id = process.id

    def kill(self, node: Node) -> None:
        process, node.runner = node.runner, None
        if process is not None:
            process.stop(signal.SIGKILL)

    def logs(self) -> dict[str, str]:
        return {path.name: path.read_text() for path in self.tmp_path.glob("*.log")}


class Writer(threading.Thread):
    """The application writing: appends numbered documents to a table until stopped (or `count` is reached), one
    transaction each."""

    def __init__(self, db: Database, count: int = 100_000, pause: float = 0.001) -> None:
        super().__init__(name="test-writer", daemon=True)
        self.table = db.table("events")
        self.count = count
        self.pause = pause
        self.written = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.written < self.count and not self.halt.is_set():
                self.table.append({"serial": self.written})
                self.written += 1
                self.halt.wait(self.pause)
        except BaseException as error:  # reported by finish()
            self.error = error

    def passed(self, count: int) -> bool:
        """Whether it has written more than `count` documents; raises at once the error that stopped it, if any."""
        assert self.error is None, f"the writer stopped after {self.written} documents: {self.error!r}"
        return self.written > count

    def finish(self) -> int:
        self.halt.set()
        self.join(timeout=10)
        assert self.error is None, self.error
        return self.written


def start_writer(writers: list[Writer], db: Database, **options: Any) -> Writer:
    writer = Writer(db, **options)
    writers.append(writer)
    writer.start()
    return writer
