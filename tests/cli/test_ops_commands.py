"""Operator commands through the CLI runner: backup (of a live source under writes), restore (refusing a database in
use, UUID rules, a replica resuming from its restored marks), verify (finding broken indexes) and health."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pynndb import Database, Manager
from pynndb.cli.main import main
from pynndb.core.database import Database as RawDatabase
from pynndb.mesh.controller import Controller
from pynndb.replication import digest
from pynndb.replication.messages import Entries
from pynndb.replication.replica import Replica
from tests.helpers import person, wait_until
from tests.integration.deployment import Child
from tests.integration.test_node_processes import Application

pytestmark = pytest.mark.timeout(90)


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def source_db(manager: Manager, path: Path) -> Database:
    db = manager.database(str(path), str(path), config={"replication": True})
    people = db.table("people")
    people.ensure("by_email", "{email}")
    people.ensure("by_age", "{age}", duplicates=True)
    people.append_many([person(number) for number in range(40)])
    return db


def readonly_digest(path: str) -> tuple[str, str]:
    db = RawDatabase(path, path, {"readonly": True})
    try:
        return digest(db), db.replication.uuid
    finally:
        db.close()


def test_backup_verify_restore(manager: Manager, tmp_path: Path) -> None:
    db = source_db(manager, tmp_path / "source")
    backup = str(tmp_path / "backup")
    result = run("backup", db.path, backup, "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["uuid"] == db.replication.uuid
    assert manifest["sequence"] == db.replication.sequence
    assert manifest["digest"] == digest(db)
    assert run("verify", backup).exit_code == 0
    assert run("backup", db.path, backup).exit_code == 1  # never over an existing backup

    restored = str(tmp_path / "restored")
    result = run("restore", backup, restored, "--json")
    assert result.exit_code == 0, result.output
    content, uuid = readonly_digest(restored)
    assert content == manifest["digest"] and uuid != db.replication.uuid  # a new identity by default
    assert json.loads(result.stdout)["uuid"] == uuid

    refused = run("restore", backup, restored, "--same-uuid")
    assert refused.exit_code == 1 and "already holds a database" in refused.output
    assert readonly_digest(restored)[1] == uuid
    assert run("restore", backup, restored, "--same-uuid", "--force").exit_code == 0
    assert readonly_digest(restored) == (manifest["digest"], db.replication.uuid)


def test_restore_checks_the_backup_against_its_manifest(manager: Manager, tmp_path: Path) -> None:
    db = source_db(manager, tmp_path / "source")
    backup = tmp_path / "backup"
    assert run("backup", db.path, str(backup)).exit_code == 0
    manifest = json.loads((backup / "manifest.json").read_text())
    (backup / "manifest.json").write_text(json.dumps(dict(manifest, digest="0" * 32)))
    result = run("restore", str(backup), str(tmp_path / "restored"))
    assert result.exit_code == 1 and "does not match its manifest" in result.output
    assert not (tmp_path / "restored").exists()
    assert run("verify", str(backup)).exit_code == 1
    assert run("restore", str(tmp_path / "nothing"), str(tmp_path / "restored")).exit_code == 1


def test_restore_refuses_a_database_in_use(manager: Manager, tmp_path: Path) -> None:
    db = source_db(manager, tmp_path / "source")
    backup = str(tmp_path / "backup")
    assert run("backup", db.path, backup).exit_code == 0
    # In use by this process.
    result = run("restore", backup, db.path, "--force")
    assert result.exit_code == 1 and "in use" in result.output
    # In use by another process: an application holding it open.
    target = tmp_path / "target"
    manager.database("target", str(target), config={"replication": True}).table("t").append({"a": 1})
    manager.close("target")
    application = Application(tmp_path, str(target))
    before = readonly_digest(str(target))
    try:
        result = run("restore", backup, str(target), "--force")
        assert result.exit_code == 1 and "another process" in result.output
        assert readonly_digest(str(target)) == before
    finally:
        application.send("quit")
        application.stop()
    assert run("restore", backup, str(target), "--force").exit_code == 0
    assert readonly_digest(str(target))[0] == digest(db)


def test_backup_of_a_live_source_under_writes(manager: Manager, tmp_path: Path) -> None:
    path = str(tmp_path / "source")
    writer = Application(tmp_path, path)  # a separate process writing while the backup runs
    try:
        writer.send("write 4000 4000")
        writer.wait_written(500)
        backup = str(tmp_path / "backup")
        result = run("backup", path, backup, "--json")
        assert result.exit_code == 0, result.output
        manifest = json.loads(result.stdout)
        writer.read()  # {"done": ...}: the writer finished
    finally:
        writer.send("quit")
        writer.stop()
    source = manager.database("source", path)
    assert 0 < manifest["sequence"] < source.replication.sequence  # taken while writes went on
    restored = str(tmp_path / "restored")
    assert run("restore", backup, restored).exit_code == 0
    # The source as it stood at the manifest's sequence: its journal replayed up to there into an empty database.
    reference = manager.database("reference", str(tmp_path / "reference"))
    replica = Replica(reference, manifest["uuid"]).register()
    start = 1
    while start <= manifest["sequence"]:
        batch = [entry for entry in source.replication.entries(start, 1000) if entry[0] <= manifest["sequence"]]
        replica.receive(Entries(manifest["uuid"], batch, manifest["sequence"]))
        start = batch[-1][0] + 1
    assert replica.hwm == manifest["sequence"]
    assert digest(reference) == manifest["digest"] == readonly_digest(restored)[0]


def test_verify_finds_broken_indexes(manager: Manager, tmp_path: Path) -> None:
    db = source_db(manager, tmp_path / "source")
    result = run("verify", db.path)
    assert result.exit_code == 0 and "ok: 1 tables" in result.output
    people = db["people"]
    victim = people.first()
    assert victim is not None
    index = people.index("by_email")
    with db._env.begin(write=True) as txn:  # damage the index behind the library's back
        key = index.keys(dict(victim))[0]
        txn.delete(key, db=index.dbi)
        txn.put(b"\x00stray", b"000000000000000000000000", db=index.dbi)
    result = run("verify", db.path, "--json")
    assert result.exit_code == 1
    found = {(row["index"], row["problem"]) for row in map(json.loads, result.stdout.splitlines())}
    assert found == {("by_email", "missing_entry"), ("by_email", "orphan_entry")}
    assert run("verify", db.path, "--table", "nope").exit_code == 1
    assert run("verify", str(tmp_path / "nothing")).exit_code == 1


def live(node: Controller, path: str) -> bool:
    replicas = node.call("STATUS")["databases"][os.path.realpath(path)]["replicas"]
    return bool(replicas) and replicas[0]["state"] == "live" and replicas[0]["lag_entries"] == 0


def test_health(pair: tuple[Controller, Controller], manager: Manager, tmp_path: Path) -> None:
    a, b = pair
    db = source_db(manager, tmp_path / "source")
    a.call("REGISTER", {"path": db.path})
    replica_path = str(tmp_path / "replica")
    manager.database("replica", replica_path)
    b.call("REPLICATE", {"path": replica_path, "uuid": db.replication.uuid})
    wait_until(lambda: live(b, replica_path), timeout=20)
    node_b = f"tcp://127.0.0.1:{b.port3}"
    result = run("health", "--node", node_b, "--max-lag", "5")
    assert result.exit_code == 0, result.output
    assert "healthy" in result.output and "1 replicas" in result.output
    b.call("STOP", {})
    result = run("health", "--node", node_b, "--json")
    assert result.exit_code == 1
    assert "paused" in json.loads(result.stdout)["problems"][0]
    b.call("START", {})
    wait_until(lambda: run("health", "--node", node_b).exit_code == 0, timeout=20)
    unreachable = run("health", "--node", "tcp://127.0.0.1:9", "--timeout", "0.5")
    assert unreachable.exit_code == 2 and "does not answer" in unreachable.output


def test_a_restored_replica_resumes_from_its_marks(
    pair: tuple[Controller, Controller], manager: Manager, tmp_path: Path
) -> None:
    a, b = pair
    db = source_db(manager, tmp_path / "source")
    a.call("REGISTER", {"path": db.path})
    replica_path = str(tmp_path / "replica")
    manager.database("replica", replica_path)
    b.call("REPLICATE", {"path": replica_path, "uuid": db.replication.uuid})
    wait_until(lambda: live(b, replica_path), timeout=20)
    backup = str(tmp_path / "backup")
    manifest = json.loads(run("backup", replica_path, backup, "--json").stdout)
    assert manifest["marks"] == {db.replication.uuid: db.replication.sequence}
    db["people"].append_many([person(number) for number in range(40, 60)])  # the source moves on
    restored = str(tmp_path / "restored")
    assert run("restore", backup, restored).exit_code == 0
    assert b.replication is not None
    info = b.replication.attach(restored)  # a node picks the replication up from the restored database
    assert info["replicas"] == [db.replication.uuid]
    wait_until(lambda: live(b, restored), timeout=20)
    status = b.call("STATUS")["databases"][os.path.realpath(restored)]["replicas"][0]
    assert status["full_resyncs"] == 0  # resumed from the mark: only the missing entries came
    assert status["applied"] == db.replication.sequence - manifest["marks"][db.replication.uuid]
    restored_db = manager.database("restored", restored)
    assert digest(restored_db) == digest(db)


def test_a_second_process_sees_the_lock(tmp_path: Path, manager: Manager) -> None:
    """The in-use probe is fcntl on lock.mdb: a plain `python -c` holding the database open is seen."""
    path = str(tmp_path / "held")
    manager.database("held", path).table("t")
    manager.close("held")
    backup = str(tmp_path / "backup")
    assert run("backup", path, backup).exit_code == 0
    code = (
        f"from pynndb import Manager; import sys; m = Manager(); m.database('h', {path!r}); "
        "print('open', flush=True); sys.stdin.read()"
    )
    holder = Child([sys.executable, "-c", code], tmp_path / "holder.log")
    try:
        assert holder.line().strip() == "open"
        result = run("restore", backup, path, "--force")
        assert result.exit_code == 1 and "in use" in result.output
    finally:
        holder.stop(signal.SIGTERM)
