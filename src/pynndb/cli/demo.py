"""`pynndb demo`: three node processes on loopback keeping databases in sync under load, with failures.

Topology: a-b, b-c, a-c (so every pair has two paths). Replication: orders (a) -> orders_copy (c) one-way;
profiles_a (a) <-> profiles_b (b) two-way; sales_east (a), sales_west (b), sales_north (c) -> sales_all (c).
An application process writes to the sources (and to both sides of the pair) while the demo cuts a link,
kills node c with SIGKILL and restarts it; at the end every pair must give diff == {}.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live

from pynndb.cli import render
from pynndb.errors import NodeDidNotStart, NotCaughtUp

NODES = ("a", "b", "c")
SALES = {"sales_east": "a", "sales_west": "b", "sales_north": "c"}
HOSTED = {
    "a": ["orders", "profiles_a", "sales_east"],
    "b": ["profiles_b", "sales_west"],
    "c": ["orders_copy", "sales_north", "sales_all"],
}


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class NodeProcess:
    """A `pynndb node` child process, started and stopped by PID."""

    def __init__(self, name: str, ports: list[int], workdir: str) -> None:
        self.name = name
        self.ports = ports
        self.log = open(os.path.join(workdir, f"node-{name}.log"), "ab")  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[0]}"

    @property
    def command_address(self) -> str:
        return f"tcp://127.0.0.1:{self.ports[2]}"

    def start(self, databases: list[str], connect: list[str], timeout: float = 20.0) -> None:
        command = [sys.executable, "-m", "pynndb", "node", "--label", f"demo-{self.name}", "--heartbeat", "0.5"]
        command += ["--ports", ",".join(map(str, self.ports))]
        for path in databases:
            command += ["--db", path]
        for address in connect:
            command += ["--connect", address]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log)
        ready = threading.Event()

        def wait_ready() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                if line.startswith(b"READY"):
                    ready.set()
                    return

        threading.Thread(target=wait_ready, daemon=True).start()
        if not ready.wait(timeout):
            raise NodeDidNotStart(f"node {self.name} did not start within {timeout}s (see its log)")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def write_stream(paths: dict[str, str], seconds: float, rate: int) -> None:
    """The application: appends orders and sales, updates profiles on both sides of the two-way pair."""
    from pynndb import Manager
    from pynndb.errors import PyNNDBError

    manager = Manager()
    dbs = {name: manager.database(name, path) for name, path in paths.items()}
    orders = dbs["orders"].table("orders")
    profiles = [dbs["profiles_a"].table("profiles"), dbs["profiles_b"].table("profiles")]
    sales = {name: dbs[name].table("sales") for name in SALES}
    keys = [doc.oid for doc in profiles[0].find() if doc.oid is not None]
    deadline = time.monotonic() + seconds
    batch = max(1, rate // 20)
    serial = 0
    while time.monotonic() < deadline:
        started = time.monotonic()
        with dbs["orders"].write_transaction() as txn:
            for _ in range(batch):
                serial += 1
                orders.append({"serial": f"{os.getpid()}-{serial}", "amount": random.randint(1, 500)}, txn=txn)
        for name, table in sales.items():
            table.append({"region": name, "amount": random.randint(1, 100)})
        for _ in range(5):  # concurrent, conflicting updates of the same profiles on both sides
            side = random.choice(profiles)
            doc = side.get(random.choice(keys))
            if doc is not None:
                doc["visits"] = doc.get("visits", 0) + 1
                try:
                    side.save(doc)
                except PyNNDBError:
                    pass
        time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))
    manager.close()


def run_demo(console: Console, directory: str | None, seconds: float, rate: int, keep: bool) -> int:
    from pynndb import Manager
    from pynndb.mesh.plugin import Plugin

    workdir = directory or tempfile.mkdtemp(prefix="pynndb-demo-")
    os.makedirs(workdir, exist_ok=True)
    paths = {name: os.path.join(workdir, name) for names in HOSTED.values() for name in names}
    console.rule("[bold]pynndb demo")
    console.print(f"databases in {workdir}")
    manager = Manager()
    uuids = {}
    for name, path in paths.items():
        db = manager.database(name, path, config={"replication": True})
        uuids[name] = db.replication.uuid
    profiles = manager["profiles_a"].table("profiles")
    profiles.ensure("by_name", "{name}")
    for number in range(50):
        profiles.append({"name": f"user{number:03}", "visits": 0})
    manager["orders"].table("orders").ensure("by_serial", "{serial}")
    for name in SALES:
        manager[name].table("sales").ensure("by_region", "{region}", duplicates=True)
    manager.close()

    ports = free_ports(9)
    nodes = {name: NodeProcess(name, ports[i * 3 : i * 3 + 3], workdir) for i, name in enumerate(NODES)}
    writer: subprocess.Popen[bytes] | None = None
    plugin = None
    try:
        nodes["a"].start([], [])
        nodes["b"].start([], [nodes["a"].address])
        nodes["c"].start([], [nodes["a"].address, nodes["b"].address])
        console.print("[green]3 nodes up[/]: a-b, b-c, a-c")
        plugin = Plugin(nodes["a"].command_address).connect()
        call = plugin.call
        for node, names in HOSTED.items():
            for name in names:
                if name not in ("orders_copy", "sales_all"):
                    call("REGISTER", {"path": paths[name]}, target=f"demo-{node}")
        call("REPLICATE", {"path": paths["orders_copy"], "uuid": uuids["orders"]}, target="demo-c")
        call("REPLICATE", {"path": paths["profiles_b"], "uuid": uuids["profiles_a"]}, target="demo-b")
        _wait(lambda: _caught_up(call, "demo-b"), 20)
        pair = call("REPLICATE", {"path": paths["profiles_a"], "uuid": uuids["profiles_b"]}, target="demo-a")
        for name in SALES:
            call("REPLICATE", {"path": paths["sales_all"], "uuid": uuids[name]}, target="demo-c")
        console.print(f"replication set up: one-way orders->orders_copy, {pair['mode']} profiles, 3->1 sales")

        total = seconds * 3
        writer = subprocess.Popen(
            [sys.executable, "-m", "pynndb.cli.demo", json.dumps(paths), str(total), str(rate)],
            stderr=subprocess.DEVNULL,
        )
        _watch(console, call, "application writing", seconds / 2)
        call("DISCONNECT", {"peer": "demo-c"}, target="demo-a")
        _watch(console, call, "link a-c cut: data goes a-b-c", seconds / 2)
        call("CONNECT", {"address": nodes["c"].address}, target="demo-a")
        _watch(console, call, "link a-c restored", seconds / 2)
        nodes["c"].kill()
        console.print("[red]node c killed with SIGKILL[/]")
        _watch(console, call, "node c down, writes go on", seconds / 2, targets=("demo-a", "demo-b"))
        nodes["c"].start([paths[name] for name in HOSTED["c"]], [nodes["a"].address, nodes["b"].address])
        console.print("[green]node c restarted[/] with the same databases: it resumes from its marks")
        _watch(console, call, "node c back", seconds)
        writer.wait(timeout=total + 60)
        console.print("application done; waiting for every replica to catch up")
        _wait(lambda: all(_caught_up(call, f"demo-{node}") for node in NODES), 60)
        _watch(console, call, "final state", 0.1)
        return _verify(console, plugin, uuids, paths)
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        if plugin is not None:
            plugin.close()
        for process in nodes.values():
            process.stop()
        if not keep and directory is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _wait(predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # a node restarting answers nothing for a moment
            pass
        time.sleep(0.1)
    raise NotCaughtUp(f"not caught up within {timeout}s")


def _caught_up(call: Any, target: str) -> bool:
    databases = call("STATUS", target=target)["databases"]
    replicas = [replica for info in databases.values() for replica in info["replicas"]]
    return all(replica["state"] == "live" and replica["lag_entries"] == 0 for replica in replicas)


_applied: dict[tuple[str, str], tuple[float, int]] = {}


def _watch(console: Console, call: Any, title: str, seconds: float, targets: tuple[str, ...] = ()) -> None:
    targets = targets or tuple(f"demo-{node}" for node in NODES)
    deadline = time.monotonic() + seconds
    with Live(console=console, refresh_per_second=4, transient=False) as live:
        while True:
            databases: dict[str, Any] = {}
            for target in targets:
                try:
                    databases.update(call("STATUS", target=target, timeout=2.0)["databases"])
                except Exception:
                    continue
            now = time.monotonic()
            rates: dict[tuple[str, str], float] = {}
            for path, info in databases.items():
                for replica in info["replicas"]:
                    key = (path, replica["source"])
                    before = _applied.get(key)
                    if before is not None and now > before[0]:
                        rates[key] = max(0.0, (replica["applied"] - before[1]) / (now - before[0]))
                    _applied[key] = (now, replica["applied"])
            live.update(Group(render.replicas_table(databases, title=title, rates=rates)))
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    console.print()


def _verify(console: Console, plugin: Any, uuids: dict[str, str], paths: dict[str, str]) -> int:
    failures = 0
    for left, right in (("orders", "orders_copy"), ("profiles_a", "profiles_b")):
        report = plugin.diff([uuids[left], uuids[right]])
        ok = report == {}
        failures += not ok
        console.print(f"diff({left}, {right}) == {{}}: {'[green]yes' if ok else '[red]NO ' + repr(report)[:300]}")
    totals = {}
    for name in [*SALES, "sales_all"]:
        summary = plugin.call("DIGEST", {"uuid": uuids[name]}, target=_holder(name))["tables"]
        totals[name] = summary.get("sales", {}).get("records", 0)
    union = sum(totals[name] for name in SALES)
    ok = totals["sales_all"] == union
    failures += not ok
    console.print(
        f"sales_all holds {totals['sales_all']} = union of 3 sources ({union}): {'[green]yes' if ok else '[red]NO'}"
    )
    console.rule("[bold green]all replicas identical" if not failures else "[bold red]differences found")
    return 1 if failures else 0


def _holder(name: str) -> str:
    return next(f"demo-{node}" for node, names in HOSTED.items() if name in names)


if __name__ == "__main__":
    write_stream(json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
