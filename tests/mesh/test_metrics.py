"""Prometheus metrics of a node: scraped during replication (in process and from a `pynndb node --metrics`
process) the figures move; lag in seconds stays true while the source is idle."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pynndb import Manager
from pynndb.core.journal_writes import now_clock
from pynndb.errors import CommandError
from pynndb.mesh.controller import Controller
from pynndb.mesh.metrics import serve
from pynndb.mesh.plugin import Plugin
from pynndb.replication.replica import Replica
from tests.helpers import person, wait_until
from tests.integration.deployment import Child
from tests.mesh.conftest import free_port

pytestmark = pytest.mark.timeout(60)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels`."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls)]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_scraped_figures_move_with_replication(
    pair: tuple[Controller, Controller], manager: Manager, tmp_path: Path
) -> None:
    a, b = pair
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    source.table("people").append_many([person(n) for n in range(10)])
    replica_path = os.path.realpath(tmp_path / "replica")
    manager.database("replica", replica_path)
    a.call("REGISTER", {"path": source.path})
    b.call("REPLICATE", {"path": replica_path, "uuid": source.replication.uuid})
    server = serve(b, 0)
    try:
        labels = {"database": replica_path, "source": source.replication.uuid}
        wait_until(lambda: value(scrape(server.port), "pynndb_replica_state", state="live", **labels) == 1, timeout=20)
        before = scrape(server.port)
        assert value(before, "pynndb_links_up") == 1
        assert value(before, "pynndb_peers_known") == 2
        assert value(before, "pynndb_replica_lag_entries", **labels) == 0
        assert value(before, "pynndb_replica_state", state="stalled", **labels) == 0
        assert value(before, "pynndb_commands_total", command="REPLICATE", code="ok") == 1

        for n in range(10, 30):
            source["people"].append(person(n))
        wait_until(lambda: value(scrape(server.port), "pynndb_replica_hwm", **labels) == source.replication.sequence)
        after = scrape(server.port)
        for name in ("pynndb_replica_applied_entries_total", "pynndb_replica_applied_documents_total"):
            assert value(after, name, **labels) >= value(before, name, **labels) + 20
        assert value(after, "pynndb_messages_in_total") > value(before, "pynndb_messages_in_total")
        assert value(after, "pynndb_replica_resyncs_total", kind="full", **labels) == 0
        assert value(after, "pynndb_replica_resyncs_total", kind="retaken", **labels) == 0

        with pytest.raises(CommandError):
            b.call("NO_SUCH_COMMAND")
        assert value(scrape(server.port), "pynndb_commands_total", command="unknown", code="unknown_command") == 1
    finally:
        server.stop()


def test_lag_in_seconds_stays_true_while_the_source_is_idle(
    pair: tuple[Controller, Controller], manager: Manager, tmp_path: Path
) -> None:
    a, b = pair
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    source.table("t").append({"n": 0})
    replica_path = os.path.realpath(tmp_path / "replica")
    manager.database("replica", replica_path)
    a.call("REGISTER", {"path": source.path})
    b.call("REPLICATE", {"path": replica_path, "uuid": source.replication.uuid})
    server = serve(b, 0)
    labels = {"database": replica_path, "source": source.replication.uuid}
    try:
        wait_until(lambda: value(scrape(server.port), "pynndb_replica_state", state="live", **labels) == 1, timeout=20)
        b.call("STOP", {})
        source["t"].append({"n": 1})  # then the source stays idle
        wait_until(lambda: value(scrape(server.port), "pynndb_replica_lag_entries", **labels) == 1, timeout=20)
        first = value(scrape(server.port), "pynndb_replica_lag_seconds", **labels)
        wait_until(lambda: value(scrape(server.port), "pynndb_replica_lag_seconds", **labels) > first + 0.3)
        assert value(scrape(server.port), "pynndb_replica_state", state="paused", **labels) == 1
        b.call("START", {})
        wait_until(lambda: value(scrape(server.port), "pynndb_replica_lag_seconds", **labels) == 0, timeout=20)
    finally:
        server.stop()


def test_lag_after_an_idle_spell_is_the_age_of_the_missing_entry(manager: Manager, tmp_path: Path) -> None:
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    replica = Replica(manager.database("replica", str(tmp_path / "replica")), source.replication.uuid).register()
    replica.last_applied_clock = now_clock() - ((3600 * 1000) << 16)  # the last entry applied is an hour old
    replica.ordering.hwm, replica.source_last = 5, 6
    replica.source_clock = now_clock()  # the source has just written entry 6
    assert replica.status()["lag_seconds"] < 5
    replica.source_last = 5
    assert replica.status()["lag_seconds"] == 0


def test_metrics_of_a_node_process(manager: Manager, tmp_path: Path) -> None:
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    source.table("events").append({"n": 0})
    replica_path = os.path.realpath(tmp_path / "replica")
    manager.database("replica", replica_path)
    manager.close("replica")
    ports = (free_port(), free_port(), free_port())
    metrics_port = free_port()
    args = [sys.executable, "-m", "pynndb", "node", "--label", "m", "--ports", ",".join(map(str, ports))]
    args += ["--heartbeat", "0.2", "--db", source.path, "--metrics", str(metrics_port)]
    node = Child(args, tmp_path / "node.log")
    plugin = None
    try:
        assert node.line().startswith("READY")
        plugin = Plugin(f"tcp://127.0.0.1:{ports[2]}").connect()
        plugin.call("REPLICATE", {"path": replica_path, "uuid": source.replication.uuid})
        labels = {"database": replica_path, "source": source.replication.uuid}
        start = source.replication.sequence
        wait_until(lambda: value(scrape(metrics_port), "pynndb_replica_hwm", **labels) == start, timeout=20)
        before = scrape(metrics_port)
        for n in range(1, 51):
            source["events"].append({"n": n})
        wait_until(lambda: value(scrape(metrics_port), "pynndb_replica_hwm", **labels) == start + 50, timeout=20)
        after = scrape(metrics_port)
        sequence = {"database": source.path}
        assert (
            value(after, "pynndb_database_sequence", **sequence)
            == start + 50
            > value(before, "pynndb_database_sequence", **sequence)
        )
        assert value(after, "pynndb_replica_applied_documents_total", **labels) >= 50
        assert value(after, "pynndb_replica_keyed_documents_total", **labels) == 0  # appends per call carry no keys
        assert value(after, "pynndb_replication_published_total") > value(before, "pynndb_replication_published_total")
        assert value(after, "pynndb_replica_lag_seconds", **labels) == 0
        assert value(after, "pynndb_node_info", label="m") == 1
    finally:
        if plugin is not None:
            plugin.close()
        node.stop()
