"""A node wakes on the commit doorbell: an application process's burst and its first write after an idle spell both
reach the replica without the service's safety poll finding anything (found_by_polling stays 0), with writemap on
and off, with in-process nodes and with `pynndb node` processes.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pynndb import Manager
from pynndb.core.doorbell import bell_directory
from pynndb.errors import CommandError
from pynndb.mesh.replicator import SAFETY_POLL
from tests.helpers import wait_until
from tests.integration.deployment import Child, Deployment, Node

pytestmark = pytest.mark.timeout(90)

APPLICATION = textwrap.dedent(
    """
    import sys
    from pynndb import Manager
    path, writemap = sys.argv[1], sys.argv[2] == "1"
    with Manager() as manager:
        events = manager.database("app", path, config={"replication": True, "writemap": writemap}).table("events")
        print("ready", flush=True)
        for line in sys.stdin:
            count = int(line)
            for number in range(count):
                events.append({"n": number})
            print("done", flush=True)
    """
)


def replica_records(path: str) -> int:
    with Manager() as manager:
        db = manager.database("replica", path)
        return db.table("events").records() if "events" in db.tables() else 0


def replicated(deployment: Deployment, tmp_path: Path) -> tuple[str, str, Any, Node, Node]:
    """A source served by node a, replicated one-way into a replica that node b serves too; (source, replica, a
    Plugin connected to a, a, b)."""
    source, replica = str(tmp_path / "source"), str(tmp_path / "replica")
    with Manager() as manager:
        uuid = manager.database("s", source, config={"replication": True}).replication.uuid
        manager.database("r", replica, config={"replication": True})
    a = deployment.node("a", [source])
    b = deployment.node("b", [replica], connect=[a])
    cmd = deployment.plugin(a)
    cmd.call("REPLICATE", {"path": replica, "uuid": uuid}, target=b.label)
    return source, replica, cmd, a, b


@pytest.mark.parametrize("writemap", [False, True], ids=["plain", "writemap"])
def test_bursts_and_a_write_after_idle_wake_the_node(deployment: Deployment, tmp_path: Path, writemap: bool) -> None:
    source, replica, cmd, a, b = replicated(deployment, tmp_path)
    application = Child([sys.executable, "-c", APPLICATION, source, "1" if writemap else "0"], tmp_path / "app.log")
    try:
        assert application.line().strip() == "ready"
        total = 0
        for count in (1, 500, 1, 200):
            time.sleep(SAFETY_POLL + 0.3)  # idle for longer than the safety poll: only a ring can wake the node
            application.process.stdin.write(f"{count}\n")  # type: ignore[union-attr]
            application.process.stdin.flush()  # type: ignore[union-attr]
            assert application.line().strip() == "done"
            total += count
            wait_until(lambda: replica_records(replica) == total, timeout=20)  # noqa: B023
        counters = cmd.call("STATUS", target=a.label)["replication"]
        assert counters["published"] >= 1
        assert counters["found_by_polling"] == 0, counters
    finally:
        application.stop()


def test_a_replica_node_wakes_once_per_arrival_not_again_for_its_own_apply(
    deployment: Deployment, tmp_path: Path
) -> None:
    """The replica's apply commits (which ring its own doorbell, the replica being served too, and call its commit
    listener) must not wake its service for a second, idle step: one wake-up per write that arrives."""
    source, replica, cmd, a, b = replicated(deployment, tmp_path)
    application = Child([sys.executable, "-c", APPLICATION, source, "1"], tmp_path / "app.log")
    writes = 30
    try:
        assert application.line().strip() == "ready"
        application.process.stdin.write("1\n")  # type: ignore[union-attr]
        application.process.stdin.flush()  # type: ignore[union-attr]
        assert application.line().strip() == "done"
        wait_until(lambda: replica_records(replica) == 1, timeout=20)
        before = cmd.call("STATUS", target=b.label)["replication"]["wakeups"]
        for total in range(2, writes + 2):
            application.process.stdin.write("1\n")  # type: ignore[union-attr]
            application.process.stdin.flush()  # type: ignore[union-attr]
            assert application.line().strip() == "done"
            wait_until(lambda: replica_records(replica) == total, timeout=20)  # noqa: B023
        woken = cmd.call("STATUS", target=b.label)["replication"]["wakeups"] - before
        # One per write, and a few for anything else (a command, a peer change); two or more per write before.
        assert woken <= writes + 5, woken
    finally:
        application.stop()


def test_a_database_no_longer_served_no_longer_wakes_its_node(deployment: Deployment, tmp_path: Path) -> None:
    """After UNREGISTER the node stops listening to the database's doorbell: an application process's commits to it
    no longer wake the node for steps with nothing to do (before, each of them did)."""
    source, replica, cmd, a, b = replicated(deployment, tmp_path)
    bells = bell_directory(source)
    application = Child([sys.executable, "-c", APPLICATION, source, "1"], tmp_path / "app.log")
    writes = 30
    try:
        assert application.line().strip() == "ready"
        assert len(fifos(bells)) == 1  # node a listens (the application only rings)
        cmd.call("UNREGISTER", {"path": source}, target=a.label)
        wait_until(lambda: not fifos(bells), timeout=10)
        before = cmd.call("STATUS", target=a.label)["replication"]["wakeups"]
        for _ in range(writes):
            application.process.stdin.write("1\n")  # type: ignore[union-attr]
            application.process.stdin.flush()  # type: ignore[union-attr]
            assert application.line().strip() == "done"
        woken = cmd.call("STATUS", target=a.label)["replication"]["wakeups"] - before
        assert woken <= 5, woken  # (a message from b, a peer change: not one per commit)
    finally:
        application.stop()


def fifos(directory: str) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".fifo")] if os.path.isdir(directory) else []


def mapped_by_node(node: Node, path: str) -> bool:
    """Whether the node's process maps the database's data file (the test process has no handle of its own on it)."""
    pid = node.runner.process.pid if isinstance(node.runner, Child) else os.getpid()
    data = os.path.join(os.path.realpath(path), "data.mdb")
    with open(f"/proc/{pid}/maps") as maps:
        return any(line.rstrip("\n").endswith(data) for line in maps)


def test_undoing_what_a_node_never_did_opens_nothing(deployment: Deployment, tmp_path: Path) -> None:
    """UNREGISTER and UNREPLICATE of a database a node neither serves nor hosts answer not_found without opening it:
    before, the node opened it to read its uuid and kept it open (mapped, with a descriptor) until it stopped."""
    other = str(tmp_path / "other")
    with Manager() as manager:
        manager.database("o", other, config={"replication": True}).table("t").append({"n": 1})
    source, replica, cmd, a, b = replicated(deployment, tmp_path)
    uuid = "0" * 8 + "-0000-0000-0000-" + "0" * 12
    for command, params in (("UNREGISTER", {"path": other}), ("UNREPLICATE", {"path": other, "uuid": uuid})):
        for node in (a, b):
            with pytest.raises(CommandError) as caught:
                cmd.call(command, params, target=node.label)
            assert caught.value.code == "not_found"
            assert other in str(caught.value)
            assert not mapped_by_node(node, other)
    assert mapped_by_node(a, source) and mapped_by_node(b, replica)  # (what they serve and host: open)
    cmd.call("UNREGISTER", {"path": source}, target=a.label)  # the same commands still undo what was done
    with pytest.raises(CommandError) as caught:
        cmd.call("UNREGISTER", {"path": source}, target=a.label)
    assert caught.value.code == "not_found"


def test_a_refused_command_leaves_the_database_as_it_found_it(deployment: Deployment, tmp_path: Path) -> None:
    """REGISTER of a database without a journal and REPLICATE of a database into itself are refused (bad_params)
    and leave a database the node did not hold closed: before, the node kept it open (mapped, with a descriptor)
    until it stopped. A refusal about a database the node does hold leaves it held and working."""
    plain, journaled = str(tmp_path / "plain"), str(tmp_path / "journaled")
    with Manager() as manager:
        manager.database("p", plain).table("t").append({"n": 1})
        own = manager.database("j", journaled, config={"replication": True}).replication.uuid
    source, replica, cmd, a, b = replicated(deployment, tmp_path)
    refused = (("REGISTER", {"path": plain}, plain), ("REPLICATE", {"path": journaled, "uuid": own}, journaled))
    for command, params, path in refused:
        for node in (a, b):
            with pytest.raises(CommandError) as caught:
                cmd.call(command, params, target=node.label)
            assert caught.value.code == "bad_params"
            assert not mapped_by_node(node, path)
    replica_uuid = cmd.call("STATUS", target=b.label)["databases"][os.path.realpath(replica)]["uuid"]
    with pytest.raises(CommandError) as caught:
        cmd.call("REPLICATE", {"path": replica, "uuid": replica_uuid}, target=b.label)
    assert caught.value.code == "bad_params"
    assert mapped_by_node(b, replica)
    with Manager() as manager:
        manager.database("s", source, config={"replication": True}).table("events").append({"n": 1})
    wait_until(lambda: replica_records(replica) == 1, timeout=20)
    # The database refused for want of a journal is registered once it keeps one.
    with Manager() as manager:
        uuid = manager.database("p", plain, config={"replication": True}).replication.uuid
    assert cmd.call("REGISTER", {"path": plain}, target=a.label)["uuid"] == uuid
    assert mapped_by_node(a, plain)
