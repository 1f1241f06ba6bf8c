"""The user's snippet (examples/seed.py): run as is, and the same calls in-process on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from time import sleep

import pytest

from pynndb import Controller, Doc, Manager, Plugin
from tests.helpers import wait_until
from tests.mesh.conftest import free_port

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed.py"
SEED_PORTS = (7000, 7002, 7004, 7100, 7102, 7104)


def in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.timeout(60)
def test_seed_example_runs_as_is_and_leaves_nothing_behind(tmp_path: Path) -> None:
    busy = [port for port in SEED_PORTS if in_use(port)]
    if busy:
        pytest.skip(f"the example uses fixed ports and {busy} are taken (another run in parallel?)")
    environment = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run([sys.executable, str(SEED)], capture_output=True, text=True, timeout=45, env=environment)
    assert done.returncode == 0, done.stderr
    assert "Tom Jones" in done.stdout
    assert list(tmp_path.iterdir()) == []  # its temporary databases are gone
    kept = subprocess.run(
        [sys.executable, str(SEED), "--keep"], capture_output=True, text=True, timeout=45, env=environment
    )
    assert kept.returncode == 0, kept.stderr
    assert [path.name.startswith("pynndb-seed-") for path in tmp_path.iterdir()] == [True]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("settle", ["poll", "sleep"])
def test_seed_snippet_in_process(tmp_path: Path, settle: str) -> None:
    """The snippet's calls, in order, with free ports; 'sleep' keeps its `sleep(1)` then asserts at once."""
    path1 = f"{tmp_path}/db1"
    path2 = f"{tmp_path}/db2"
    nodea = Controller(free_port(), free_port(), free_port(), label="nodea").start()
    nodeb = Controller(free_port(), free_port(), free_port(), label="nodeb").start()
    cmd = Plugin(nodea)
    manager = Manager()
    try:
        nodea.connect(nodeb)
        cmd.connect()
        db1 = manager.database(path1, config={"replication": True})
        db2 = manager.database(path2, config={"replication": True})
        uuid = db1.replication.uuid
        peer = cmd.call("LOOKUP", {"name": "nodeb"}).get("peer")
        cmd.call("REGISTER", {"path": db1._path})
        cmd.call("REPLICATE", {"path": db2._path, "uuid": uuid}, target=peer)
        people = db1.table("people")
        people.ensure("by_name", "{name}", duplicates=True)
        people.append(Doc({"name": "Tom Jones"}))
        if settle == "sleep":
            sleep(1)
            assert cmd.diff([db1.replication.uuid, db2.replication.uuid]) == {}
        else:
            wait_until(lambda: cmd.diff([db1.replication.uuid, db2.replication.uuid]) == {}, timeout=10)
        assert [doc.doc for doc in db2.table("people").find()] == [{"name": "Tom Jones"}]
        assert db2.table("people").indexes() == ["by_name"]
    finally:
        cmd.close()
        nodea.stop()
        nodeb.stop()
        manager.close()
