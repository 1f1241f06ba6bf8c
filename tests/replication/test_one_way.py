"""One-way replication through LocalReplicator: data, indexes, schema ops, read-only replicas, diff."""

from __future__ import annotations

import threading

import pytest

from pynndb import Doc
from pynndb.errors import ReadOnlyDatabase, ReplicationNotEnabled
from pynndb.replication import LocalReplicator, diff
from tests.helpers import person, wait_until
from tests.replication.conftest import documents


@pytest.fixture
def pair(open_db):
    source = open_db("source")
    people = source.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.ensure("by_email", "{email}")
    people.append_many([person(number) for number in range(200)])
    for number in range(200, 220):
        people.append(person(number))
    target = open_db("target")
    return source, target, LocalReplicator(source, target)


def test_sync_copies_documents_and_indexes(pair) -> None:
    source, target, replicator = pair
    assert replicator.sync() == source.replication.sequence
    assert diff(source, target) == {}
    assert documents(target, "people") == documents(source, "people")
    original, copy = source["people"], target["people"]
    assert copy.indexes() == ["by_email", "by_name"]
    for name in copy.indexes():
        assert copy.index(name).definition.to_json() == original.index(name).definition.to_json()
    template = Doc({"name": "Name 7"})
    assert [d.key for d in copy.seek("by_name", template)] == [d.key for d in original.seek("by_name", template)]
    assert len(list(copy.seek("by_name", template))) == 5
    assert copy.seek_one("by_email", Doc({"email": "user42@example.com"})).doc == person(42)
    low, high = Doc({"email": "user1"}), Doc({"email": "user2"})
    assert [d.key for d in copy.range("by_email", low, high)] == [d.key for d in original.range("by_email", low, high)]
    assert target.replication.marks() == {source.replication.uuid: source.replication.sequence}


def test_replica_refuses_application_writes(pair) -> None:
    source, target, replicator = pair
    replicator.sync()
    people = target["people"]
    doc = people.first()
    before = documents(target, "people")
    for write in (
        lambda: people.append(person(1)),
        lambda: people.save(doc),
        lambda: people.delete(doc),
        lambda: people.empty(),
        lambda: people.ensure("by_age", "{age}", duplicates=True),
        lambda: people.drop("by_name"),
        lambda: target.table("other").append(person(2)),  # a table that has not arrived: readable, not writable
        lambda: target.table("other").ensure("by_age", "{age}"),
        lambda: target.drop("people"),
        lambda: target.write_transaction(),
    ):
        with pytest.raises(ReadOnlyDatabase):
            write()
    assert documents(target, "people") == before
    assert target.tables() == ["people"]  # asking for "other" created nothing
    assert target.table("other").records() == 0
    assert target.replication.read_only is True
    assert source.replication.read_only is False


def test_updates_deletes_empty_and_drop_replicate(pair) -> None:
    source, target, replicator = pair
    replicator.sync()
    people = source["people"]
    docs = list(people.find(limit=10))
    for doc in docs[:5]:
        doc["name"] = "Changed"
        people.save(doc)
    for doc in docs[5:]:
        people.delete(doc)
    assert replicator.sync() == 10
    assert diff(source, target) == {}
    assert len(list(target["people"].seek("by_name", Doc({"name": "Changed"})))) == 5
    assert len(target["people"]) == 215
    source["people"].drop("by_email")
    source["people"].ensure("by_age", "{age}", duplicates=True)
    source.table("extra").append({"x": 1})
    replicator.sync()
    assert diff(source, target) == {}
    assert target["people"].indexes() == ["by_age", "by_name"]
    source["people"].empty()
    replicator.sync()
    assert diff(source, target) == {}
    assert len(target["people"]) == 0
    source.drop("people")
    replicator.sync()
    assert diff(source, target) == {}
    assert target.tables() == ["extra"]


def test_diff_reports_the_difference_before_sync(pair) -> None:
    source, target, replicator = pair
    replicator.sync()
    doc = source["people"].first()
    doc["name"] = "Somebody Else"
    source["people"].save(doc)
    report = diff(source, target)
    assert report != {}
    assert "Somebody Else" in str(report) and doc.key in str(report)
    replicator.sync()
    assert diff(source, target) == {}
    source["people"].ensure("by_age", "{age}", duplicates=True)
    assert "by_age" in str(diff(source, target))


def test_diff_ignores_replication_bookkeeping(open_db) -> None:
    plain = open_db("plain", replication=None)
    journaled = open_db("journaled")
    for db in (plain, journaled):
        db.table("people").ensure("by_name", "{name}", duplicates=True)
    doc = person(1)
    key = journaled["people"].append(doc).key
    plain["people"].append(Doc(doc, key))
    assert diff(plain, journaled) == {}


def test_sync_is_idempotent(pair) -> None:
    source, target, replicator = pair
    replicator.sync()
    sequence = target.replication.sequence
    assert replicator.sync() == 0
    assert replicator.sync() == 0
    assert target.replication.sequence == sequence
    assert replicator.status()[0]["state"] == "live"
    assert replicator.status()[0]["lag_entries"] == 0


def test_new_replicator_on_a_synced_target_resumes_from_its_mark(pair) -> None:
    source, target, replicator = pair
    replicator.sync()
    source["people"].append(person(999))
    again = LocalReplicator(source, target)
    assert again.sync() == 1
    assert diff(source, target) == {}
    assert again.replicas[0].counters["full_resyncs"] == 0


def test_background_replication_follows_the_source(pair) -> None:
    source, target, replicator = pair
    with replicator.start():
        for number in range(1000, 1050):
            source["people"].append(person(number))
        wait_until(lambda: target.replication.marks().get(source.replication.uuid) == source.replication.sequence)
    assert replicator.error is None
    assert diff(source, target) == {}


def test_replica_of_a_database_without_replication_is_refused(open_db) -> None:
    plain = open_db("plain", replication=None)
    with pytest.raises(ReplicationNotEnabled):
        LocalReplicator(plain, open_db("target"))


def test_a_table_the_replica_is_still_creating_reads_as_empty_until_its_transaction_commits(pair) -> None:
    """Regression: a handle given out while the applier's transaction that creates the table was still open used
    that transaction's table handle in its own read transaction (lmdb: mdb_stat: Invalid argument)."""
    source, target, replicator = pair
    replicator.sync()
    source.table("late").append({"n": 1})
    applying = target._begin(True, applying=True)  # the applier's transaction, as a node holds it
    target._create_table(applying, "late")
    seen: dict[str, object] = {}

    def application() -> None:  # another thread of the same process, like an in-process node's application
        late = target.table("late")
        seen["handle"] = late
        seen["reads"] = (late.records(), late.get("0" * 24), list(late.find()), late.first(), late.last())

    thread = threading.Thread(target=application)
    thread.start()
    thread.join(10)
    assert seen["reads"] == (0, None, [], None, None)
    applying.abort()
    replicator.sync()
    late = seen["handle"]
    assert [doc["n"] for doc in late.find()] == [1]  # the same handle, filled once the table arrived
    assert late.records() == 1
