"""The data commands (tables, indexes, get, find, insert, export) through the CLI runner, bad input included, and a
read-only look at a replica while a `pynndb node` process serves it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pynndb import Database, Manager
from pynndb.cli.main import main
from pynndb.mesh.plugin import Plugin
from pynndb.replication import diff
from tests.helpers import person, wait_until
from tests.integration.deployment import Child, NodeProcess, free_ports

pytestmark = pytest.mark.timeout(60)


def run(*args: str, stdin: str | None = None) -> click.testing.Result:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def lines(result: click.testing.Result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def people_db(manager: Manager, tmp_path: Path) -> Database:
    db = manager.database("people", str(tmp_path / "people"), config={"replication": True})
    people = db.table("people")
    people.ensure("by_email", "{email}")
    people.ensure("by_age", "{age}", duplicates=True)
    people.append_many([person(number) for number in range(30)])
    db.table("empty")
    return db


def test_tables_and_indexes(people_db: Database) -> None:
    result = run("tables", people_db.path)
    assert result.exit_code == 0, result.output
    assert lines(result) == [
        {"table": "empty", "records": 0, "indexes": []},
        {"table": "people", "records": 30, "indexes": ["by_age", "by_email"]},
    ]
    result = run("indexes", people_db.path, "people", "--json")
    assert lines(result) == [
        {"index": "by_age", "format": "{age}", "function": None, "duplicates": True},
        {"index": "by_email", "format": "{email}", "function": None, "duplicates": False},
    ]


def test_get_and_find(people_db: Database) -> None:
    first = people_db["people"].first()
    assert first is not None
    result = run("get", people_db.path, "people", first.key)
    assert result.exit_code == 0, result.output
    assert lines(result) == [{"_id": first.key, **first}]
    everything = lines(run("find", people_db.path, "people"))
    assert [row["_id"] for row in everything] == [doc.key for doc in people_db["people"].find()]
    aged = lines(run("find", people_db.path, "people", "--index", "by_age", "--lower", '{"age": 25}', "--limit", "3"))
    assert len(aged) == 3 and all(row["age"] >= 25 for row in aged)
    bounded = lines(
        run("find", people_db.path, "people", "--index", "by_age", "--lower", '{"age": 21}', "--upper", '{"age": 22}')
    )
    assert {row["age"] for row in bounded} == {21, 22}
    assert len(bounded) == sum(1 for doc in people_db["people"].find() if doc["age"] in (21, 22))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tables", "{missing}"), "no database at"),
        (("find", "{db}", "nope"), "no table 'nope'"),
        (("indexes", "{db}", "nope"), "no table 'nope'"),
        (("get", "{db}", "people", "000000000000000000000000"), "no record"),
        (("find", "{db}", "people", "--index", "by_nothing"), "no index 'by_nothing'"),
        (("find", "{db}", "people", "--index", "by_age", "--lower", "{age"), "not JSON"),
        (("export", "{db}", "nope"), "no table 'nope'"),
        (("insert", "{db}", "people", "{missing}"), "no file"),
    ],
)
def test_bad_input_fails_clearly(people_db: Database, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    names = {"{db}": people_db.path, "{missing}": str(tmp_path / "missing")}
    filled = [names.get(arg, arg) for arg in args]
    result = run(*filled)
    assert result.exit_code != 0
    assert message in result.output.replace("\n", " ")
    assert not (tmp_path / "missing").exists()


def test_export_then_insert_round_trips(people_db: Database, manager: Manager, tmp_path: Path) -> None:
    exported = run("export", people_db.path, "people")
    assert exported.exit_code == 0
    assert len(exported.stdout.splitlines()) == 30
    dump = tmp_path / "people.ndjson"
    dump.write_text(exported.stdout)
    copy_path = str(tmp_path / "copy")
    inserted = run("insert", copy_path, "people", str(dump), "--batch", "7")
    assert inserted.exit_code == 0, inserted.output
    assert "inserted 30 records" in inserted.output
    copy = manager.database("copy", copy_path)
    people = copy["people"]
    people.ensure("by_email", "{email}")
    people.ensure("by_age", "{age}", duplicates=True)
    copy.table("empty")
    assert diff(people_db, copy) == {}


def test_insert_json_array_and_stdin(manager: Manager, tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"n": 1}, {"n": 2}]))
    assert run("insert", path, "things", str(array)).exit_code == 0
    assert run("insert", path, "things", "-", stdin='{"n": 3}\n\n{"n": 4}\n').exit_code == 0
    assert sorted(row["n"] for row in lines(run("export", path, "things"))) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"n": 1}\n{"n": 2\n{"n": 3}\n', "line 2: not JSON"),
        ('{"n": 1}\n[1, 2]\n', "line 2: a record must be a JSON object"),
        ('{"n": 1}\n{"_id": "not a key!", "n": 2}\n', "line 2"),
        ('[{"n": 1}, 7]', "item 2"),
        ("[{", "does not parse"),
    ],
)
def test_a_bad_line_rejects_its_batch_and_changes_nothing(
    people_db: Database, tmp_path: Path, text: str, where: str
) -> None:
    before = people_db["people"].records()
    source = tmp_path / "bad.ndjson"
    source.write_text(text)
    result = run("insert", people_db.path, "people", str(source))
    assert result.exit_code == 1
    assert where in result.output.replace("\n", " ")
    assert people_db["people"].records() == before


def test_a_duplicate_key_rejects_its_batch(people_db: Database, tmp_path: Path) -> None:
    taken = person(3)  # by_email is unique
    result = run("insert", people_db.path, "people", "-", stdin=json.dumps({"name": "new"}) + "\n" + json.dumps(taken))
    assert result.exit_code == 1
    assert "rejected" in result.output and "line 1" in result.output
    assert people_db["people"].records() == 30


def test_reads_are_read_only_beside_a_live_node_process(manager: Manager, tmp_path: Path) -> None:
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    source.table("events").append_many([{"n": n} for n in range(20)])
    replica_path = str(tmp_path / "replica")
    manager.database("replica", replica_path)
    manager.close("replica")
    node = NodeProcess(tmp_path / "node.log", "n1", free_ports(), [source.path, replica_path], [])
    plugin = Plugin(f"tcp://127.0.0.1:{node.ports[2]}").connect()
    try:
        plugin.call("REPLICATE", {"path": replica_path, "uuid": source.replication.uuid, "mode": "one-way"})

        def replicated() -> bool:
            result = run("tables", replica_path)
            return result.exit_code == 0 and lines(result) == [{"table": "events", "records": 20, "indexes": []}]

        wait_until(replicated, timeout=20)
        source["events"].append({"n": 20})  # the node applies while we read
        wait_until(lambda: len(lines(run("find", replica_path, "events"))) == 21, timeout=20)
        # A separate reader process, the way an operator runs it.
        reader = Child([sys.executable, "-m", "pynndb", "export", replica_path, "events"], tmp_path / "reader.log")
        assert reader.process.wait(30) == 0
        assert len(reader.process.stdout.read().splitlines()) == 21  # type: ignore[union-attr]
        reader.stop()
        assert plugin.call("STATUS")["databases"][os.path.realpath(replica_path)]["replicas"][0]["state"] in (
            "live",
            "syncing",
        )
    finally:
        plugin.close()
        node.stop()
