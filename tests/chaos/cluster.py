"""The processes of a chaos run: `pynndb node` processes linked through the fault proxy, and writer processes.

The topology: nodes n0..n(N-1); n1 and n2 link to n0, n2 also to n1 (a redundant triangle), then a chain
n3 -> n2, n4 -> n3, ... so n0 to n4 is three hops. Every link goes through a proxy `Link` named "ni->nj".
"""

from __future__ import annotations

import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pynndb import Manager
from pynndb.mesh.plugin import Plugin
from tests.chaos.proxy import FaultProxy
from tests.mesh.conftest import free_port

_node_ports: set[int] = set()


def node_port() -> int:
    """A port for a node, below the kernel's ephemeral range: a node is killed and restarted on the same ports, and
    a port from the ephemeral range (as `free_port` gives) can meanwhile be taken by a connection's local port or a
    proxy's listener ("Address already in use" at the restart). Checked free on 127.0.0.1 when chosen."""
    low = 20000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            first = int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    high = max(low + 1000, first)
    for _ in range(1000):
        port = random.SystemRandom().randrange(low, high)
        if port in _node_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _node_ports.add(port)
        return port
    return free_port()  # (a machine with that whole range in use: the old way)


WRITER = str(Path(__file__).with_name("writer.py"))
HEARTBEAT = "0.2"
SHARED = 5


def read_line(stream: IO[str], timeout: float) -> str:
    """One line from a child's stdout, or '' at the deadline (never blocks past it)."""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline()


@dataclass
class Child:
    """A child process: stdout a pipe for its READY line, stderr appended to its log file."""

    name: str
    log: Path
    process: subprocess.Popen[str] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)  # return codes of incarnations the harness did not kill

    def launch(self, args: list[str], cwd: str, wait: float = 30) -> str:
        """Start the process; its first line (within `wait` s; with 0, see `first_line`)."""
        with open(self.log, "a", encoding="utf-8") as stderr:
            stderr.write(f"--- start {self.starts} at {time.time():.3f}\n")
            stderr.flush()
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=cwd
            )
        self.starts += 1
        return self.first_line(wait) if wait else ""

    def first_line(self, wait: float) -> str:
        """The first line the process printed, waiting up to `wait` s; '' if none yet (it fails if it exited)."""
        assert self.process is not None and self.process.stdout is not None
        line = read_line(self.process.stdout, wait)
        if not line and self.process.poll() is None and wait < 30:
            return ""
        if not line:
            code = self.process.poll()
            self.kill()
            raise RuntimeError(f"{self.name} did not start (exit {code}); see {self.log}")
        return line

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL (by the harness's hand) and reap."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._close()

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM (SIGCONT first, in case it is stopped) and wait; SIGKILL after `timeout`. Returns the code."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            code = self.process.wait(10)
            code = code if code else -signal.SIGKILL
        self._close()
        return code

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class Node(Child):
    ports: tuple[int, int, int] = (0, 0, 0)
    databases: list[str] = field(default_factory=list)
    connect: list[str] = field(default_factory=list)
    id: str = ""
    plugin: Plugin | None = None

    def start(self, cwd: str, wait: float = 30) -> bool:
        """Start the node; with `wait` 0 do not wait for READY (call `ready` until it says True)."""
        args = [sys.executable, "-m", "pynndb", "node", "--label", self.name, "--ports", ",".join(map(str, self.ports))]
        args += ["--heartbeat", HEARTBEAT]
        for path in self.databases:
            args += ["--db", path]
        for address in self.connect:
            args += ["--connect", address]
        self.id = ""
        line = self.launch(args, cwd, wait)
        return self._ready(line) if line else False

    def ready(self) -> bool:
        """Whether the node printed READY (reads its first line without blocking)."""
        return bool(self.id) or self._ready(self.first_line(0))

    def _ready(self, line: str) -> bool:
        if not line:
            return False
        words = line.split()
        if words[:1] != ["READY"]:
            raise RuntimeError(f"{self.name}: unexpected first line {words}")
        self.id = words[1]
        if self.plugin is None:
            self.plugin = Plugin(f"tcp://127.0.0.1:{self.ports[2]}").connect()
        return True

    def call(self, command: str, params: dict[str, Any] | None = None, timeout: float = 5.0) -> dict[str, Any]:
        assert self.plugin is not None
        return self.plugin.call(command, params, timeout=timeout)

    def close_plugin(self) -> None:
        if self.plugin is not None:
            self.plugin.close()
            self.plugin = None


@dataclass
class Writer(Child):
    path: str = ""
    journal: Path = Path()
    seed: int = 0
    rate: float = 10.0
    max_entries: int = 0
    shared: int = 0

    def start(self, cwd: str) -> None:
        args = [sys.executable, WRITER, self.name, self.path, str(self.journal), str(self.seed), str(self.rate)]
        args += [str(self.max_entries), str(self.shared)]
        reply = json.loads(self.launch(args, cwd) or "{}")
        if not reply.get("ready"):
            raise RuntimeError(f"writer {self.name} not ready: {reply}")


@dataclass
class Replication:
    """One replication to configure: `target` (a database on `node`) replicates `sources` in `mode`."""

    target: str
    node: str
    sources: list[str]
    mode: str  # one-way (several sources: an aggregation) or two-way


class Cluster:
    """Databases, nodes, writers and proxy links of one run, created in `workdir`; `close` stops them all."""

    def __init__(self, workdir: Path, nodes: int, seed: int, rate: float, max_entries: int) -> None:
        if nodes < 5:
            raise ValueError("the topology needs at least 5 nodes")
        self.workdir = workdir
        self.cwd = str(Path(__file__).resolve().parents[2])
        self.proxy = FaultProxy()
        last = f"n{nodes - 1}"
        # database -> node holding it; writers write the first five.
        self.holders = {"a": "n0", "b": "n1", "c": last, "p": "n1", "q": "n3"}
        self.holders.update({"a1": "n1", "afar": last, "b3": "n3", "c0": "n0", "agg": "n2"})
        self.replications = [
            Replication("a1", "n1", ["a"], "one-way"),
            Replication("afar", last, ["a"], "one-way"),  # three hops away
            Replication("b3", "n3", ["b"], "one-way"),
            Replication("c0", "n0", ["c"], "one-way"),
            Replication("agg", "n2", ["a", "b", "c"], "one-way"),  # 3 -> 1 aggregation
            Replication("p", "n1", ["q"], "two-way"),
            Replication("q", "n3", ["p"], "two-way"),
        ]
        self.paths = {name: str((workdir / "db" / name).resolve()) for name in self.holders}
        self.uuids: dict[str, str] = {}
        for name in self.paths:
            self.uuids[name] = create_database(self.paths[name])
        edges = [(1, 0), (2, 0), (2, 1)] + [(index, index - 1) for index in range(3, nodes)]
        self.nodes: dict[str, Node] = {}
        for index in range(nodes):
            label = f"n{index}"
            databases = [self.paths[name] for name, holder in self.holders.items() if holder == label]
            ports = (node_port(), node_port(), node_port())
            self.nodes[label] = Node(label, workdir / f"{label}.log", ports=ports, databases=databases)
        for source, target in edges:
            link = self.proxy.add(f"n{source}->n{target}", *self.nodes[f"n{target}"].ports[:2])
            self.nodes[f"n{source}"].connect.append(link.address)
        self.writers = {
            name: Writer(
                name,
                workdir / f"writer-{name}.log",
                path=self.paths[name],
                journal=workdir / f"writer-{name}.jsonl",
                seed=seed,
                rate=rate,
                max_entries=max_entries,
                shared=SHARED if name in ("p", "q") else 0,  # the two-way pair also writes the same keys
            )
            for name in ("a", "b", "c", "p", "q")
        }

    def start(self) -> None:
        for node in self.nodes.values():
            node.start(self.cwd)
        for replication in self.replications:
            self.replicate(replication)
        for writer in self.writers.values():
            writer.start(self.cwd)

    def replicate(self, replication: Replication) -> None:
        node = self.nodes[replication.node]
        for source in replication.sources:
            params = {"path": self.paths[replication.target], "uuid": self.uuids[source], "mode": replication.mode}
            node.call("REPLICATE", params, timeout=10)

    def wipe(self, name: str) -> None:
        """Delete a replica database and create it again, empty (its node must be down)."""
        shutil.rmtree(self.paths[name])
        self.uuids[name] = create_database(self.paths[name])

    def source_of(self, name: str) -> list[str]:
        return [
            source for replication in self.replications if replication.target == name for source in replication.sources
        ]

    def close(self) -> dict[str, int]:
        """Stop writers, then nodes (SIGTERM), then the proxy; returns each node's last exit code."""
        codes: dict[str, int] = {}
        for writer in self.writers.values():
            if writer.alive():
                writer.terminate()
        for label, node in self.nodes.items():
            node.close_plugin()
            if node.process is not None and node.process.poll() is None:
                codes[label] = node.terminate()
        self.proxy.close()
        return codes


def create_database(path: str) -> str:
    """An empty database with a journal; returns its UUID."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with Manager() as manager:
        return manager.database(path, config={"replication": True}).replication.uuid
