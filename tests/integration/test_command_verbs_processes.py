"""The CLI verbs the way operators run them: `pynndb register/replicate/...` processes against `pynndb node`
processes, configuring a one-way replica end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pynndb import Manager
from tests.helpers import wait_until
from tests.integration.test_node_processes import Cluster, cluster, create_databases, identical, ports

__all__ = ["cluster"]  # the fixture, shared with test_node_processes
pytestmark = pytest.mark.timeout(90)


def pynndb(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pynndb", *args, "--node", address], capture_output=True, text=True, timeout=30
    )


def result(address: str, *args: str) -> Any:
    done = pynndb(address, *args, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_cli_verbs_configure_replication_between_node_processes(cluster: Cluster, tmp_path: Path) -> None:
    (source, replica), uuids = create_databases(tmp_path, "source", "replica")
    with Manager() as manager:
        manager.database(source).table("people").append({"name": "Ann"})
    nodea = cluster.node("a", ports(), [])
    nodeb = cluster.node("b", ports(), [], connect=(nodea.address,))
    a = nodea.command_address
    wait_until(lambda: result(a, "lookup", "b")["peer"] == nodeb.id, timeout=15)
    assert result(a, "register", source)["uuid"] == uuids[0]
    replicated = result(a, "replicate", "--path", replica, "--uuid", uuids[0], "--target", "b")
    assert (replicated["source"], replicated["mode"]) == (uuids[0], "one-way")
    cmd = cluster.plugin(nodea)
    wait_until(lambda: identical(cmd, uuids), timeout=20)
    assert result(a, "pause", "--target", "b") == 1
    assert result(a, "resume", "--target", "b") == 1
    bad = pynndb(a, "replicate", "--path", replica, "--uuid", "not-a-uuid", "--target", "b")
    assert bad.returncode == 1 and "bad_params" in bad.stdout
    assert result(a, "unreplicate", "--path", replica, "--uuid", uuids[0], "--target", "b")["unreplicated"] is True
    assert result(a, "ping", "--target", "b")["peer"] == nodeb.id  # the node kept answering
