"""Mesh at scale: N `pynndb node` processes on 127.0.0.1, idle, and what membership costs them.

The nodes form a random tree (node i ``--connect``s to a random earlier node) plus a few redundant links
(``CONNECT``). Printed per N: time until node 0 knows every label (from the last READY), idle CPU of all nodes
together, frames and bytes per node per second idle (from STATUS counters), RSS per node, PING p50 from node 0 to
the farthest node, time until a newly started node is known everywhere, and time until a SIGKILLed leaf is marked
gone everywhere. ``--soak S`` adds an idle run of S seconds and counts every node marked gone (``peers_down``).
Every process is killed by PID at the end, whatever happens.

Run: ``python benchmarks/scale.py --nodes 10,40,100 [--repeat 3] [--idle 10] [--soak 300]``;
``--directory 1000,10000`` prints in-process costs of a directory that size (memory, graph, route, digest).
"""

from __future__ import annotations

import argparse
import os
import random
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections import deque
from typing import Any

import orjson
from common import free_port, percentiles

from pynndb.mesh.directory import Directory, Entry, validate_entry
from pynndb.mesh.plugin import Plugin
from pynndb.mesh.routing import target_next_hops

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_handed_out: set[int] = set()


def unique_port() -> int:
    """A free port not handed to another node of this run (free_port alone may repeat one among hundreds)."""
    for _ in range(100):
        port = free_port()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port")


class Node:
    """One `pynndb node` process and a Plugin on its command port."""

    def __init__(self, index: int, heartbeat: float, connect: str | None) -> None:
        self.index = index
        self.label = f"s{index:04}"
        self.heartbeat, self.connect = heartbeat, connect
        self.id = ""
        self.ready_at = 0.0
        self.attempts = 0
        self._plugin: Plugin | None = None
        self.spawn()

    def spawn(self) -> None:
        """Start the process on fresh ports (again, when a port was taken meanwhile by someone's connection)."""
        self.attempts += 1
        self.ports = (unique_port(), unique_port(), unique_port())
        args = [sys.executable, "-m", "pynndb", "node", "--label", self.label, "--heartbeat", str(self.heartbeat)]
        args += ["--ports", ",".join(map(str, self.ports))]
        if self.connect is not None:
            args += ["--connect", self.connect]
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (closed by kill())
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[0]}"

    @property
    def plugin(self) -> Plugin:
        if self._plugin is None:
            self._plugin = Plugin(f"tcp://127.0.0.1:{self.ports[2]}").connect()
        return self._plugin

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def alive_labels(self) -> dict[str, bool]:
        nodes = self.plugin.call("NODES", timeout=5)["nodes"]
        return {entry["label"]: bool(entry["alive"]) for node_id, entry in nodes.items()}

    def kill(self) -> None:
        if self._plugin is not None:
            self._plugin.close()
            self._plugin = None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()

    def error_output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-1500:]


def wait_ready(nodes: list[Node], deadline: float) -> None:
    """Read every node's READY line (bounded by the deadline)."""
    waiting = {node.process.stdout: node for node in nodes if not node.id}
    with selectors.DefaultSelector() as selector:
        for stream in waiting:
            selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(waiting)} nodes not ready")
            for key, _ in selector.select(remaining):
                node = waiting.pop(key.fileobj)  # type: ignore[arg-type]
                selector.unregister(key.fileobj)
                words = node.process.stdout.readline().split()  # type: ignore[union-attr]
                if words[:1] != ["READY"]:
                    output = node.error_output()
                    if "Address already in use" not in output or node.attempts >= 3:
                        raise RuntimeError(f"{node.label} did not start: {words} {output}")
                    node.kill()
                    node.spawn()
                    waiting[node.process.stdout] = node
                    selector.register(node.process.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
                    continue
                node.id, node.ready_at = words[1], time.monotonic()


def start_mesh(count: int, heartbeat: float, rng: random.Random, nodes: list[Node]) -> dict[int, set[int]]:
    """Start a random tree of ``count`` nodes, parents before children, a few at a time; return its adjacency."""
    adjacency: dict[int, set[int]] = {0: set()}
    parents = [rng.randrange(i) if i else -1 for i in range(count)]
    deadline = time.monotonic() + 60 + count
    started = 0
    while started < count:
        batch = []
        while started < count and len(batch) < 8 and (parents[started] < 0 or nodes[parents[started]].id):
            parent = parents[started]
            batch.append(Node(started, heartbeat, nodes[parent].address if parent >= 0 else None))
            nodes.append(batch[-1])
            if parent >= 0:
                adjacency.setdefault(started, set()).add(parent)
                adjacency[parent].add(started)
            started += 1
        wait_ready(batch or [n for n in nodes if not n.id][:1], deadline)
    return adjacency


def add_redundant_links(nodes: list[Node], adjacency: dict[int, set[int]], rng: random.Random) -> None:
    for _ in range(max(1, len(nodes) // 10)):
        a, b = rng.sample(range(len(nodes)), 2)
        if b not in adjacency[a]:
            nodes[a].plugin.call("CONNECT", {"address": nodes[b].address}, timeout=10)
            adjacency[a].add(b)
            adjacency[b].add(a)


def distances(adjacency: dict[int, set[int]], start: int) -> dict[int, int]:
    found = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for peer in adjacency[node]:
            if peer not in found:
                found[peer] = found[node] + 1
                queue.append(peer)
    return found


def poll(predicate: Any, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until ``predicate()`` held, or None at the timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    return None


def everywhere(nodes: list[Node], label: str, alive: bool) -> bool:
    return all(node.alive_labels().get(label, False) == alive for node in nodes)


def marked_gone(waiting: list[Node], label: str) -> bool:
    """Ask only the nodes that have not yet marked ``label`` gone (a killed node never comes back), so the time
    measured is when the last one did, not the length of a round of questions to every node."""
    waiting[:] = [node for node in waiting if node.alive_labels().get(label, False)]
    return not waiting


def counters(nodes: list[Node]) -> list[dict[str, int]]:
    return [node.plugin.call("STATUS", timeout=5)["counters"] for node in nodes]


def rate(after: dict[str, int], before: dict[str, int], what: str, elapsed: float) -> float:
    """In plus out per second of ``frames`` or ``bytes``, minus the STATUS exchange that read them (not counted:
    it goes to the command port, not over links)."""
    return (after[f"{what}_in"] + after[f"{what}_out"] - before[f"{what}_in"] - before[f"{what}_out"]) / elapsed


def run(count: int, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes: list[Node] = []
    result: dict[str, Any] = {"nodes": count}
    try:
        adjacency = start_mesh(count, args.heartbeat, rng, nodes)
        last_ready = max(node.ready_at for node in nodes)
        labels = {node.label for node in nodes}
        known = poll(lambda: {k for k, v in nodes[0].alive_labels().items() if v} >= labels, 60, 0.0)
        result["known_at_0"] = None if known is None else time.monotonic() - last_ready
        add_redundant_links(nodes, adjacency, rng)
        poll(lambda: False, args.settle)  # let the new links' announcements and the first probes settle

        before_cpu = [node.cpu_seconds() for node in nodes]
        before = counters(nodes)
        start = time.monotonic()
        time.sleep(args.idle)
        elapsed = time.monotonic() - start
        after = counters(nodes)
        cpu = sum(node.cpu_seconds() - b for node, b in zip(nodes, before_cpu, strict=True))
        result["idle_cpu_pct"] = 100 * cpu / elapsed
        frames = [rate(a, b, "frames", elapsed) for a, b in zip(after, before, strict=True)]
        sizes = [rate(a, b, "bytes", elapsed) for a, b in zip(after, before, strict=True)]
        result["frames_per_node_s"] = statistics.median(frames)
        result["frames_per_node_s_max"] = max(frames)
        result["bytes_per_node_s"] = statistics.median(sizes)
        result["rss_mb"] = statistics.median(node.rss_mb() for node in nodes)

        hops = distances(adjacency, 0)
        far = max(hops, key=lambda i: hops[i])
        result["max_hops"] = hops[far]
        samples = []
        for _ in range(50):
            begin = time.perf_counter()
            nodes[0].plugin.call("PING", target=nodes[far].id, timeout=5)
            samples.append(time.perf_counter() - begin)
        result["ping_far_ms"] = percentiles(samples)[0] * 1000

        joiner = Node(count, args.heartbeat, nodes[rng.randrange(count)].address)
        nodes.append(joiner)
        wait_ready([joiner], time.monotonic() + 30)
        joined = poll(lambda: everywhere(nodes[:count], joiner.label, True), 30, 0.0)
        result["join_known_everywhere_s"] = None if joined is None else time.monotonic() - joiner.ready_at

        leaves = [i for i in range(1, count) if len(adjacency[i]) == 1]
        victim = nodes[rng.choice(leaves) if leaves else count - 1]
        survivors = [node for node in nodes if node is not victim]
        waiting = list(survivors)
        victim.kill()
        result["kill_gone_everywhere_s"] = poll(lambda: marked_gone(waiting, victim.label), 30, 0.0)

        if args.soak:
            down_before = sum(c["peers_down"] for c in counters(survivors))
            cpu_before = [node.cpu_seconds() for node in survivors]
            time.sleep(args.soak)
            soak_counters = counters(survivors)
            result["soak_false_gone"] = sum(c["peers_down"] for c in soak_counters) - down_before
            result["soak_suspicions"] = sum(c["suspicions"] for c in soak_counters)
            result["soak_cpu_pct"] = (
                100 * sum(node.cpu_seconds() - b for node, b in zip(survivors, cpu_before, strict=True)) / args.soak
            )
    finally:
        for node in nodes:
            node.kill()
    return result


def directory_costs(count: int) -> str:
    """In-process costs of a directory of ``count`` entries (a random tree; one node in ten sources a database)."""
    rng = random.Random(count)
    ids = [uuid.uuid4().hex for _ in range(count)]
    links: dict[int, set[int]] = {i: set() for i in range(count)}
    for i in range(1, count):
        parent = rng.randrange(i)
        links[i].add(parent)
        links[parent].add(i)
    tracemalloc.start()
    directory = Directory(ids[0])
    for i in range(count):
        source = {str(uuid.uuid4()): {"path": "/var/lib/pynndb/db", "seq": 123456, "clock": 1 << 50}}
        services = {"replication": {"sources": source, "replicas": {}}} if i % 10 == 0 else {}
        links_of = sorted(ids[j] for j in links[i])
        directory.merge(
            Entry(
                id=ids[i], label=f"node-{i:05}", address=f"tcp://10.0.{i // 250}.{i % 250}:7000", links=links_of,
                services=services, topics=[], public_key="k" * 40, heartbeat=1.0, seq=3, started=1.0,
            )
        )  # fmt: skip
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()

    def timed(function: Any) -> float:
        begin = time.perf_counter()
        function()
        return (time.perf_counter() - begin) * 1000

    graph_ms = timed(directory.graph)
    graph = directory.graph()
    route_ms = timed(lambda: target_next_hops(graph, ids[0], [ids[j] for j in links[0]], ids[-1]))
    snapshot_ms = timed(directory.snapshot)
    body = orjson.dumps({"entries": directory.alive_entries()})
    validate_ms = timed(lambda: [validate_entry(raw) for raw in orjson.loads(body)["entries"]])
    directory.state_version += 1
    digest_ms = timed(directory.digest)
    return (
        f"{count} entries: {memory / 1e6:.1f} MB of directory, link graph {graph_ms:.0f} ms, "
        f"one route {route_ms:.1f} ms, snapshot {snapshot_ms:.0f} ms, "
        f"whole directory {len(body) / 1e6:.2f} MB (validated in {validate_ms:.0f} ms), "
        f"digest {digest_ms:.1f} ms"
    )


COLUMNS = [
    ("nodes", "nodes", "{}"),
    ("max_hops", "max hops", "{}"),
    ("known_at_0", "all labels at node 0 (s)", "{:.2f}"),
    ("idle_cpu_pct", "idle CPU, all nodes (% core)", "{:.1f}"),
    ("frames_per_node_s", "frames/node/s", "{:.1f}"),
    ("frames_per_node_s_max", "max frames/node/s", "{:.1f}"),
    ("bytes_per_node_s", "bytes/node/s", "{:.0f}"),
    ("rss_mb", "RSS/node (MB)", "{:.0f}"),
    ("ping_far_ms", "PING p50 farthest (ms)", "{:.2f}"),
    ("join_known_everywhere_s", "new node known everywhere (s)", "{:.2f}"),
    ("kill_gone_everywhere_s", "SIGKILL gone everywhere (s)", "{:.2f}"),
    ("soak_false_gone", "soak: false gone", "{}"),
    ("soak_suspicions", "soak: suspicions", "{}"),
    ("soak_cpu_pct", "soak: CPU (% core)", "{:.1f}"),
]


def median_of(results: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in results if r.get(key) is not None]
    if not values:
        return None
    return statistics.median(values) if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="10,40,100", help="comma-separated mesh sizes")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (the table shows medians)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle measurement")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds between convergence and measuring")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of idle soak counting false 'gone'")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="probe period of every node")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--directory", help="comma-separated directory sizes: in-process costs only, no processes")
    args = parser.parse_args()
    if args.directory:
        for count in (int(n) for n in args.directory.split(",")):
            print(directory_costs(count), flush=True)
        return
    rows = []
    for count in (int(n) for n in args.nodes.split(",")):
        results = [run(count, args, args.seed + attempt) for attempt in range(args.repeat)]
        for result in results:
            print("#", result, flush=True)
        rows.append({key: median_of(results, key) for key, _, _ in COLUMNS})
    shown = [(key, title, form) for key, title, form in COLUMNS if any(row.get(key) is not None for row in rows)]
    print("| " + " | ".join(title for _, title, _ in shown) + " |")
    print("|" + "---|" * len(shown))
    for row in rows:
        cells = ["–" if row[key] is None else form.format(row[key]) for key, _, form in shown]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
