"""A node lets go of a database it no longer serves or hosts, the way operators hit it: `pynndb node` processes, and
this test as the application process holding its own handles on the same files.

Before, a node kept every database it had ever opened: its map and file stayed open after UNREGISTER or
UNREPLICATE, so deleting the directory freed no space, and a new database made at the same path was served under the
old one's uuid from the old (deleted) file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pynndb import Manager
from tests.helpers import wait_until
from tests.integration.test_node_processes import Cluster, cluster, create_databases, identical, ports

__all__ = ["cluster"]  # the fixture, shared with test_node_processes
pytestmark = pytest.mark.timeout(120)


def mapped(pid: int, path: str) -> bool:
    """Whether process `pid` has the database at `path` mapped (LMDB maps data.mdb while it is open)."""
    target = os.path.join(os.path.realpath(path), "data.mdb")
    with open(f"/proc/{pid}/maps") as maps:
        return any(target in line for line in maps)


def test_unregister_and_unreplicate_release_the_files_and_a_new_database_at_the_path_is_served(
    cluster: Cluster, tmp_path: Path
) -> None:
    (source, replica), uuids = create_databases(tmp_path, "source", "replica")
    nodea = cluster.node("a", ports(), [])
    nodeb = cluster.node("b", ports(), [], connect=(nodea.address,))
    cmd = cluster.plugin(nodea)
    wait_until(lambda: cmd.call("LOOKUP", {"name": "b"}).get("peer") == nodeb.id, timeout=15)
    with Manager() as manager:
        people = manager.database(source, config={"replication": True}).table("people")
        people.ensure("by_name", "{name}", duplicates=True)
        assert cmd.call("REGISTER", {"path": source})["uuid"] == uuids[0]
        cmd.call("REPLICATE", {"path": replica, "uuid": uuids[0]}, target=nodeb.id)
        for index in range(50):
            people.append({"name": f"n{index}"})
        wait_until(lambda: identical(cmd, uuids), timeout=20)
        a, b = nodea.process.pid, nodeb.process.pid
        assert mapped(a, source) and mapped(b, replica)

        assert cmd.call("UNREPLICATE", {"path": replica, "uuid": uuids[0]}, target=nodeb.id)["unreplicated"]
        wait_until(lambda: not mapped(b, replica), timeout=10)
        assert os.path.realpath(replica) not in cmd.call("STATUS", target=nodeb.id)["databases"]
        assert cmd.call("UNREGISTER", {"path": source})["unregistered"]
        wait_until(lambda: not mapped(a, source), timeout=10)
        assert os.path.realpath(source) not in cmd.call("STATUS")["databases"]
        # The application's own handles are untouched, and both copies kept what they had.
        people.append({"name": "after"})
        assert len(people) == 51
    with Manager() as manager:
        assert len(manager.database(replica)["people"]) == 50

    # A new database where the old one was: the node opens the new file, not the one it had.
    shutil.rmtree(source)
    (fresh, copy), (fresh_uuid, copy_uuid) = create_databases(tmp_path, "source", "copy")
    assert fresh_uuid != uuids[0]
    with Manager() as manager:
        manager.database(fresh, config={"replication": True}).table("people").append({"name": "new"})
    assert cmd.call("REGISTER", {"path": fresh})["uuid"] == fresh_uuid
    assert mapped(a, fresh)
    cmd.call("REPLICATE", {"path": copy, "uuid": fresh_uuid}, target=nodeb.id)
    wait_until(lambda: identical(cmd, [fresh_uuid, copy_uuid]), timeout=20)
    with Manager() as manager:
        assert [doc["name"] for doc in manager.database(copy)["people"].find()] == ["new"]
