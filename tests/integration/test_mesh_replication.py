"""Replication over the mesh end to end: in-process nodes on real loopback sockets, real databases in tmp_path.

Every scenario ends by comparing the databases through the mesh (`Plugin.diff`) or, for aggregation, by content.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pynndb import Database, Manager
from pynndb.errors import CommandError
from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin
from tests.helpers import wait_until
from tests.integration.deployment import Writer, start_writer
from tests.mesh.conftest import Mesh

HEARTBEAT = 0.2
WRITTEN_PAST_RETENTION = 600
pytestmark = pytest.mark.timeout(60)


def open_db(manager: Manager, tmp_path: Path, name: str, **config: Any) -> Database:
    return manager.database(name, str(tmp_path / name), config={"replication": True, **config})


def nodes(mesh: Mesh, *labels: str) -> list[Controller]:
    return [mesh.node(label, heartbeat=HEARTBEAT) for label in labels]


def chain(mesh: Mesh, *labels: str) -> list[Controller]:
    """Nodes linked in a line, every node seeing every other one."""
    created = nodes(mesh, *labels)
    for left, right in zip(created, created[1:], strict=False):
        left.connect(right)
    wait_until(lambda: mesh.converged(created), timeout=10)
    return created


def identical(cmd: Plugin, a: Database, b: Database) -> bool:
    """diff == {}; False (not an error) while the mesh does not yet know where both databases are."""
    try:
        return cmd.diff([a.replication.uuid, b.replication.uuid]) == {}
    except CommandError as error:
        if error.code == "not_found":
            return False
        raise


def records(db: Database, table: str = "events") -> int:
    """Records in a table, 0 before it exists (a read-only replica cannot create it)."""
    return db.table(table).records() if table in db.tables() else 0


def replica_status(cmd: Plugin, node: Controller, db: Database, source: Database | None = None) -> dict[str, Any]:
    """The STATUS entry (fetched through the mesh) of the replica `db` of `source` on `node`."""
    databases = cmd.call("STATUS", target=node.label)["databases"]
    replicas = databases[os.path.realpath(db.path)]["replicas"]
    if source is not None:
        replicas = [entry for entry in replicas if entry["source"] == source.replication.uuid]
    assert len(replicas) == 1, replicas
    return dict(replicas[0])


def register(cmd: Plugin, node: Controller, db: Database) -> dict[str, Any]:
    return cmd.call("REGISTER", {"path": db.path}, target=node.label)


def replicate(cmd: Plugin, node: Controller, db: Database, source: Database, mode: str | None = None) -> dict[str, Any]:
    params = {"path": db.path, "uuid": source.replication.uuid}
    if mode is not None:
        params["mode"] = mode
    return cmd.call("REPLICATE", params, target=node.label)


def people(db: Database) -> dict[str, dict[str, Any]]:
    """Key -> fields of every document in table 'people' ({} before it exists)."""
    if "people" not in db.tables():
        return {}
    return {str(doc.key): doc.doc for doc in db.table("people").find()}


# --- topologies (one-way, two-way, many-to-one, multi-hop: tests/integration/test_deployments.py) -----------------
def test_redundant_path_keeps_data_flowing_when_a_link_is_cut(
    mesh: Mesh, manager: Manager, tmp_path: Path, writers: list[Writer]
) -> None:
    a, b, c = nodes(mesh, "a", "b", "c")
    a.connect(b)
    b.connect(c)
    a.connect(c)  # the second path: a-c directly, besides a-b-c
    wait_until(lambda: mesh.converged([a, b, c]), timeout=10)
    cmd = mesh.plugin(b)
    source, target = open_db(manager, tmp_path, "source"), open_db(manager, tmp_path, "target")
    source.table("events")
    register(cmd, a, source)
    replicate(cmd, c, target, source)
    writer = start_writer(writers, source, pause=0.002)
    wait_until(lambda: records(target) > 50, timeout=10)
    cmd.call("DISCONNECT", {"peer": "c"}, target="a")
    assert c.id not in {link["peer"] for link in a.links()}
    # Data keeps flowing over a-b-c: the replica gains many more entries while the writer goes on.
    after_cut = writer.written
    wait_until(lambda: records(target) > after_cut + 100, timeout=10)
    written = writer.finish()
    wait_until(lambda: identical(cmd, source, target), timeout=15)
    assert target.table("events").records() == written
    assert replica_status(cmd, c, target)["full_resyncs"] == 0


def test_link_cut_and_restored_under_load_resumes_without_loss(
    mesh: Mesh, manager: Manager, tmp_path: Path, writers: list[Writer]
) -> None:
    a, b = chain(mesh, "a", "b")
    cmd = mesh.plugin(a)
    source, target = open_db(manager, tmp_path, "source"), open_db(manager, tmp_path, "target")
    source.table("events").ensure("by_serial", "{serial}")
    register(cmd, a, source)
    replicate(cmd, b, target, source)
    writer = start_writer(writers, source, pause=0.002)
    wait_until(lambda: records(target) > 50, timeout=10)
    a.disconnect(b)
    cut_at = source.replication.sequence
    wait_until(lambda: source.replication.sequence > cut_at + 100, timeout=10)
    assert target.replication.sequence < source.replication.sequence
    a.connect(b)
    wait_until(lambda: records(target) > cut_at + 150, timeout=10)
    written = writer.finish()
    wait_until(lambda: identical(cmd, source, target), timeout=15)
    events = target.table("events")
    assert events.records() == written
    assert [doc["serial"] for doc in events.find("by_serial")] == list(range(written))
    status = replica_status(cmd, b, target)
    assert status["full_resyncs"] == 0
    assert status["partial_resyncs"] >= 1


# --- pause, resume, retention -----------------------------------------------------------------------------------
def test_stop_writes_start_catches_up_with_a_partial_resync(mesh: Mesh, manager: Manager, tmp_path: Path) -> None:
    a, b = chain(mesh, "a", "b")
    cmd = mesh.plugin(a)
    source = open_db(manager, tmp_path, "source", journal={"max_entries": 50})
    target, witness = open_db(manager, tmp_path, "target"), open_db(manager, tmp_path, "witness")
    events = source.table("events")
    register(cmd, a, source)
    replicate(cmd, b, target, source)
    replicate(cmd, b, witness, source)
    events.append({"serial": -1})
    wait_until(lambda: identical(cmd, source, target), timeout=10)
    assert cmd.call("STOP", {"path": target.path}, target="b") == {"paused": 1}
    assert replica_status(cmd, b, target)["paused"] is True
    hwm = replica_status(cmd, b, target)["hwm"]
    for number in range(20):  # a short outage: well within the source's 50 retained entries
        events.append({"serial": number})
    # The live entries reach node b (the witness, on the same node, applies them); the paused replica ignores them.
    wait_until(lambda: replica_status(cmd, b, witness)["hwm"] == source.replication.sequence, timeout=10)
    assert replica_status(cmd, b, target)["hwm"] == hwm
    assert target.table("events").records() == 1
    assert cmd.call("START", {"path": target.path}, target="b") == {"resumed": 1}
    wait_until(lambda: identical(cmd, source, target), timeout=10)
    status = replica_status(cmd, b, target)
    assert status["paused"] is False
    assert status["state"] == "live"
    assert status["hwm"] == source.replication.sequence
    assert status["full_resyncs"] == 0
    assert cmd.call("START", {"path": target.path}, target="b") == {"resumed": 1}  # idempotent


def test_outage_beyond_retention_takes_exactly_one_full_resync(mesh: Mesh, manager: Manager, tmp_path: Path) -> None:
    a, b = chain(mesh, "a", "b")
    cmd = mesh.plugin(a)
    source = open_db(manager, tmp_path, "source", journal={"max_entries": 50})
    target = open_db(manager, tmp_path, "target")
    events = source.table("events")
    events.ensure("by_serial", "{serial}")
    register(cmd, a, source)
    replicate(cmd, b, target, source)
    for number in range(10):
        events.append({"serial": number})
    wait_until(lambda: identical(cmd, source, target), timeout=10)
    assert replica_status(cmd, b, target)["full_resyncs"] == 0
    cmd.call("STOP", {"path": target.path, "uuid": source.replication.uuid}, target="b")
    hwm = replica_status(cmd, b, target)["hwm"]
    # The journal trims in steps (every 512 entries), so write past one step to see max_entries applied.
    for number in range(10, WRITTEN_PAST_RETENTION):
        events.append({"serial": number})
    first, _last = source.replication.retained
    assert first > hwm + 1, "the journal no longer holds what the replica misses"
    cmd.call("START", {"uuid": source.replication.uuid}, target="b")
    wait_until(lambda: identical(cmd, source, target), timeout=15)
    wait_until(lambda: replica_status(cmd, b, target)["state"] == "live", timeout=10)
    status = replica_status(cmd, b, target)
    assert status["full_resyncs"] == 1
    assert status["hwm"] == source.replication.sequence
    assert [doc["serial"] for doc in target.table("events").find("by_serial")] == list(range(WRITTEN_PAST_RETENTION))


# --- commands ---------------------------------------------------------------------------------------------------
def test_bad_commands_get_stable_error_codes_and_the_node_keeps_answering(
    mesh: Mesh, manager: Manager, tmp_path: Path
) -> None:
    a, b = chain(mesh, "a", "b")
    cmd = mesh.plugin(a)
    db = open_db(manager, tmp_path, "db")
    plain = manager.database("plain", str(tmp_path / "plain"))  # no journal
    (tmp_path / "not-a-db").mkdir()
    (tmp_path / "not-a-db" / "notes.txt").write_text("hello")
    cases: list[tuple[str, Any, str]] = [
        ("REGISTER", {"path": str(tmp_path / "missing")}, "not_found"),
        ("REGISTER", {"path": str(tmp_path / "not-a-db")}, "not_found"),
        ("REGISTER", {"path": str(tmp_path / "not-a-db" / "notes.txt")}, "not_found"),
        ("REGISTER", {"path": plain.path}, "bad_params"),
        ("REGISTER", {}, "bad_params"),
        ("REGISTER", {"path": 42}, "bad_params"),
        ("REGISTER", {"path": [db.path]}, "bad_params"),
        ("UNREGISTER", {"path": db.path}, "not_found"),
        ("REPLICATE", {"path": db.path, "uuid": "not-a-uuid"}, "bad_params"),
        ("REPLICATE", {"path": db.path, "uuid": 12345}, "bad_params"),
        ("REPLICATE", {"path": db.path, "uuid": db.replication.uuid}, "bad_params"),
        ("REPLICATE", {"path": db.path, "uuid": db.replication.uuid, "mode": "sideways"}, "bad_params"),
        ("REPLICATE", {"path": str(tmp_path / "missing"), "uuid": db.replication.uuid}, "not_found"),
        ("REPLICATE", {"uuid": db.replication.uuid}, "bad_params"),
        ("UNREPLICATE", {"path": db.path, "uuid": "0" * 8 + "-0000-0000-0000-" + "0" * 12}, "not_found"),
        ("STOP", {"path": db.path}, "not_found"),
        ("START", {"uuid": True}, "bad_params"),
        ("DIGEST", {"uuid": "0" * 8 + "-0000-0000-0000-" + "0" * 12}, "not_found"),
        ("DUMP", {"uuid": db.replication.uuid}, "bad_params"),
        ("NO_SUCH_COMMAND", {}, "unknown_command"),
        ("REGISTER", ["not", "an", "object"], "bad_params"),
    ]
    for command, params, code in cases:
        for target in (None, "b"):
            with pytest.raises(CommandError) as caught:
                cmd.call(command, params, target=target)
            assert caught.value.code == code, (command, params, target, str(caught.value))
            assert str(caught.value), "the error says what went wrong"
    with pytest.raises(CommandError) as caught:
        cmd.call("PING", target="no-such-node")
    assert caught.value.code == "unknown_target"
    assert cmd.call("PING")["pong"] is True
    assert cmd.call("PING", target="b")["label"] == "b"
    # Commands are idempotent.
    first = cmd.call("REGISTER", {"path": db.path})
    assert cmd.call("REGISTER", {"path": db.path}) == first


def test_status_reports_sequence_lag_state_and_counters(mesh: Mesh, manager: Manager, tmp_path: Path) -> None:
    a, b = chain(mesh, "a", "b")
    cmd = mesh.plugin(a)
    source = open_db(manager, tmp_path, "source", journal={"max_entries": 50})
    target = open_db(manager, tmp_path, "target")
    register(cmd, a, source)
    replicate(cmd, b, target, source)
    events = source.table("events")
    for number in range(WRITTEN_PAST_RETENTION):
        events.append({"serial": number})
    wait_until(lambda: replica_status(cmd, b, target)["hwm"] == source.replication.sequence, timeout=10)
    status = cmd.call("STATUS", target="a")
    entry = status["databases"][source.path]
    assert entry["uuid"] == source.replication.uuid
    assert entry["source"] is True
    assert entry["read_only"] is False
    assert entry["sequence"] == source.replication.sequence
    first, last = entry["retained"]
    assert last == source.replication.sequence
    assert 1 < first <= last - 49, "retention keeps at least max_entries and trims the rest"
    assert status["replication"]["published"] >= 1
    replica_side = cmd.call("STATUS", target="b")["databases"][target.path]
    assert replica_side["read_only"] is True
    assert replica_side["source"] is False
    replica = replica_side["replicas"][0]
    assert replica["source"] == source.replication.uuid
    assert replica["mode"] == "one-way"
    assert replica["state"] == "live"
    assert replica["lag_entries"] == 0
    assert replica["lag_seconds"] == 0
    for counter in ("applied", "duplicates", "partial_resyncs", "full_resyncs"):
        assert isinstance(replica[counter], int)
    # Entries applied one by one, or (if it fell behind the 50-entry journal) a snapshot then entries.
    assert replica["applied"] > 0 or replica["full_resyncs"] > 0


def test_status_shows_live_once_a_replica_that_joined_under_writes_caught_up(
    mesh: Mesh, manager: Manager, tmp_path: Path
) -> None:
    a, b = chain(mesh, "a", "b")
    cmd = mesh.plugin(a)
    source, target = open_db(manager, tmp_path, "source"), open_db(manager, tmp_path, "target")
    events = source.table("events")
    events.append_many([{"serial": number} for number in range(50)])
    register(cmd, a, source)
    replicate(cmd, b, target, source)
    for number in range(50, 70):  # live entries race the answer to the replica's first request
        events.append({"serial": number})
    wait_until(lambda: identical(cmd, source, target), timeout=10)
    assert replica_status(cmd, b, target)["hwm"] == source.replication.sequence
    wait_until(lambda: replica_status(cmd, b, target)["state"] == "live", timeout=10)


def test_status_shows_the_lag_of_a_paused_replica(mesh: Mesh, manager: Manager, tmp_path: Path) -> None:
    a, b = chain(mesh, "a", "b")
    cmd = mesh.plugin(a)
    source, target = open_db(manager, tmp_path, "source"), open_db(manager, tmp_path, "target")
    register(cmd, a, source)
    replicate(cmd, b, target, source)
    events = source.table("events")
    events.append({"serial": 0})
    wait_until(lambda: replica_status(cmd, b, target)["hwm"] == source.replication.sequence, timeout=10)
    cmd.call("STOP", {"path": target.path}, target="b")
    for number in range(1, 11):
        events.append({"serial": number})
    # Node b learns the source's sequence (from live entries and from the directory): the pause shows as lag.
    wait_until(lambda: replica_status(cmd, b, target)["lag_entries"] == 10, timeout=5)
