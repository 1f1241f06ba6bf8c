"""Replication benchmark: pynndb node processes against a Redis master + replica and against the same shape of
deployment built from the raw building blocks (py-lmdb + orjson + pyzmq: benchmarks/raw_replication.py), same
harness, same run.

Everything runs on 127.0.0.1 and is started and stopped here: `pynndb node` processes (a 2-node pair for 1 hop, a
4-node chain for 3 hops) fed by this process acting as the application, and `redis-server` (skipped with a clear
line when it is not installed). Figures: write-to-readable lag p50/p99 (with each node's CPU a sample, and the
source's rounds a sample: journal reads it published, each one frame the replica applies at once), sustained
replicated ingest with batched writes and the replica's tail, full sync of a new replica (without a journal of its
own, and with one as in the README's example); medians where repeated. The raw column (1-hop lag, ingest, full sync) is
the floor of the libraries on this machine: pynndb ÷ raw is what pynndb's own layers cost.
Lag is measured for the write patterns applications have: back-to-back dependent writes (write, wait until readable
on the replica, write again at once), spaced writes, bursts, and one write after an idle spell.
Run: ``python benchmarks/replication.py [--docs N] [--samples N] [--runs K] [--quick]
[--lag-only | --full-sync-only | --ingest-only] [--patterns back-to-back,spaced,burst,idle] [--idle-samples N]
[--py-spy DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import orjson
import raw_replication
from common import build_line, free_port, frozen_heap, make_documents, percentiles

from pynndb import Manager
from pynndb.core.database import Database
from pynndb.mesh.plugin import Plugin

BATCH = 1000  # documents per transaction (per pipeline for Redis) in the sustained-ingest figures
FULL_SYNC_COMMITS = 2000  # the full-sync source is loaded in this many transactions: its journal (max 1000
# entries, trimmed every 512 commits) then no longer starts at 1, so a new replica needs a snapshot
LAG_TIMEOUT = 1.0  # a lag sample that takes longer counts as lost
PAUSE = (0.001, 0.003)  # the "spaced" pattern: a random pause between dependent writes
BURST = 100  # the "burst" pattern: this many commits back to back, then each is waited for
IDLE = 5.0  # the "idle" pattern: one write after this long without any
SETTLE_TIMEOUT = 120.0  # bound on any "wait until the replica has everything"


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.0005) -> float:
    """Poll `condition` until true; return the perf_counter() at which it was seen; raise after `timeout`."""
    deadline = time.perf_counter() + timeout
    while True:
        if condition():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout:.0f}s")
        time.sleep(interval)


PATTERNS = ("back-to-back", "spaced", "burst", "idle")


def bursts(samples: int) -> int:
    """How many bursts the burst pattern writes for `samples` (one lag sample per burst)."""
    return max(10, samples // 10)


def documents_needed(samples: int, patterns: list[str], idle: int) -> int:
    return sum(bursts(samples) * BURST if p == "burst" else idle if p == "idle" else samples for p in patterns)


def measure_lag(
    write: Callable[[int], Any], visible: Callable[[Any], bool], samples: int, pattern: str, idle_samples: int
) -> tuple[list[float], int]:
    """Write-to-readable lag of the application's pattern of writes. Returns (seconds per sample, lost samples).

    - back-to-back: write, poll the replica until readable, write the next at once (a read-your-write loop);
    - spaced: the same with a random 1-3 ms pause between samples;
    - burst: BURST single-document commits back to back; the lag of the last one (the whole burst is then there);
    - idle: one write after IDLE seconds without any, `idle_samples` times.
    No warm-up: the first sample counts like every other one.
    """
    lags: list[float] = []
    lost = 0
    clock = time.perf_counter

    def wait_visible(token: Any, start: float) -> bool:
        deadline = start + LAG_TIMEOUT
        while not visible(token):
            # Poll as fast as possible but give the CPU away between polls: on 2 cores a pure spin would starve
            # the very processes being measured (the same for both systems).
            os.sched_yield()
            if clock() > deadline:
                return False
        return True

    # The harness holds large document lists; a cyclic GC pass in this process would be timed as lag.
    with frozen_heap():
        if pattern == "burst":
            # The harness cannot watch while it writes, so a burst's lag is its last write's: from that commit until
            # it is readable on the replica (which applies in order, so the whole burst is then there).
            for burst in range(bursts(samples)):
                for i in range(burst * BURST, (burst + 1) * BURST - 1):
                    write(i)
                start = clock()
                token = write((burst + 1) * BURST - 1)
                if wait_visible(token, start):
                    lags.append(clock() - start)
                else:
                    lost += 1
            return lags, lost
        count = idle_samples if pattern == "idle" else samples
        for i in range(count):
            if pattern == "idle":
                time.sleep(IDLE)
            start = clock()
            token = write(i)
            if wait_visible(token, start):
                lags.append(clock() - start)
            else:
                lost += 1
            if pattern == "spaced":
                time.sleep(random.uniform(*PAUSE))
        return lags, lost


class NodeProcess:
    """One `python -m pynndb node` process; its stderr goes to a log file in the work directory."""

    def __init__(self, label: str, workdir: str, connect: str | None, heartbeat: float) -> None:
        self.label = label
        self.ports = (free_port(), free_port(), free_port())
        self.address = f"tcp://127.0.0.1:{self.ports[0]}"
        self.command_address = f"tcp://127.0.0.1:{self.ports[2]}"
        self.log_path = os.path.join(workdir, f"node-{label}.log")
        command = [sys.executable, "-m", "pynndb", "node", "--label", label, "--heartbeat", str(heartbeat)]
        command += ["--ports", ",".join(map(str, self.ports))]
        if connect:
            command += ["--connect", connect]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, cwd=workdir)
        self.pid = self.process.pid

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if self.process.poll() is not None:
                    break
                if selector.select(remaining) and self.process.stdout.readline().startswith(b"READY"):
                    return
        raise RuntimeError(f"node {self.label} did not start; see {self.log_path}:\n{self.tail()}")

    def tail(self) -> str:
        with open(self.log_path, "rb") as log:
            return log.read()[-2000:].decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


class Mesh:
    """A chain of node processes n0 - n1 - ... started in `workdir`; `call` reaches any of them by label."""

    def __init__(self, size: int, workdir: str, heartbeat: float = 1.0) -> None:
        self.nodes: list[NodeProcess] = []
        self.plugin: Plugin | None = None
        try:
            for i in range(size):
                connect = self.nodes[-1].address if self.nodes else None
                self.nodes.append(self.start(f"n{i}", workdir, connect, heartbeat))
            self.plugin = Plugin(self.nodes[0].command_address).connect()
            ends = (self.nodes[0].label, self.nodes[-1].label)
            wait_for(
                lambda: all(self.alive_nodes(label) == size for label in ends),
                30,
                "mesh directories to converge",
                0.05,
            )
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def start(label: str, workdir: str, connect: str | None, heartbeat: float, attempts: int = 3) -> NodeProcess:
        """A ready node; started again on fresh ports when another process took one of its free ports meanwhile."""
        for attempt in range(attempts):
            node = NodeProcess(label, workdir, connect, heartbeat)
            try:
                node.wait_ready()
                return node
            except RuntimeError:
                node.stop()
                if attempt == attempts - 1 or "Address already in use" not in node.tail():
                    raise
        raise RuntimeError(f"node {label} did not start")

    def alive_nodes(self, label: str) -> int:
        nodes = self.call("NODES", {}, label)["nodes"]
        return sum(1 for entry in nodes.values() if entry.get("alive", True))

    def call(self, command: str, params: dict[str, Any], target: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.plugin is not None
        return self.plugin.call(command, params, target=target, timeout=timeout)

    def stop(self) -> None:
        if self.plugin is not None:
            self.plugin.close()
        for node in self.nodes:
            node.stop()


def py_spy_executable() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")  # a venv's bin/ need not be on PATH
    return shutil.which("py-spy") or (beside if os.access(beside, os.X_OK) else None)


class Profiler:
    """Optional py-spy sampling of node processes, one raw (collapsed stacks) file per node and phase."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self.executable = py_spy_executable()
        if directory:
            os.makedirs(directory, exist_ok=True)

    @contextlib.contextmanager
    def phase(self, name: str, nodes: list[NodeProcess]) -> Iterator[None]:
        if not self.directory:
            yield
            return
        # --nonblocking: sampling must not pause the node, or the figures measure py-spy.
        options = ["record", "--rate", "250", "--nonblocking", "--threads", "--format", "raw"]
        spies = [
            subprocess.Popen(
                [str(self.executable), *options, "--pid", str(node.pid)]
                + ["--output", os.path.join(self.directory, f"{name}-{node.label}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for node in nodes
        ]
        time.sleep(1.0)  # py-spy needs a moment to attach
        try:
            yield
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            for spy in spies:
                try:
                    spy.wait(20)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait(5)


class Pair:
    """A source database registered on node `source_node` and a replica of it on node `replica_node`.

    This process is the application: it writes the source and reads the replica (one Database object per path).
    """

    def __init__(
        self,
        mesh: Mesh,
        manager: Manager,
        workdir: str,
        name: str,
        source_node: str,
        replica_node: str,
        config: dict[str, Any] | None = None,
        prepare: Callable[[Database], None] | None = None,
        replica_config: dict[str, Any] | None = None,
    ) -> None:
        self.mesh = mesh
        self.manager = manager
        self.name = name
        self.source_node = source_node
        self.replica_node = replica_node
        self.source_path = os.path.join(workdir, f"{name}-source")
        self.replica_path = os.path.join(workdir, f"{name}-replica")
        self.source = manager.database(f"{name}-source", self.source_path, config or {"replication": True})
        self.table = self.source.table("bench")
        self.table.ensure("by_name", "{name}", duplicates=True)
        if prepare is not None:
            prepare(self.source)
        self.uuid = self.source.replication.uuid
        mesh.call("REGISTER", {"path": self.source_path}, source_node)
        self.replica = manager.database(f"{name}-replica", self.replica_path, config=replica_config)

    def replicate(self) -> None:
        self.mesh.call("REPLICATE", {"path": self.replica_path, "uuid": self.uuid}, self.replica_node)

    def mark(self) -> int:
        return self.replica.replication.marks().get(self.uuid, 0)

    def caught_up(self, sequence: int | None = None) -> bool:
        return self.mark() >= (self.source.replication.sequence if sequence is None else sequence)

    def replica_table(self) -> Any:
        wait_for(self.caught_up, SETTLE_TIMEOUT, f"{self.name}: replica to catch up", 0.005)
        return self.replica["bench"]

    def replica_status(self) -> dict[str, Any]:
        databases = self.mesh.call("STATUS", {}, self.replica_node)["databases"]
        replicas = databases[os.path.realpath(self.replica_path)]["replicas"]
        return next(entry for entry in replicas if entry["source"] == self.uuid)

    def close(self, remove: bool = False) -> None:
        """Undo the replication and close this process's handles; with `remove`, also delete both databases once
        their nodes have let go of them (as the raw pipeline's runs do): kept, each run's files would stay cached
        and the next run would fault in memory this VM never used (docs/benchmarks.md, Round 23)."""
        with contextlib.suppress(Exception):
            self.mesh.call("UNREPLICATE", {"path": self.replica_path, "uuid": self.uuid}, self.replica_node)
        with contextlib.suppress(Exception):
            self.mesh.call("UNREGISTER", {"path": self.source_path}, self.source_node)
        self.manager.close(f"{self.name}-source")
        self.manager.close(f"{self.name}-replica")
        if remove:
            for node, path in ((self.replica_node, self.replica_path), (self.source_node, self.source_path)):
                wait_for(partial(self._let_go, node, os.path.realpath(path)), 10, f"{node} to let go of {path}", 0.005)
                shutil.rmtree(path)

    def _let_go(self, node: str, real: str) -> bool:
        return real not in self.mesh.call("STATUS", {}, node)["databases"]


def pynndb_lag(
    mesh: Mesh, manager: Manager, workdir: str, name: str, hops: int, samples: int, patterns: list[str], idle: int
) -> dict[str, Any]:
    """Lag per write pattern through `hops` node processes; the application writes with `append` (its own commit)."""
    pair = Pair(mesh, manager, workdir, name, "n0", f"n{hops}")
    try:
        pair.replicate()
        replica = pair.replica_table()
        documents = make_documents(documents_needed(samples, patterns, idle))
        table = pair.table
        results = {}
        offset = 0
        for pattern in patterns:

            def write(i: int, offset: int = offset) -> bytes:
                return table.append(documents[offset + i]).oid

            nodes = mesh.nodes[: hops + 1]
            before = [thread_cpu(node.pid) for node in nodes]
            published = rounds_published(mesh, "n0")
            lags, lost = measure_lag(write, lambda oid: replica.get(oid) is not None, samples, pattern, idle)
            each = bursts(samples) if pattern == "burst" else idle if pattern == "idle" else samples
            cpu = [(thread_cpu(node.pid) - start) / each for node, start in zip(nodes, before, strict=True)]
            rounds = (rounds_published(mesh, "n0") - published) / each
            results[pattern] = {"lags": lags, "lost": lost, "node_cpu": cpu, "rounds": rounds}
            print(
                f"  {hops}-hop lag, {pattern}: p50/p99 {fmt_lag(results[pattern])}; {fmt_cpu(cpu)}; "
                f"{rounds:.1f} rounds a sample",
                flush=True,
            )
            if lags and sorted(lags)[len(lags) // 2] > CLIFF:
                explain_cliff(mesh, pair)
            offset += documents_needed(samples, [pattern], idle)
        return results
    finally:
        pair.close()


CLIFF = 0.02  # a p50 lag above this is a timer, not work: say what the nodes saw


def explain_cliff(mesh: Mesh, pair: Pair) -> None:
    """Print what tells a missed wake-up from a missed route: the service counters of both ends (found_by_polling:
    the source's safety poll found the entries; wakeups; published/received) and the topic's subscribers."""
    for label in (pair.source_node, pair.replica_node):
        try:
            status = mesh.call("STATUS", {}, label)
            print(f"    CLIFF {label} replication counters: {status.get('replication')}", flush=True)
            print(f"    CLIFF {label} mesh counters: {status.get('counters')} links {status.get('links')}", flush=True)
        except Exception as error:  # diagnostics must not end the run
            print(f"    CLIFF {label}: STATUS failed: {error}", flush=True)
    try:
        topic = f"db:{pair.uuid}"
        nodes = mesh.call("NODES", {}, pair.source_node)["nodes"]
        subscribers = [entry.get("label") for entry in nodes.values() if topic in entry.get("topics", [])]
        print(f"    CLIFF {pair.source_node} sees subscribers of {topic}: {subscribers}", flush=True)
    except Exception as error:
        print(f"    CLIFF NODES failed: {error}", flush=True)


def batched(documents: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [documents[i : i + size] for i in range(0, len(documents), size)]


def local_append(workdir: str, name: str, documents: list[dict[str, Any]]) -> float:
    """Docs/s of the same batched appends into a database without a journal and without nodes."""
    manager = Manager()
    try:
        db = manager.database(name, os.path.join(workdir, name), config={"replication": False})
        table = db.table("bench")
        table.ensure("by_name", "{name}", duplicates=True)
        batches = batched(documents, BATCH)
        start = time.perf_counter()
        for batch in batches:
            table.append_many(batch)
        return len(documents) / (time.perf_counter() - start)
    finally:
        manager.close()
        shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)


def thread_cpu(pid: int) -> float:
    """CPU seconds every thread of a process has run so far, to the nanosecond (/proc/PID/task/*/schedstat; Linux
    with schedstats, else `process_cpu`'s 10 ms ticks). Threads that ended meanwhile are not counted."""
    total = 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return process_cpu(pid)
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except (OSError, ValueError, IndexError):
            return process_cpu(pid)
    return total / 1e9


def rounds_published(mesh: Mesh, label: str) -> int:
    """How many times the source's node has read new journal entries and published them (a round each: one frame
    that the replica then applies in one transaction). A burst's lag is about one and a half rounds, so what a
    round costs each node decides it (docs/benchmarks.md, Round 11)."""
    info = mesh.call("STATUS", {}, label).get("replication") or {}
    return int(info.get("published", 0))


def fmt_cpu(cpu: list[float]) -> str:
    """Node CPU a sample (the source's node first): what one write costs the mesh on this pattern."""
    return "node CPU a sample " + " / ".join(f"{seconds * 1e6:.0f}" for seconds in cpu) + " µs"


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc (0.0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pynndb_sustained(mesh: Mesh, manager: Manager, workdir: str, name: str, documents: list[dict[str, Any]]) -> dict:
    """Batched appends on the source; rate = documents / (first write .. replica's mark reaches the source). Also
    the CPU each process spent a document meanwhile: this one (the application, which writes), the source's node
    and the replica's node (from /proc; ticks of 10 ms, so a figure of a few µs is ±0.05 µs at 200k documents)."""
    pair = Pair(mesh, manager, workdir, name, "n0", "n1")
    try:
        pair.replicate()
        replica = pair.replica_table()
        batches = batched(documents, BATCH)
        append = pair.table.append_many
        nodes_before = [process_cpu(node.pid) for node in mesh.nodes[:2]]
        app_before = time.process_time()
        start = time.perf_counter()
        for batch in batches:
            append(batch)
        stopped = time.perf_counter()
        sequence = pair.source.replication.sequence
        caught = wait_for(lambda: pair.caught_up(sequence), SETTLE_TIMEOUT, f"{name}: replica to catch up")
        per_document = 1e6 / len(documents)
        app_cpu = (time.process_time() - app_before) * per_document
        nodes = zip(mesh.nodes[:2], nodes_before, strict=True)
        source_cpu, replica_cpu = ((process_cpu(node.pid) - before) * per_document for node, before in nodes)
        count = len(replica)
        if count != len(documents):
            raise RuntimeError(f"{name}: the replica holds {count} documents, not {len(documents)}")
        return {
            "rate": len(documents) / (caught - start),
            "write_rate": len(documents) / (stopped - start),
            "tail": caught - stopped,
            "app_cpu": app_cpu,
            "source_cpu": source_cpu,
            "replica_cpu": replica_cpu,
        }
    finally:
        pair.close(remove=True)


def pynndb_full_sync(
    mesh: Mesh, manager: Manager, workdir: str, name: str, documents: list[dict[str, Any]], journaled: bool
) -> dict:
    """REPLICATE an empty database from a source whose journal no longer holds its start: a snapshot. With
    `journaled`, the replica keeps a journal of its own (opened with config={'replication': True}, as in the
    README's example), so that replicas of it and change feeds on it can follow it."""

    def load(db: Database) -> None:
        table = db.table("bench")
        for batch in batched(documents, max(1, len(documents) // FULL_SYNC_COMMITS)):
            table.append_many(batch)

    config = {"replication": True, "journal": {"max_entries": 1000}}
    replica_config = {"replication": True} if journaled else None
    pair = Pair(mesh, manager, workdir, name, "n0", "n1", config=config, prepare=load, replica_config=replica_config)
    try:
        first, last = pair.source.replication.retained
        if first <= 1:
            raise RuntimeError(f"{name}: the journal still starts at {first}; no snapshot would be needed")
        nodes_before = [process_cpu(node.pid) for node in mesh.nodes[:2]]
        start = time.perf_counter()
        pair.replicate()
        wait_for(lambda: pair.caught_up(last), SETTLE_TIMEOUT, f"{name}: full sync", 0.001)
        # The mark is committed with the snapshot's last chunk; count too, to be sure what "synced" means.
        done = wait_for(lambda: len(pair.replica["bench"]) == len(documents), 10, f"{name}: record count")
        source_cpu, replica_cpu = (
            process_cpu(node.pid) - before for node, before in zip(mesh.nodes[:2], nodes_before, strict=True)
        )
        status = pair.replica_status()
        return {
            "seconds": done - start,
            "full_resyncs": status["full_resyncs"],
            "source_cpu": source_cpu,
            "replica_cpu": replica_cpu,
        }
    finally:
        pair.close()


def fresh_full_sync(
    manager: Manager, workdir: str, name: str, documents: list[dict[str, Any]], journaled: bool, profiler: Profiler
) -> dict:
    """One full sync on fresh node processes, whose databases are removed afterwards: like Redis's side, where each
    run starts a fresh replica server and stops it (its memory goes back to the system). Kept, every run's 200k
    documents would stay mapped by the nodes and cached by the kernel, and each later run would fault in memory
    this VM never used: up to ~2x the replica node's CPU (docs/benchmarks.md, Round 12)."""
    directory = os.path.join(workdir, name)
    os.makedirs(directory)
    mesh = Mesh(2, directory)
    try:
        with profiler.phase(name, mesh.nodes):
            return pynndb_full_sync(mesh, manager, directory, name, documents, journaled)
    finally:
        mesh.stop()
        shutil.rmtree(directory, ignore_errors=True)


# --- Redis -------------------------------------------------------------------------------------------------------
class RedisServer:
    """One redis-server process on a free port, in its own directory, with diskless replication and no disk."""

    def __init__(self, workdir: str, name: str, replica_of: int | None = None) -> None:
        import redis

        self.port = free_port()
        directory = os.path.join(workdir, name)
        os.makedirs(directory, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", directory]
        command += ["--save", "", "--appendonly", "no", "--repl-diskless-sync", "yes"]
        command += ["--repl-diskless-sync-delay", "0", "--logfile", os.path.join(directory, "redis.log")]
        if replica_of is not None:
            command += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        wait_for(self._pings, 10, f"redis-server {name} to start", 0.01)

    def _pings(self) -> bool:
        import redis

        try:
            return bool(self.client.ping())
        except (redis.ConnectionError, redis.BusyLoadingError):
            return False

    def link_up(self) -> bool:
        import redis

        try:
            return self.client.info("replication").get("master_link_status") == "up"
        except redis.BusyLoadingError:
            return False

    def dbsize(self) -> int:
        import redis

        try:
            return int(self.client.dbsize())
        except redis.BusyLoadingError:
            return -1

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def lag_per_pattern(
    write: Callable[[int], Any], visible: Callable[[Any], bool], samples: int, patterns: list[str], idle: int
) -> dict[str, Any]:
    """`measure_lag` for each pattern in turn; `write(n)` writes document n (each pattern writes its own)."""
    results = {}
    offset = 0
    for pattern in patterns:

        def at(i: int, offset: int = offset) -> Any:
            return write(offset + i)

        lags, lost = measure_lag(at, visible, samples, pattern, idle)
        results[pattern] = {"lags": lags, "lost": lost}
        print(f"  lag, {pattern}: p50/p99 {fmt_lag(results[pattern])}", flush=True)
        offset += documents_needed(samples, [pattern], idle)
    return results


def redis_lag(
    master: RedisServer, replica: RedisServer, samples: int, patterns: list[str], idle: int
) -> dict[str, Any]:
    documents = [orjson.dumps(doc) for doc in make_documents(documents_needed(samples, patterns, idle))]
    set_, get = master.client.set, replica.client.get

    def write(n: int) -> bytes:
        key = b"lag:%d" % n
        set_(key, documents[n])
        return key

    return lag_per_pattern(write, lambda key: get(key) is not None, samples, patterns, idle)


def redis_ingest(master: RedisServer, replica: RedisServer, documents: list[dict[str, Any]]) -> dict[str, Any]:
    """Pipelines of BATCH SETs of the JSON documents; rate = documents / (first write .. replica holds them all)."""
    master.client.flushall()
    wait_for(lambda: replica.dbsize() == 0, 10, "redis replica to flush")
    count = len(documents)
    dumps = orjson.dumps
    start = time.perf_counter()
    for offset in range(0, count, BATCH):
        pipe = master.client.pipeline(transaction=False)
        for i in range(offset, min(offset + BATCH, count)):
            pipe.set(b"doc:%d" % i, dumps(documents[i]))
        pipe.execute()
    stopped = time.perf_counter()
    caught = wait_for(lambda: replica.dbsize() == count, SETTLE_TIMEOUT, "redis replica to catch up")
    return {
        "rate": count / (caught - start),
        "write_rate": count / (stopped - start),
        "tail": caught - stopped,
    }


def redis_full_resync(workdir: str, master: RedisServer, count: int, run: int) -> float:
    """A fresh replica of a master holding `count` keys: REPLICAOF .. link up and DBSIZE matches."""
    if master.dbsize() != count:
        raise RuntimeError(f"the redis master holds {master.dbsize()} keys, not {count}")
    fresh = RedisServer(workdir, f"redis-fresh-{run}")
    try:
        start = time.perf_counter()
        fresh.client.replicaof("127.0.0.1", master.port)
        done = wait_for(lambda: fresh.link_up() and fresh.dbsize() == count, SETTLE_TIMEOUT, "redis full resync", 0.001)
        return done - start
    finally:
        fresh.stop()


# --- the run -----------------------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def sustained_ingest(
    options: argparse.Namespace,
    results: dict[str, Any],
    mesh: Mesh,
    manager: Manager,
    workdir: str,
    documents: list[dict[str, Any]],
    profiler: Profiler,
) -> None:
    runs = []
    for run in range(options.runs):
        with profiler.phase(f"sustained{run}", mesh.nodes):
            runs.append(pynndb_sustained(mesh, manager, workdir, f"sustained{run}", documents))
        print(f"  sustained run {run}: {fmt_run(runs[-1])}", flush=True)
    results["sustained"] = {key: median([run[key] for run in runs]) for key in runs[0]}


def full_syncs(
    options: argparse.Namespace,
    results: dict[str, Any],
    manager: Manager,
    workdir: str,
    documents: list[dict[str, Any]],
    profiler: Profiler,
) -> None:
    for journaled, key in ((False, "full_sync"), (True, "full_sync_journaled")):
        syncs = []
        for run in range(options.runs):
            phase = f"fullsync{'-journaled' if journaled else ''}{run}"
            syncs.append(fresh_full_sync(manager, workdir, phase, documents, journaled, profiler))
            print(
                f"  full sync run {run}{', journaled replica' if journaled else ''}:"
                f" {syncs[-1]['seconds'] * 1000:.0f} ms ({syncs[-1]['full_resyncs']} snapshot;"
                f" CPU: source node {syncs[-1]['source_cpu'] * 1000:.0f} ms, replica node"
                f" {syncs[-1]['replica_cpu'] * 1000:.0f} ms)",
                flush=True,
            )
        results[key] = median([sync["seconds"] for sync in syncs])


def run_pynndb(options: argparse.Namespace, workdir: str, profiler: Profiler) -> dict[str, Any]:
    results: dict[str, Any] = {}
    documents = make_documents(options.docs)
    manager = Manager()
    try:
        if options.full_sync_only:  # (every full sync runs on fresh nodes anyway)
            full_syncs(options, results, manager, workdir, documents, profiler)
            return results
        if options.ingest_only:  # a fresh pair of nodes, nothing run on it before
            mesh = Mesh(2, workdir)
            try:
                sustained_ingest(options, results, mesh, manager, workdir, documents, profiler)
            finally:
                mesh.stop()
            return results
        if not options.lag_only:
            results["local"] = median([local_append(workdir, f"local{run}", documents) for run in range(options.runs)])
            print(f"  local append: {results['local']:,.0f} docs/s", flush=True)
        mesh = Mesh(2, workdir)
        try:
            with profiler.phase("lag1", mesh.nodes):
                results["lag1"] = pynndb_lag(
                    mesh, manager, workdir, "lag1", 1, options.samples, options.patterns, options.idle_samples
                )
            if not options.lag_only:
                sustained_ingest(options, results, mesh, manager, workdir, documents, profiler)
        finally:
            mesh.stop()
        if not options.lag_only:
            full_syncs(options, results, manager, workdir, documents, profiler)
        mesh = Mesh(4, workdir)
        try:
            with profiler.phase("lag3", mesh.nodes):
                results["lag3"] = pynndb_lag(
                    mesh, manager, workdir, "lag3", 3, options.samples, options.patterns, options.idle_samples
                )
        finally:
            mesh.stop()
    finally:
        manager.close()
    return results


def run_redis(options: argparse.Namespace, workdir: str) -> dict[str, Any] | None:
    if shutil.which("redis-server") is None:
        print("  SKIP Redis columns: redis-server is not installed (apt-get install -y redis-server)", flush=True)
        return None
    try:
        import redis  # noqa: F401
    except ImportError:
        print("  SKIP Redis columns: redis-py is missing (pip install 'pynndb[bench]')", flush=True)
        return None
    results: dict[str, Any] = {}
    documents = make_documents(options.docs)
    master = replica = None
    try:
        master = RedisServer(workdir, "redis-master")
        replica = RedisServer(workdir, "redis-replica", replica_of=master.port)
        wait_for(replica.link_up, 20, "redis replica link", 0.01)
        if not options.full_sync_only:
            if not options.ingest_only:
                results["lag1"] = redis_lag(master, replica, options.samples, options.patterns, options.idle_samples)
            if options.lag_only:
                return results
            runs = []
            for run in range(options.runs):
                runs.append(redis_ingest(master, replica, documents))
                print(f"  ingest run {run}: {fmt_run(runs[-1])}", flush=True)
            results["sustained"] = {key: median([run[key] for run in runs]) for key in runs[0]}
            if options.ingest_only:
                return results
        else:
            redis_ingest(master, replica, documents)  # the master's content (not reported)
        syncs = [redis_full_resync(workdir, master, len(documents), run) for run in range(options.runs)]
        print("  full resync: " + ", ".join(f"{s * 1000:.0f} ms" for s in syncs), flush=True)
        results["full_sync"] = median(syncs)
    finally:
        for server in (replica, master):
            if server is not None:
                server.stop()
    return results


def run_raw(options: argparse.Namespace, workdir: str) -> dict[str, Any]:
    """The same patterns and full syncs through the raw building blocks (benchmarks/raw_replication.py): the
    floor of this shape of deployment, with none of pynndb's layers."""
    results: dict[str, Any] = {}
    documents = make_documents(options.docs)
    if not (options.full_sync_only or options.ingest_only):
        needed = make_documents(documents_needed(options.samples, options.patterns, options.idle_samples))
        pair = raw_replication.RawPair(workdir, needed)
        try:
            results["lag1"] = lag_per_pattern(
                pair.write, pair.visible, options.samples, options.patterns, options.idle_samples
            )
            source_cpu, replica_cpu = pair.cpu()
            print(f"  CPU over every pattern: source {source_cpu:.2f} s, replica {replica_cpu:.2f} s", flush=True)
        finally:
            pair.close()
    if not (options.lag_only or options.full_sync_only):
        runs = []
        for run in range(options.runs):
            runs.append(raw_sustained(workdir, documents, run))
            print(f"  sustained run {run}: {fmt_run(runs[-1])}", flush=True)
        results["sustained"] = {key: median([run[key] for run in runs]) for key in runs[0]}
    if not (options.lag_only or options.ingest_only):
        source_path = os.path.join(workdir, "raw-sync-source")
        raw_replication.load_source(source_path, documents)
        syncs = []
        for run in range(options.runs):
            syncs.append(raw_replication.full_sync(workdir, source_path, run))
            print(
                f"  full sync run {run}: {syncs[-1]['seconds'] * 1000:.0f} ms (CPU: source"
                f" {syncs[-1]['source_cpu'] * 1000:.0f} ms, replica {syncs[-1]['replica_cpu'] * 1000:.0f} ms)",
                flush=True,
            )
        results["full_sync"] = median([sync["seconds"] for sync in syncs])
    return results


def raw_sustained(workdir: str, documents: list[dict[str, Any]], run: int) -> dict[str, float]:
    """The raw pipeline's sustained ingest: transactions of BATCH documents (a journal entry each), as
    `pynndb_sustained` measures it (rate = documents / (first write .. the replica holds the last))."""
    directory = os.path.join(workdir, f"raw-ingest-{run}")
    os.makedirs(directory)
    pair = raw_replication.RawPair(directory, documents)
    try:
        last = b""
        start = time.perf_counter()
        for first in range(0, len(documents), BATCH):
            last = pair.write_many(first, min(BATCH, len(documents) - first))
        stopped = time.perf_counter()
        caught = wait_for(lambda: pair.visible(last), SETTLE_TIMEOUT, "raw replica to catch up")
        return {
            "rate": len(documents) / (caught - start),
            "write_rate": len(documents) / (stopped - start),
            "tail": caught - stopped,
        }
    finally:
        pair.close()
        shutil.rmtree(directory, ignore_errors=True)


def fmt_lag(result: dict[str, Any]) -> str:
    p50, p99 = percentiles(result["lags"])
    lost = f", {result['lost']} lost" if result["lost"] else ""
    return f"{p50 * 1e3:.3f} / {p99 * 1e3:.3f} ms ({len(result['lags'])} samples{lost})"


def fmt_run(result: dict[str, Any]) -> str:
    cpu = ""
    if "app_cpu" in result:
        cpu = (
            f"; CPU a document: application {result['app_cpu']:.2f} µs, source node {result['source_cpu']:.2f}, "
            f"replica node {result['replica_cpu']:.2f}"
        )
    return (
        f"{result['rate']:,.0f} docs/s replicated, {result['write_rate']:,.0f} docs/s written, "
        f"tail {result['tail'] * 1000:.0f} ms{cpu}"
    )


Row = tuple[str, str, str, str, str, str, str, str]
HEADERS: Row = ("metric", "pynndb", "Redis", "ratio", "raw", "÷ raw", "target", "")


def table_rows(ours: dict[str, Any], theirs: dict[str, Any] | None, raw: dict[str, Any] | None) -> list[Row]:
    """(metric, pynndb, Redis, ratio, raw building blocks, pynndb ÷ raw, target, verdict) rows."""
    rows: list[Row] = []

    def lag(result: dict[str, Any] | None, which: int) -> float | None:
        return None if result is None else percentiles(result["lags"])[which] * 1e3

    def add(
        metric: str,
        value: float,
        other: float | None,
        unit: str,
        target: str,
        ok: bool | str | None,
        floor: float | None = None,
    ) -> None:
        def show(x: float | None) -> str:
            if x is None:
                return "-"
            if unit == "ms":
                return f"{x:,.3f} ms" if x < 10 else f"{x:,.0f} ms"
            return f"{x:,.0f} {unit}"

        def ratio(x: float | None) -> str:
            return "-" if x is None or not x else f"{value / x:.2f}x"

        verdict = ok if isinstance(ok, str) else "info" if ok is None else "PASS" if ok else "MISS"
        rows.append((metric, show(value), show(other), ratio(other), show(floor), ratio(floor), target, verdict))

    for pattern in ours.get("lag1", {}):
        redis_result = theirs["lag1"].get(pattern) if theirs else None
        raw_result = raw["lag1"].get(pattern) if raw and "lag1" in raw else None
        redis_p50, redis_p99 = lag(redis_result, 0), lag(redis_result, 1)
        for hops, key in ((1, "lag1"), (3, "lag3")):
            p50, p99 = lag(ours[key][pattern], 0), lag(ours[key][pattern], 1)
            assert p50 is not None and p99 is not None
            where = f"{pattern}, {hops} hop{'s' if hops > 1 else ''}"
            if hops == 1:
                ok = "no Redis" if redis_p50 is None else p50 <= 2 * redis_p50
                add(f"lag p50, {where}", p50, redis_p50, "ms", "<= 2x Redis", ok, lag(raw_result, 0))
                add(f"lag p99, {where}", p99, redis_p99, "ms", "<= 5 ms", p99 <= 5.0, lag(raw_result, 1))
            else:
                add(f"lag p50, {where}", p50, redis_p50, "ms", "(vs Redis 1 hop)", None)
                add(f"lag p99, {where}", p99, redis_p99, "ms", "<= 5 ms", p99 <= 5.0)
            lost = ours[key][pattern]["lost"]
            if lost:
                rows.append((f"  samples lost (> 1 s), {where}", str(lost), "-", "-", "-", "-", "0", "MISS"))
    if "sustained" in ours:
        sustained_rows(add, rows, ours, theirs, raw.get("sustained") if raw else None)
    if "full_sync" in ours:
        full = ours["full_sync"] * 1e3
        other_full = theirs["full_sync"] * 1e3 if theirs else None
        floor = raw["full_sync"] * 1e3 if raw and "full_sync" in raw else None
        ok = "no Redis" if other_full is None else full <= 0.5 * other_full
        add("full sync of a new replica", full, other_full, "ms", "<= 0.5x Redis", ok, floor)
        journaled = ours["full_sync_journaled"] * 1e3
        ok = "no Redis" if other_full is None else journaled <= 0.5 * other_full
        add("  the same, journaled replica", journaled, other_full, "ms", "<= 0.5x Redis", ok, floor)
        if floor is not None and other_full is not None:
            rows.append(("  raw building blocks ÷ Redis", "-", "-", f"{floor / other_full:.2f}x", "", "", "", "info"))
    return rows


def sustained_rows(
    add: Callable[..., None],
    rows: list[Row],
    ours: dict[str, Any],
    theirs: dict[str, Any] | None,
    floor: dict[str, float] | None,
) -> None:
    def raw(key: str, scale: float = 1.0) -> float | None:
        return None if floor is None else floor[key] * scale

    sustained = ours["sustained"]["rate"]
    other_rate = theirs["sustained"]["rate"] if theirs else None
    add(
        "sustained replicated rate",
        sustained,
        other_rate,
        "docs/s",
        ">= 300k docs/s",
        sustained >= 300_000,
        raw("rate"),
    )
    local = ours.get("local")
    if local is not None:  # (--ingest-only measures no local append)
        rows.append(
            (
                "  vs local append (no journal)",
                f"{local:,.0f} docs/s",
                "-",
                f"{sustained / local:.2f}x",
                "-",
                "-",
                ">= 0.5x local",
                "PASS" if sustained >= 0.5 * local else "MISS",
            )
        )
    add(
        "  writer rate (source commits)",
        ours["sustained"]["write_rate"],
        theirs["sustained"]["write_rate"] if theirs else None,
        "docs/s",
        "",
        None,
        raw("write_rate"),
    )
    tail = ours["sustained"]["tail"] * 1e3
    other_tail = theirs["sustained"]["tail"] * 1e3 if theirs else None
    add("  replica tail after writer stops", tail, other_tail, "ms", "", None, raw("tail", 1e3))
    for key, who in (("app_cpu", "application"), ("source_cpu", "source node"), ("replica_cpu", "replica node")):
        rows.append((f"  CPU a document, {who}", f"{ours['sustained'][key]:.2f} µs", "-", "-", "-", "-", "", "info"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000, help="documents for ingest and full sync")
    parser.add_argument("--samples", type=int, default=1000, help="lag samples per path")
    parser.add_argument("--runs", type=int, default=5, help="repetitions of ingest and full sync (median)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20k docs, 200 samples, 1 run")
    parser.add_argument("--lag-only", action="store_true", help="only the lag patterns (no ingest, no full sync)")
    parser.add_argument(
        "--full-sync-only", action="store_true", help="only the full syncs, on a fresh pair of nodes (and Redis's)"
    )
    parser.add_argument(
        "--ingest-only",
        action="store_true",
        help="only the sustained ingest, on a fresh pair of nodes (and Redis's), with each process's CPU a document",
    )
    parser.add_argument(
        "--patterns", default=",".join(PATTERNS), help=f"lag patterns, comma-separated from {', '.join(PATTERNS)}"
    )
    parser.add_argument("--idle-samples", type=int, default=5, help=f"writes after {IDLE:g} s idle, per path")
    parser.add_argument("--py-spy", dest="py_spy", metavar="DIR", help="sample node processes with py-spy into DIR")
    options = parser.parse_args()
    if options.quick:
        options.docs, options.samples, options.runs = min(options.docs, 20_000), min(options.samples, 200), 1
        options.idle_samples = min(options.idle_samples, 2)
    options.patterns = [pattern.strip() for pattern in options.patterns.split(",") if pattern.strip()]
    unknown = set(options.patterns) - set(PATTERNS)
    if unknown or not options.patterns:
        parser.error(f"--patterns: choose from {', '.join(PATTERNS)}")
    if sum((options.lag_only, options.full_sync_only, options.ingest_only)) > 1:
        parser.error("--lag-only, --full-sync-only and --ingest-only exclude each other")
    if options.docs < FULL_SYNC_COMMITS:
        parser.error(f"--docs must be at least {FULL_SYNC_COMMITS} (the full-sync journal must be trimmed)")
    if options.py_spy and py_spy_executable() is None:
        parser.error("--py-spy needs py-spy on PATH (pip install py-spy)")
    started = time.monotonic()
    print(build_line(), flush=True)
    workdir = tempfile.mkdtemp(prefix="pynndb-bench-replication-")
    try:
        if options.py_spy:
            print(f"py-spy samples node processes into {options.py_spy}: figures of this run are perturbed")
        print(f"pynndb ({options.docs:,} docs, {options.samples} lag samples, medians of {options.runs} runs)")
        ours = run_pynndb(options, workdir, Profiler(options.py_spy))
        print("Redis (redis-server master + replica, redis-py)")
        theirs = run_redis(options, workdir)
        print("raw building blocks (py-lmdb + orjson + pyzmq, benchmarks/raw_replication.py)")
        raw = run_raw(options, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = table_rows(ours, theirs, raw)
    headers = HEADERS
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    print(
        f"\nReplication on loopback: {options.docs:,} docs of ~120 bytes, batches of {BATCH}, "
        f"{os.cpu_count()} cores, one index on the pynndb table"
    )
    for row in [headers, tuple("-" * width for width in widths), *rows]:
        print(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
    print(f"\ntotal {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
