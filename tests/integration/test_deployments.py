"""Replication scenarios run the way users deploy: each runs with in-process nodes and with `pynndb node` processes.

The test process is the application: it opens its own handles on the database files, replicas included, before
any REPLICATE, and reads and writes through them while the nodes fill them, fail and come back.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from pynndb import Database, Manager
from pynndb.errors import CommandError, DocumentDoesNotExist, JournalTrimmed, PyNNDBError, ReadOnlyDatabase
from pynndb.mesh.plugin import Plugin
from tests.helpers import person, wait_until
from tests.integration.deployment import Deployment, Node, Writer, start_writer
from tests.integration.test_mesh_replication import people

pytestmark = pytest.mark.timeout(90)


def open_db(manager: Manager, tmp_path: Path, name: str, **config: Any) -> Database:
    return manager.database(name, str(tmp_path / name), config={"replication": True, **config})


def identical(cmd: Plugin, a: Database, b: Database) -> bool:
    """diff == {} through the mesh; False while a holder is unknown or unreachable (a node restarting)."""
    try:
        return cmd.diff([a.replication.uuid, b.replication.uuid], timeout=5) == {}
    except PyNNDBError:
        return False


def replicate(cmd: Plugin, node: Node, db: Database, source: Database, mode: str | None = None) -> dict[str, Any]:
    params = {"path": db.path, "uuid": source.replication.uuid}
    if mode is not None:
        params["mode"] = mode
    return cmd.call("REPLICATE", params, target=node.label)


def peer_of(cmd: Plugin, label: str) -> str | None:
    """The node id LOOKUP gives for a label, None while the mesh does not know it yet."""
    try:
        return str(cmd.call("LOOKUP", {"name": label})["peer"])
    except CommandError as error:
        if error.code == "not_found":
            return None
        raise


def writable(db: Database) -> bool:
    """Whether the application's handle may write (tables() refreshes what another process changed)."""
    db.tables()
    return not db.replication.read_only


def replicas(cmd: Plugin, node: Node, db: Database) -> list[dict[str, Any]]:
    """The STATUS entries of the replicas held in `db` on `node`, fetched through the mesh."""
    databases = cmd.call("STATUS", target=node.label)["databases"]
    return list(databases.get(os.path.realpath(db.path), {}).get("replicas", []))


def test_one_way_replica_handle_opened_before_replicate(
    deployment: Deployment, manager: Manager, tmp_path: Path
) -> None:
    source = open_db(manager, tmp_path, "source")
    target = open_db(manager, tmp_path, "target")  # the application's handle on the replica, opened first
    table = source.table("people")
    table.ensure("by_email", "{email}")
    kept = table.append_many([person(number) for number in range(50)])
    a = deployment.node("a", [source.path])
    b = deployment.node("b", connect=[a])
    cmd = deployment.plugin(a)
    peer = wait_until(lambda: peer_of(cmd, "b"), timeout=10)
    assert peer == b.id
    assert replicate(cmd, b, target, source)["mode"] == "one-way"
    late = target.table("late")  # a table the source has not even created yet: it reads as empty
    assert (late.records(), late.get("0" * 24), list(late.find()), late.first()) == (0, None, [], None)
    wait_until(lambda: target.table("people").records() == 50, timeout=15)
    # Changes after the replica joined: updates, deletes, a new index, new tables.
    for doc in kept[:10]:
        doc["age"] = 99
        table.save(doc)
    table.delete([doc.key for doc in kept[10:20]])
    table.ensure("by_age", "{age}", duplicates=True)
    source.table("late").append_many([{"n": number} for number in range(5)])
    wait_until(lambda: identical(cmd, source, target), timeout=15)
    assert people(target) == people(source)
    assert len(people(target)) == 40
    assert sorted(target.table("people").indexes()) == ["by_age", "by_email"]
    assert [doc["n"] for doc in late.find()] == list(range(5))  # the same handle, filled as data arrived
    assert len(list(target.table("people").seek("by_age", {"age": 99}))) == 10
    with pytest.raises(ReadOnlyDatabase):
        target.table("people").append({"name": "intruder"})
    with pytest.raises(ReadOnlyDatabase):
        target.table("people").delete(kept[0])
    with pytest.raises(ReadOnlyDatabase):
        target.table("brand_new").append({"name": "intruder"})
    assert people(target) == people(source)


def test_two_way_concurrent_conflicting_writes_converge(
    deployment: Deployment, manager: Manager, tmp_path: Path
) -> None:
    left, right = open_db(manager, tmp_path, "left"), open_db(manager, tmp_path, "right")
    keys = [str(doc.key) for doc in left.table("people").append_many([person(number) for number in range(60)])]
    a = deployment.node("a", [left.path])
    b = deployment.node("b", [right.path], connect=[a])
    cmd = deployment.plugin(a)
    wait_until(lambda: peer_of(cmd, "b") == b.id, timeout=10)
    assert replicate(cmd, b, right, left)["mode"] == "one-way"
    wait_until(lambda: identical(cmd, left, right), timeout=15)

    def a_knows_right_replicates_left() -> bool:
        info = cmd.call("LOOKUP", {"name": "b"}).get("services", {}).get("replication", {})
        return left.replication.uuid in info.get("replicas", {}).get(right.replication.uuid, {}).get("sources", {})

    wait_until(a_knows_right_replicates_left, timeout=10)
    # The same in reverse makes the pair: 'auto' sees that right already replicates left.
    assert replicate(cmd, a, left, right)["mode"] == "two-way"
    wait_until(lambda: [entry["mode"] for entry in replicas(cmd, b, right)] == ["two-way"], timeout=10)
    wait_until(lambda: writable(right), timeout=10)  # the application's handle learns it is writable again

    def conflict(db: Database, tag: str) -> None:
        table = db.table("people")
        for round_number in range(4):
            for number, key in enumerate(keys):
                with db.write_transaction() as txn:
                    doc = table.get(key, txn=txn)
                    if doc is None:
                        continue
                    if (number + round_number) % 17 == (0 if tag == "left" else 8):
                        table.delete(key, txn=txn)
                    else:
                        doc["writer"] = tag
                        doc["round"] = round_number
                        table.save(doc, txn=txn)
            db.table("people").append({"name": f"new from {tag} {round_number}"})

    failures: list[BaseException] = []

    def run(db: Database, tag: str) -> None:
        try:
            conflict(db, tag)
        except DocumentDoesNotExist:
            pass
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=(db, tag)) for db, tag in [(left, "left"), (right, "right")]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    wait_until(lambda: identical(cmd, left, right), timeout=20)
    final = people(left)
    assert final == people(right)
    assert len([doc for doc in final.values() if doc.get("name", "").startswith("new from")]) == 8
    assert {doc.get("writer") for key, doc in final.items() if key in keys} <= {"left", "right", None}


def test_many_to_one_aggregates_three_sources(deployment: Deployment, manager: Manager, tmp_path: Path) -> None:
    sources = [open_db(manager, tmp_path, f"source{number}") for number in range(3)]
    target = open_db(manager, tmp_path, "target")
    for number, db in enumerate(sources):
        db.table("people").append_many([dict(person(i), source=number) for i in range(20)])
    a = deployment.node("a", [sources[0].path])
    b = deployment.node("b", [sources[1].path], connect=[a])
    c = deployment.node("c", [sources[2].path], connect=[b])
    d = deployment.node("d", connect=[c])
    cmd = deployment.plugin(d)
    wait_until(lambda: all(peer_of(cmd, n.label) == n.id for n in (a, b, c)), timeout=10)
    aggregate = target.table("people")  # before any REPLICATE: its handle fills as the sources arrive
    for db in sources:
        replicate(cmd, d, target, db)
    for db in sources:
        db.table("people").append({"name": "late", "source": db.path})

    def union() -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for db in sources:
            merged.update(people(db))
        return merged

    wait_until(lambda: people(target) == union(), timeout=20)
    assert aggregate.records() == 63
    assert {entry["mode"] for entry in replicas(cmd, d, target)} == {"aggregate"}
    sources[1].table("people").empty()
    wait_until(lambda: people(target) == union(), timeout=15)
    assert aggregate.records() == 42
    assert set(people(target)) == set(people(sources[0])) | set(people(sources[2]))
    with pytest.raises(ReadOnlyDatabase):
        aggregate.append({"name": "intruder"})


def test_multi_hop_three_hops(deployment: Deployment, manager: Manager, tmp_path: Path) -> None:
    source, target = open_db(manager, tmp_path, "source"), open_db(manager, tmp_path, "target")
    source.table("people").append_many([person(number) for number in range(30)])
    first = deployment.node("n1", [source.path])
    second = deployment.node("n2", connect=[first])
    third = deployment.node("n3", connect=[second])
    last = deployment.node("n4", connect=[third])
    cmd = deployment.plugin(first)
    wait_until(lambda: peer_of(cmd, "n4") == last.id, timeout=10)
    links = cmd.call("STATUS")["links"]
    assert last.id not in {link["peer"] for link in links}
    replicate(cmd, last, target, source)
    source.table("people").append_many([person(number) for number in range(30, 60)])
    wait_until(lambda: identical(cmd, source, target), timeout=20)
    assert target.table("people").records() == 60


def test_a_replica_of_a_replica_resyncs_when_the_middle_one_takes_a_snapshot(
    deployment: Deployment, manager: Manager, tmp_path: Path, writers: list[Writer]
) -> None:
    """source -> middle (one-way, journaled) -> last, under writes. A snapshot of the source replaces middle's
    content without an op per record: middle's journal starts again, so last takes a snapshot of middle (and a
    change feed the application holds on middle says JournalTrimmed); nothing is lost, both copies converge."""
    source, middle, last = (open_db(manager, tmp_path, name) for name in ("source", "middle", "last"))
    source.table("events").ensure("by_serial", "{serial}")
    a = deployment.node("a", [source.path])
    b = deployment.node("b", [middle.path], connect=[a])
    c = deployment.node("c", [last.path], connect=[b])
    cmd = deployment.plugin(a)
    wait_until(lambda: peer_of(cmd, "c") == c.id, timeout=10)
    replicate(cmd, b, middle, source)
    replicate(cmd, c, last, middle)
    writer = start_writer(writers, source, pause=0.002)
    wait_until(lambda: last.table("events").records() > 50, timeout=15)
    assert replicas(cmd, c, last)[0]["full_resyncs"] == 0  # so far by entries, relayed through middle
    position = middle.replication.sequence
    assert cmd.call("RESYNC", {"path": middle.path, "uuid": source.replication.uuid}, target="b") == {"resyncing": 1}
    wait_until(lambda: replicas(cmd, b, middle)[0]["full_resyncs"] == 1, timeout=15)
    wait_until(lambda: replicas(cmd, c, last)[0]["full_resyncs"] == 1, timeout=15)
    with pytest.raises(JournalTrimmed):
        list(middle.changes(since=position, timeout=0))
    written = writer.finish()
    wait_until(lambda: identical(cmd, source, middle) and identical(cmd, source, last), timeout=20)
    events = last.table("events")
    assert events.records() == written
    assert [doc["serial"] for doc in events.find("by_serial")] == list(range(written))
    assert replicas(cmd, b, middle)[0]["full_resyncs"] == replicas(cmd, c, last)[0]["full_resyncs"] == 1


@pytest.mark.parametrize("victim", ["replica", "source"])
def test_node_killed_and_restarted_mid_stream_then_lookup_and_replicate_again_at_once(
    deployment: Deployment, manager: Manager, tmp_path: Path, writers: list[Writer], victim: str
) -> None:
    source, target = open_db(manager, tmp_path, "source"), open_db(manager, tmp_path, "target")
    source.table("events").ensure("by_serial", "{serial}")
    a = deployment.node("a", [source.path])
    b = deployment.node("b", [target.path], connect=[a])
    killed, survivor = (b, a) if victim == "replica" else (a, b)
    cmd = deployment.plugin(survivor)
    wait_until(lambda: peer_of(cmd, killed.label) == killed.id, timeout=10)
    replicate(cmd, b, target, source)
    events = target.table("events")
    writer = start_writer(writers, source, pause=0.001)
    wait_until(lambda: events.records() > 100, timeout=15)
    old_id = killed.id
    deployment.kill(killed)
    killed_at = writer.written
    wait_until(lambda: writer.passed(killed_at + 100), timeout=10)  # the application writes on meanwhile
    killed.connect = [survivor.address]  # (a was connected to by b: restarted, it links to b itself)
    deployment.restart(killed)
    assert killed.id != old_id
    # At once: LOOKUP names the new node, and REPLICATE (already recorded in the database) is accepted again.
    assert cmd.call("LOOKUP", {"name": killed.label})["peer"] == killed.id
    assert replicate(cmd, b, target, source)["mode"] == "one-way"
    written = writer.finish()
    wait_until(lambda: identical(cmd, source, target), timeout=20)
    assert events.records() == written
    assert [doc["serial"] for doc in events.find("by_serial")] == list(range(written))
    status = replicas(cmd, b, target)[0]
    assert status["full_resyncs"] == 0
    assert status["hwm"] == source.replication.sequence


def test_a_command_to_a_node_that_is_gone_fails_fast(deployment: Deployment, tmp_path: Path) -> None:
    a = deployment.node("a")
    b = deployment.node("b", connect=[a])
    cmd = deployment.plugin(a)
    wait_until(lambda: peer_of(cmd, "b") == b.id, timeout=10)
    gone = b.id
    deployment.kill(b)

    def refused() -> bool:
        try:
            cmd.call("PING", target=gone, timeout=5)
        except CommandError as error:
            return error.code in ("node_gone", "unknown_target")
        return False

    # Within a few heartbeats the node is known to be gone: the command fails at once, never by a timeout.
    wait_until(refused, timeout=5)
    with pytest.raises(CommandError) as failure:
        cmd.call("PING", target=gone, timeout=5)
    assert failure.value.code == "node_gone"
    assert "gone" in str(failure.value)


# --- filtered replication (issue 12) ---------------------------------------------------------------------------------
def identical_tables(cmd: Plugin, a: Database, b: Database, tables: list[str]) -> bool:
    """diff(tables=...) == {} through the mesh; False while a holder is unknown or unreachable."""
    try:
        return cmd.diff([a.replication.uuid, b.replication.uuid], timeout=5, tables=tables) == {}
    except PyNNDBError:
        return False


def write_tables(db: Database, names: tuple[str, ...], count: int, tag: str) -> None:
    for name in names:
        db.table(name).append_many([{"n": number, "tag": tag, "table": name} for number in range(count)])


def test_filtered_one_way_replica_through_writes_restart_and_snapshot(
    deployment: Deployment, manager: Manager, tmp_path: Path
) -> None:
    source = open_db(manager, tmp_path, "source", journal={"max_entries": 50})
    target = open_db(manager, tmp_path, "target")
    write_tables(source, ("a", "b", "c"), 30, "before")
    source.table("a").ensure("by_n", "{n:04}{tag}")
    a = deployment.node("a", [source.path])
    b = deployment.node("b", [target.path], connect=[a])
    cmd = deployment.plugin(a)
    wait_until(lambda: peer_of(cmd, "b") == b.id, timeout=10)
    params = {"path": target.path, "uuid": source.replication.uuid}
    for bad in ([], "a", ["a", 3], [""], ["__reserved"]):
        with pytest.raises(CommandError) as refused:
            cmd.call("REPLICATE", {**params, "tables": bad}, target="b")
        assert refused.value.code == "bad_params"
    assert cmd.call("REPLICATE", {**params, "tables": ["b", "a"]}, target="b")["tables"] == ["a", "b"]
    assert cmd.replicate(target.path, source.replication.uuid, tables=["a", "b"], target="b")["tables"] == ["a", "b"]
    with pytest.raises(CommandError) as conflict:
        cmd.call("REPLICATE", {**params, "tables": ["a"]}, target="b")
    assert conflict.value.code == "filter_conflict" and "UNREPLICATE" in str(conflict.value)
    with pytest.raises(CommandError) as conflict:
        cmd.call("REPLICATE", params, target="b")  # no filter is another filter too
    assert conflict.value.code == "filter_conflict"

    def holds_exactly_a_and_b() -> bool:
        return sorted(target.tables()) == ["a", "b"] and identical_tables(cmd, source, target, ["a", "b"])

    wait_until(holds_exactly_a_and_b, timeout=15)
    write_tables(source, ("a", "b", "c", "d"), 10, "live")
    source.table("b").delete(next(iter(source.table("b").find())).key)
    source.table("c").empty()
    wait_until(holds_exactly_a_and_b, timeout=15)
    assert not identical(cmd, source, target)  # c and d are not replicated
    status = replicas(cmd, b, target)[0]
    assert status["tables"] == ["a", "b"] and status["hwm"] == source.replication.sequence

    def verified() -> bool:  # the divergence check compares only the chosen tables
        return cmd.verify_replicas(path=target.path, timeout=5, target="b")[0]["verification"] == "match"

    wait_until(verified, timeout=20)

    deployment.kill(b)
    for round_number in range(40):  # far past the journal's 50 entries: the restarted replica needs a snapshot
        write_tables(source, ("a", "b", "c"), 2, f"down {round_number}")
    source.drop("b")
    write_tables(source, ("b",), 5, "re-created")
    deployment.restart(b)
    wait_until(lambda: peer_of(cmd, "b") == b.id, timeout=10)
    wait_until(holds_exactly_a_and_b, timeout=20)
    wait_until(lambda: replicas(cmd, b, target)[0]["hwm"] == source.replication.sequence, timeout=10)
    status = replicas(cmd, b, target)[0]
    assert status["tables"] == ["a", "b"] and status["full_resyncs"] >= 1  # the filter came back from the database
    assert target.table("b").records() == 5 and target.table("a").indexes() == ["by_n"]
    with pytest.raises(CommandError) as conflict:
        cmd.call("REPLICATE", {**params, "tables": ["c"]}, target="b")
    assert conflict.value.code == "filter_conflict"
    # UNREPLICATE, then REPLICATE with a filter that adds c: a snapshot brings c's earlier content too.
    cmd.unreplicate(target.path, source.replication.uuid, target="b")
    assert cmd.replicate(target.path, source.replication.uuid, tables=["a", "b", "c"], target="b")["tables"] == [
        "a",
        "b",
        "c",
    ]
    wait_until(lambda: "c" in target.tables() and identical_tables(cmd, source, target, ["a", "b", "c"]), timeout=20)
    assert sorted(target.tables()) == ["a", "b", "c"]


def test_filtered_two_way_pair_through_writes_restart_and_snapshot(
    deployment: Deployment, manager: Manager, tmp_path: Path
) -> None:
    journal = {"max_entries": 50}
    left = open_db(manager, tmp_path, "left", journal=journal)
    right = open_db(manager, tmp_path, "right", journal=journal)
    write_tables(left, ("shared", "left_only"), 20, "left")
    write_tables(right, ("right_only",), 20, "right")
    a = deployment.node("a", [left.path])
    b = deployment.node("b", [right.path], connect=[a])
    cmd = deployment.plugin(a)
    wait_until(lambda: peer_of(cmd, "b") == b.id, timeout=10)
    chosen = ["shared"]
    first = {"path": right.path, "uuid": left.replication.uuid, "tables": chosen}
    assert cmd.call("REPLICATE", first, target="b")["mode"] == "one-way"

    def a_knows_right_replicates_left() -> bool:
        info = cmd.call("LOOKUP", {"name": "b"}).get("services", {}).get("replication", {})
        return left.replication.uuid in info.get("replicas", {}).get(right.replication.uuid, {}).get("sources", {})

    wait_until(a_knows_right_replicates_left, timeout=10)
    second = {"path": left.path, "uuid": right.replication.uuid, "tables": chosen}
    assert cmd.call("REPLICATE", second, target="a")["mode"] == "two-way"  # auto: the other side becomes two-way too
    wait_until(lambda: [entry["mode"] for entry in replicas(cmd, b, right)] == ["two-way"], timeout=10)
    wait_until(lambda: writable(right), timeout=10)
    assert [entry["tables"] for entry in replicas(cmd, a, left) + replicas(cmd, b, right)] == [chosen, chosen]

    write_tables(left, ("shared", "left_only"), 10, "left live")
    write_tables(right, ("shared", "right_only"), 10, "right live")
    wait_until(lambda: identical_tables(cmd, left, right, chosen), timeout=15)
    assert left.table("shared").records() == 40
    assert "right_only" not in left.tables() and "left_only" not in right.tables()

    deployment.kill(b)
    for round_number in range(40):  # past the journal's retention: right's replica of left needs a snapshot
        write_tables(left, ("shared", "left_only"), 1, f"left down {round_number}")
    write_tables(right, ("shared", "right_only"), 3, "right down")  # the application writes on while its node is down
    deployment.restart(b)
    wait_until(lambda: peer_of(cmd, "b") == b.id, timeout=10)
    wait_until(lambda: identical_tables(cmd, left, right, chosen), timeout=20)
    assert left.table("shared").records() == 40 + 40 + 3
    assert "right_only" not in left.tables() and "left_only" not in right.tables()
    statuses = replicas(cmd, b, right)
    assert statuses[0]["tables"] == chosen and statuses[0]["full_resyncs"] >= 1
