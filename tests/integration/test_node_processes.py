"""Nodes as real OS processes (`python -m pynndb node`), an application process writing to the source file.

Node processes are killed with SIGKILL and restarted on the same database files: replication must resume from the
high-water mark kept in the replica database (no loss, no duplicates), with a full resync only when the source's
journal no longer holds what was missed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pynndb import Manager
from pynndb.errors import PyNNDBError
from pynndb.mesh.plugin import Plugin
from pynndb.replication import diff
from tests.helpers import wait_until
from tests.integration import mesh_application
from tests.integration.deployment import Child, NodeProcess, read_line
from tests.mesh.conftest import free_port

APPLICATION = str(Path(mesh_application.__file__))
pytestmark = pytest.mark.timeout(120)


class Node(NodeProcess):
    """`pynndb node` in its own process, logging to the test's directory."""

    def __init__(
        self, tmp_path: Path, label: str, ports: tuple[int, int, int], databases: list[str], connect: list[str]
    ):
        super().__init__(tmp_path / f"{label}.log", label, ports, databases, connect)


class Application(Child):
    """mesh_application.py writing to one database file."""

    def __init__(self, tmp_path: Path, path: str, max_entries: int | None = None) -> None:
        extra = [] if max_entries is None else [str(max_entries)]
        super().__init__([sys.executable, APPLICATION, path, *extra], tmp_path / "application.log")
        assert self.read()["ready"]

    def read(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.line())
        return report

    def send(self, command: str) -> None:
        self.process.stdin.write(command + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]

    def wait_written(self, count: int, timeout: float = 45) -> int:
        """Follow the progress lines until at least `count` events are written; returns the count reached."""
        deadline = time.monotonic() + timeout
        while True:
            report = json.loads(read_line(self.process.stdout, deadline))  # type: ignore[arg-type]
            written = int(report.get("written", report.get("done", 0)))
            if written >= count:
                return written


class Cluster:
    """Starts node and application processes for one test and always stops them at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.children: list[Child] = []
        self.plugins: list[Plugin] = []

    def node(
        self, label: str, ports: tuple[int, int, int], databases: list[str], connect: tuple[str, ...] = ()
    ) -> Node:
        node = Node(self.tmp_path, label, ports, databases, list(connect))
        self.children.append(node)
        return node

    def application(self, path: str, max_entries: int | None = None) -> Application:
        application = Application(self.tmp_path, path, max_entries)
        self.children.append(application)
        return application

    def plugin(self, node: Node) -> Plugin:
        plugin = Plugin(node.command_address).connect()
        self.plugins.append(plugin)
        return plugin

    def close(self) -> None:
        for plugin in self.plugins:
            plugin.close()
        for child in self.children:
            child.stop(signal.SIGKILL if isinstance(child, Application) else signal.SIGTERM)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    created = Cluster(tmp_path)
    try:
        yield created
    finally:
        created.close()


def ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def create_databases(tmp_path: Path, *names: str) -> tuple[list[str], list[str]]:
    """Create empty databases (journal on) and close them again; returns their paths and UUIDs."""
    paths = [str(tmp_path / name) for name in names]
    with Manager() as manager:
        uuids = [manager.database(path, config={"replication": True}).replication.uuid for path in paths]
    return paths, uuids


def identical(cmd: Plugin, uuids: list[str]) -> bool:
    """diff == {} through the mesh; False while a holder is unknown or unreachable (a node restarting)."""
    try:
        return cmd.diff(uuids, timeout=3) == {}
    except PyNNDBError:
        return False


def replica_status(cmd: Plugin, node: Node, path: str) -> dict[str, Any]:
    replicas = cmd.call("STATUS", target=node.id)["databases"][os.path.realpath(path)]["replicas"]
    assert len(replicas) == 1, replicas
    return dict(replicas[0])


def stored_events(path: str) -> tuple[int, list[str]]:
    """(records, serials in index order) of the events table, read in this process after the nodes stopped."""
    with Manager() as manager:
        events = manager.database(path).table("events")
        return events.records(), [doc["serial"] for doc in events.find("by_serial")]


def assert_same_databases(source: str, replica: str, count: int) -> None:
    with Manager() as manager:
        assert diff(manager.database("source", source), manager.database("replica", replica)) == {}
    for path in (source, replica):
        records, serials = stored_events(path)
        assert records == count
        assert serials == [f"{number:08d}" for number in range(count)]


def test_seed_scenario_with_node_processes_and_an_application_process(cluster: Cluster, tmp_path: Path) -> None:
    (path1, path2), (uuid1, uuid2) = create_databases(tmp_path, "db1", "db2")
    nodea = cluster.node("nodea", ports(), [path1])
    nodeb = cluster.node("nodeb", ports(), [path2], connect=(nodea.address,))
    cmd = cluster.plugin(nodea)
    peer = wait_until(lambda: cmd.call("LOOKUP", {"name": "nodeb"}).get("peer"), timeout=10)
    assert peer == nodeb.id
    assert cmd.call("REGISTER", {"path": path1})["uuid"] == uuid1
    cmd.call("REPLICATE", {"path": path2, "uuid": uuid1}, target=peer)
    application = cluster.application(path1)
    application.send("seed")
    assert application.read() == {"done": 1}
    wait_until(lambda: identical(cmd, [uuid1, uuid2]), timeout=15)
    application.send("quit")
    assert application.process.wait(10) == 0
    with Manager() as manager:
        assert [doc.doc for doc in manager.database(path2).table("people").find()] == [{"name": "Tom Jones"}]


def start_pair(cluster: Cluster, tmp_path: Path) -> tuple[Node, Node, Plugin, list[str], list[str]]:
    (source, replica), uuids = create_databases(tmp_path, "source", "replica")
    nodea = cluster.node("a", ports(), [source])
    nodeb = cluster.node("b", ports(), [replica], connect=(nodea.address,))
    cmd = cluster.plugin(nodea)
    wait_until(lambda: cmd.call("LOOKUP", {"name": "b"}).get("peer") == nodeb.id, timeout=10)
    cmd.call("REPLICATE", {"path": replica, "uuid": uuids[0]}, target=nodeb.id)
    return nodea, nodeb, cmd, [source, replica], uuids


def restart(cluster: Cluster, node: Node, paths: list[str], connect: str) -> Node:
    """The same node (label, ports, database files) in a new process: a new node id, the same data."""
    return cluster.node(node.label, node.ports, paths, connect=(connect,))


def test_sigkill_and_restart_of_the_replica_node_under_load_resumes_from_its_mark(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodea, nodeb, cmd, (source, replica), uuids = start_pair(cluster, tmp_path)
    application = cluster.application(source)
    total = 3000
    application.send(f"write {total} 1500")
    application.wait_written(300)
    wait_until(lambda: replica_status(cmd, nodeb, replica)["hwm"] > 200, timeout=10)
    nodeb.stop(signal.SIGKILL)
    killed_at = application.wait_written(600)
    application.wait_written(killed_at + 300)  # writes go on while the replica's node is down
    nodeb = restart(cluster, nodeb, [replica], nodea.address)
    assert application.wait_written(total) == total
    wait_until(lambda: identical(cmd, uuids), timeout=20)
    status = replica_status(cmd, nodeb, replica)
    assert status["hwm"] == status["source_sequence"]
    assert status["full_resyncs"] == 0
    assert status["partial_resyncs"] >= 1, status
    application.send("quit")
    nodeb.stop()
    nodea.stop()
    assert_same_databases(source, replica, total)


def test_outage_beyond_retention_takes_exactly_one_full_resync(cluster: Cluster, tmp_path: Path) -> None:
    nodea, nodeb, cmd, (source, replica), uuids = start_pair(cluster, tmp_path)
    application = cluster.application(source, max_entries=50)
    application.send("write 200 2000")
    assert application.wait_written(200) == 200
    wait_until(lambda: identical(cmd, uuids), timeout=15)
    assert replica_status(cmd, nodeb, replica)["full_resyncs"] == 0
    nodeb.stop(signal.SIGKILL)
    # The journal trims in steps of 512 entries, keeping max_entries: 700 more entries are past its retention.
    application.send("write 700 5000")
    assert application.wait_written(900) == 900
    with Manager() as manager:
        first, _last = manager.database(source).replication.retained
        mark = manager.database(replica).replication.marks()[uuids[0]]
    assert first > mark + 1, (first, mark)
    nodeb = restart(cluster, nodeb, [replica], nodea.address)
    application.send("write 300 500")  # and the load goes on while the replica resyncs
    assert application.wait_written(1200) == 1200
    wait_until(lambda: identical(cmd, uuids), timeout=20)
    status = replica_status(cmd, nodeb, replica)
    assert status["full_resyncs"] == 1, status
    assert status["state"] == "live"
    application.send("quit")
    nodeb.stop()
    nodea.stop()
    assert_same_databases(source, replica, 1200)


def stored_tables(path: str, table: str) -> dict[str, list[tuple[bytes, bytes]]]:
    """A table's records and every index's entries, byte for byte, read through cursors in this process."""
    with Manager() as manager:
        db = manager.database(path)
        found = db.table(table)
        with db._env.begin() as txn:
            pairs = {"records": list(txn.cursor(db=found._dbi))}
            for index in found._index_list:
                pairs[index.name] = list(txn.cursor(db=index.dbi))
        return pairs


def test_a_full_sync_read_from_pages_copies_every_kind_of_leaf(cluster: Cluster, tmp_path: Path) -> None:
    """A snapshot between node processes, read from the source's LMDB pages (core/pages.py), of a table with values
    in overflow pages, a key's duplicates in its leaf and in trees of their own, while an application process
    writes to the source: the replica holds the same stored bytes, and no node fell back to cursors."""
    (source, replica), uuids = create_databases(tmp_path, "source", "replica")
    with Manager() as manager:
        db = manager.database(source, config={"replication": True, "journal": {"max_entries": 100}})
        shapes = db.table("shapes")
        shapes.ensure("by_city", "{city}", duplicates=True)  # 3 keys: trees of duplicates
        shapes.ensure("by_pair", "{pair}", duplicates=True)  # 2 documents a key: in the leaf
        shapes.ensure("by_name", "{name}")
        for batch in range(1000):  # a commit each: the journal trims past its start, so a new replica needs a snapshot
            shapes.append_many(
                [
                    {"name": f"n{number:05}", "city": number % 3, "pair": number // 2, "text": "t" * (number % 7000)}
                    for number in (2 * batch, 2 * batch + 1)
                ]
            )
        assert db.replication.retained[0] > 1
    nodea = cluster.node("a", ports(), [source])
    nodeb = cluster.node("b", ports(), [replica], connect=(nodea.address,))
    cmd = cluster.plugin(nodea)
    wait_until(lambda: cmd.call("LOOKUP", {"name": "b"}).get("peer") == nodeb.id, timeout=10)
    application = cluster.application(source, max_entries=100)
    application.send("write 300 3000")
    cmd.call("REPLICATE", {"path": replica, "uuid": uuids[0]}, target=nodeb.id)
    assert application.wait_written(300) == 300
    wait_until(lambda: identical(cmd, uuids), timeout=30)
    status = replica_status(cmd, nodeb, replica)
    assert status["full_resyncs"] == 1 and status["state"] == "live", status
    application.send("quit")
    assert application.process.wait(10) == 0
    nodeb.stop()
    nodea.stop()
    copied = stored_tables(replica, "shapes")
    assert copied == stored_tables(source, "shapes")
    assert len(copied["records"]) == 2000 and len(copied["by_city"]) == 2000
    for label in ("a", "b"):
        assert "did not read as expected" not in (tmp_path / f"{label}.log").read_text()
