"""The change journal: identity, one entry per committed write transaction, schema ops, persistence, retention."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pynndb import Manager
from pynndb.core.entries import decode_body
from pynndb.errors import DuplicateKey
from tests.helpers import person
from tests.replication.conftest import ops_of

SUBPROCESS_TIMEOUT = 30


def test_uuid_is_stable_across_reopen_and_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    with Manager() as manager:
        first = manager.database("db", path, config={"replication": True}).replication.uuid
    with Manager() as manager:
        assert manager.database("db", path).replication.uuid == first
    script = "import sys; from pynndb import Manager; print(Manager().database('db', sys.argv[1]).replication.uuid)"
    done = subprocess.run(
        [sys.executable, "-c", script, path], capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=True
    )
    assert done.stdout.strip() == first
    assert len(first) == 36 and first.count("-") == 4


def test_two_databases_have_different_uuids(open_db) -> None:
    assert open_db("a").replication.uuid != open_db("b").replication.uuid


def test_one_entry_per_committed_write_transaction_with_gapless_sequence(open_db) -> None:
    db = open_db("db")
    people = db.table("people")
    start = db.replication.sequence
    for number in range(5):
        people.append(person(number))
    with db.write_transaction() as txn:
        for number in range(5, 15):
            people.append(person(number), txn=txn)
    people.append_many([person(number) for number in range(15, 20)])
    assert db.replication.sequence == start + 7
    entries = db.replication.entries(1, 1000)
    assert [seq for seq, _clock, _body in entries] == list(range(1, start + 8))
    clocks = [clock for _seq, clock, _body in entries]
    assert clocks == sorted(set(clocks)), "the clock must grow strictly with the sequence"
    puts_per_entry = [sum(op[0] == "put" for op in ops) for ops in ops_of(db, start + 1)]
    assert puts_per_entry == [1, 1, 1, 1, 1, 10, 5]


def test_aborted_transaction_writes_no_entry(open_db) -> None:
    db = open_db("db")
    people = db.table("people")
    people.ensure("by_email", "{email}")
    people.append(person(1))
    before = db.replication.sequence
    with pytest.raises(RuntimeError), db.write_transaction() as txn:
        people.append(person(2), txn=txn)
        raise RuntimeError("abort")
    with pytest.raises(DuplicateKey):
        people.append(person(1))  # same email: the implicit transaction is aborted
    assert db.replication.sequence == before
    assert db.replication.entries(before + 1) == []
    assert len(people) == 1


def test_read_transactions_write_no_entry(open_db) -> None:
    db = open_db("db")
    people = db.table("people")
    people.append(person(1))
    before = db.replication.sequence
    list(people.find())
    with db.read_transaction() as txn:
        people.records(txn=txn)
    assert db.replication.sequence == before


def test_schema_ops_are_journaled(open_db) -> None:
    db = open_db("db")
    people = db.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    doc = people.append(person(1))
    doc["age"] = 99
    people.save(doc)
    people.delete(doc)
    people.drop("by_name")
    people.empty()
    db.drop("people")
    kinds = [[op[0] for op in ops] for ops in ops_of(db)]
    assert kinds == [["create"], ["ensure"], ["put"], ["put"], ["delete"], ["drop_index"], ["empty"], ["drop"]]
    ensure = ops_of(db)[1][0]
    assert ensure[1:3] == ["people", "by_name"]
    assert ensure[3]["func"] == "{name}" and ensure[3]["duplicates"] is True
    assert ops_of(db)[3][0][3]["age"] == 99


def test_entries_carry_origin_and_version(open_db) -> None:
    db = open_db("db")
    db.table("people").append(person(1))
    for seq, clock, body in db.replication.entries(1):
        entry = decode_body(body)
        assert entry.origin == db.replication.uuid
        assert entry.version == clock, f"entry {seq}: a local change's version is its clock"


def test_database_without_replication_has_no_journal(open_db) -> None:
    db = open_db("plain", replication=None)
    assert db.replication.enabled is False
    people = db.table("people")
    people.ensure("by_name", "{name}")
    people.append(person(1))
    assert db.replication.sequence == 0
    assert db.replication.entries(1) == []
    assert db.replication.retained[1] == 0


def test_replication_setting_is_persisted(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    with Manager() as manager:
        manager.database("db", path, config={"replication": True}).table("people").append(person(1))
    with Manager() as manager:
        db = manager.database("db", path)
        assert db.replication.enabled is True
        before = db.replication.sequence
        assert before == 2
        db["people"].append(person(2))
        assert db.replication.sequence == before + 1


def test_replication_can_be_enabled_later(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    with Manager() as manager:
        manager.database("db", path).table("people").append(person(1))
    with Manager() as manager:
        db = manager.database("db", path, config={"replication": True})
        db.table("other").append(person(2))
        assert [ops[0][0] for ops in ops_of(db)] == ["create", "put"]
    with Manager() as manager:
        assert manager.database("db", path).replication.enabled is True


def test_retention_trims_old_entries_and_retained_moves(open_db) -> None:
    db = open_db("db", max_entries=10)
    people = db.table("people")
    assert db.replication.retained == (1, 1)
    for number in range(700):
        people.append(person(number))
    first, last = db.replication.retained
    assert last == db.replication.sequence == 701
    assert 1 < first <= last - 9, "old entries must go, the newest max_entries must stay"
    seqs = [seq for seq, _clock, _body in db.replication.entries(1, 10_000)]
    assert seqs == list(range(first, last + 1))


def test_retention_always_keeps_the_last_entry(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    with Manager() as manager:
        db = manager.database("db", path, config={"replication": True, "journal": {"max_entries": 1}})
        people = db.table("people")
        for number in range(511):
            people.append(person(number))  # the 512th entry triggers a trim
        first, last = db.replication.retained
        assert last == 512
        assert first == last, "everything but the last entry goes"
        assert [seq for seq, _c, _b in db.replication.entries(1)] == [512]
    with Manager() as manager:
        db = manager.database("db", path, config={"journal": {"max_entries": 1}})
        assert db.replication.sequence == 512
        db.table("other").append(person(999))
        assert db.replication.sequence == 514  # create, then put
