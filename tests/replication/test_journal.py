"""The change journal: identity, one entry per committed write transaction, schema ops, persistence, retention."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pynndb import Manager
from pynndb.core.entries import decode_body, single_put
from pynndb.errors import DuplicateKey
from pynndb.replication import Publisher, Replica, diff
from tests.helpers import person
from tests.replication.conftest import ops_of, serve

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


def test_an_append_writes_the_entry_a_transaction_writes(open_db) -> None:
    """An append of its own (a bare LMDB transaction, the entry made straight from the document's bytes) journals
    the same bytes as the same append inside a `Transaction`, but for the key and the clock."""
    db = open_db("db")
    people = db.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    alone = people.append(person(1))
    with db.write_transaction() as txn:
        inside = people.append(person(1), txn=txn)
    (_s1, clock_alone, body_alone), (_s2, clock_inside, body_inside) = db.replication.entries(
        db.replication.sequence - 1
    )
    assert clock_alone < clock_inside
    assert body_alone.count(alone.key.encode()) == 1 and body_alone.count(b'"v":%d' % clock_alone) == 1
    expected = body_inside.replace(inside.key.encode(), alone.key.encode()).replace(
        b'"v":%d' % clock_inside, b'"v":%d' % clock_alone
    )
    assert body_alone == expected


def test_appends_between_other_writes_keep_the_journal_gapless(open_db) -> None:
    """Appends of their own remember their entry's sequence while nothing else writes; any other write in between
    (a save, a delete, a transaction, a schema change) makes the next one read the journal's end again. A replica
    fed the journal ends up identical."""
    db = open_db("db")
    people = db.table("people")
    start = db.replication.sequence
    written = []
    for round_number in range(4):
        written += [people.append(person(round_number * 10 + number)) for number in range(3)]
        changed = written[-1]
        changed["age"] = 99
        people.save(changed)
        written.append(people.append(person(round_number * 10 + 5)))
        people.delete(written.pop(0))
        with db.write_transaction() as txn:
            written.append(people.append(person(round_number * 10 + 6), txn=txn))
        people.ensure(f"by_age_{round_number}", "{age}", duplicates=True)
        written.append(people.append(person(round_number * 10 + 7)))
    entries = db.replication.entries(start + 1, 1000)
    assert [seq for seq, _clock, _body in entries] == list(range(start + 1, db.replication.sequence + 1))
    clocks = [clock for _seq, clock, _body in entries]
    assert clocks == sorted(set(clocks))
    assert len(entries) == 4 * 9
    target = open_db("target")
    replica = Replica(target, db.replication.uuid).register()
    serve(Publisher(db), replica, replica.start())
    assert replica.status()["state"] == "live"
    assert diff(db, target) == {}
    assert sorted(doc.key for doc in target["people"].find()) == sorted(doc.key for doc in written)
    # It applied the entries themselves (it journals those of one put as they came), not a snapshot.
    relayed = {body for _seq, _clock, body in target.replication.entries(1, 1000)}
    appended = [body for _seq, _clock, body in entries if single_put(body) is not None]
    assert len(appended) == 4 * 7 and all(body in relayed for body in appended)  # (saves are puts too)


def test_a_versioned_database_keeps_a_version_of_each_append(open_db) -> None:
    """A database in a two-way pair keeps a version per document: its appends take the path that records it."""
    db = open_db("db")
    people = db.table("people")
    db.replication.set_versioned(True)
    added = people.append(person(1))
    with db._env.begin() as txn:
        version = db.replication.version_of(txn, "people", added.oid)
    assert version is not None and not version.deleted
    assert version.clock == db.replication.entries(db.replication.sequence)[0][1]


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
