"""The divergence detector with `pynndb node` processes: a replica changed behind its node's back (with the raw
LMDB library while the node was stopped) is found `diverged` by VERIFY, and RESYNC repairs it by a snapshot; the
pinned digests a check asks a source's node for."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pynndb import Doc, Manager
from pynndb.replication import diff
from tests.chaos.cluster import Node, create_database
from tests.chaos.harness import corrupt
from tests.helpers import wait_until
from tests.integration.deployment import Deployment
from tests.integration.test_wakeup import replica_records, replicated
from tests.mesh.conftest import Mesh, free_port

pytestmark = pytest.mark.timeout(90)


def verify(node: Node, params: dict[str, Any]) -> dict[str, Any]:
    replicas = node.call("VERIFY", params, timeout=15)["replicas"]
    assert len(replicas) == 1, replicas
    return dict(replicas[0])


def test_corrupted_replica_is_detected_and_resync_repairs_it(nodes: list[Node], tmp_path: Path) -> None:
    source, replica = str(tmp_path / "source"), str(tmp_path / "replica")
    source_uuid = create_database(source)
    create_database(replica)
    with Manager() as manager:
        docs = manager.database(source, config={"replication": True}).table("docs")
        for number in range(50):
            docs.append(Doc({"n": number, "x": number * 7}, oid=f"k{number:03d}"))
    cwd = str(Path(__file__).resolve().parents[2])
    nodea = Node("a", tmp_path / "a.log", ports=(free_port(), free_port(), free_port()), databases=[source])
    nodes.append(nodea)
    nodea.start(cwd)
    nodeb = Node("b", tmp_path / "b.log", ports=(free_port(), free_port(), free_port()), databases=[replica])
    nodeb.connect = [f"tcp://127.0.0.1:{nodea.ports[0]}"]
    nodes.append(nodeb)
    nodeb.start(cwd)
    params = {"path": replica, "uuid": source_uuid}
    nodeb.call("REPLICATE", {**params, "mode": "one-way"}, timeout=10)
    first = wait_until(lambda: (status := verify(nodeb, params))["verification"] == "match" and status, timeout=30)
    assert first["state"] == "live" and first["verified"]

    nodeb.terminate()
    changed = corrupt(replica)
    assert changed == "k000"
    nodeb.start(cwd)
    found = wait_until(lambda: (status := verify(nodeb, params))["state"] == "diverged" and status, timeout=30)
    assert "docs" in found["reason"], found
    assert found["verification"] == "mismatch"
    assert nodeb.call("STATUS")["replication"]["verify_mismatches"] >= 1

    assert nodeb.call("RESYNC", params)["resyncing"] == 1
    repaired = wait_until(
        lambda: (status := verify(nodeb, params))["verification"] == "match" and status["state"] == "live" and status,
        timeout=30,
    )
    assert repaired["full_resyncs"] == 1, repaired
    nodeb.terminate()
    nodea.terminate()
    with Manager() as manager:
        assert diff(manager.database("s", source), manager.database("r", replica)) == {}


def test_checks_are_conclusive_while_writes_flow(mesh: Mesh, manager: Manager, tmp_path: Path) -> None:
    """Under a steady stream of writes the replica is held at the source digest's sequence, so VERIFY concludes
    (match) instead of finding the replica already past it."""
    nodea, nodeb = mesh.node("a", heartbeat=0.2), mesh.node("b", heartbeat=0.2)
    nodea.connect(nodeb)
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    target = manager.database("target", str(tmp_path / "target"), config={"replication": True})
    events = source.table("events")
    events.append({"n": -1})
    cmd = mesh.plugin(nodea)
    cmd.call("REGISTER", {"path": source.path})
    params = {"path": target.path, "uuid": source.replication.uuid}
    cmd.call("REPLICATE", {**params, "mode": "one-way"}, target="b")
    stop = threading.Event()

    def write() -> None:
        number = 0
        while not stop.wait(0.002):  # about 300 commits a second, in batches the node publishes together
            events.append({"n": number})
            number += 1

    writer = threading.Thread(target=write, name="test-writer")
    writer.start()
    try:
        wait_until(lambda: cmd.call("VERIFY", params, target="b", timeout=15)["replicas"][0]["state"] == "live", 20)
        outcomes = [cmd.call("VERIFY", params, target="b", timeout=15)["replicas"][0]["verification"] for _ in range(5)]
    finally:
        stop.set()
        writer.join(10)
    assert outcomes.count("match") >= 4, outcomes
    assert "mismatch" not in outcomes


def test_a_pinned_digest_is_the_content_at_its_sequence(deployment: Deployment, tmp_path: Path) -> None:
    """DIGEST with pin (what a divergence check asks a source's node for) answers the sequence at once; the digest
    fetched by its ticket is the content at that sequence, whatever was written after the pin; VERIFY of the
    replica, which uses it, concludes. With in-process nodes and with node processes."""
    source, replica, cmd, a, b = replicated(deployment, tmp_path)
    with Manager() as manager:
        db = manager.database("s", source, config={"replication": True})
        events = db.table("events")
        events.append_many([{"n": number} for number in range(20)])
        uuid = db.replication.uuid
        pinned = cmd.call("DIGEST", {"uuid": uuid, "pin": True}, target=a.label)
        events.append({"n": 20})
        done = cmd.call("DIGEST", {"uuid": uuid, "ticket": pinned["ticket"], "wait": 10}, target=a.label)
        assert done["sequence"] == pinned["sequence"] == db.replication.sequence - 1
        assert done["tables"]["events"]["records"] == 20
        now = cmd.call("DIGEST", {"uuid": uuid}, target=a.label)
        assert now["tables"]["events"]["records"] == 21 and now["tables"] != done["tables"]
    params = {"path": replica, "uuid": uuid}
    wait_until(lambda: replica_records(replica) == 21, timeout=20)
    status = wait_until(
        lambda: (
            (found := cmd.call("VERIFY", params, target=b.label, timeout=15)["replicas"][0])["verification"] == "match"
            and found
        ),
        timeout=30,
    )
    assert status["state"] == "live"
