"""Two-way pairs: both sides write; conflicting updates and deletes converge (last writer wins); no echo."""

from __future__ import annotations

import pytest

from pynndb import Doc
from pynndb.core.entries import decode_body
from pynndb.core.journal_writes import now_clock
from pynndb.replication import LocalReplicator, diff
from tests.helpers import person, wait_until
from tests.replication.conftest import documents


@pytest.fixture
def pair(open_db):
    left = open_db("left")
    right = open_db("right")
    people = left.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.append_many([person(number) for number in range(30)])
    replicator = LocalReplicator(left, right, two_way=True)
    replicator.sync()
    assert diff(left, right) == {}
    return left, right, replicator


def winner(left, right, key: str):
    """The side whose version of `key` in 'people' is the greatest (clock, origin): the one that must win."""
    versions = []
    for db in (left, right):
        with db.read_transaction() as txn:
            version = db.replication.version_of(txn.txn, "people", key.encode())
        versions.append(((version.clock, version.origin), db))
    return max(versions, key=lambda item: item[0])[1]


def version_clock(db, key: str) -> int:
    with db.read_transaction() as txn:
        return db.replication.version_of(txn.txn, "people", key.encode()).clock


def test_both_sides_are_writable_and_see_each_other(pair) -> None:
    left, right, replicator = pair
    assert not left.replication.read_only and not right.replication.read_only
    left["people"].append({"name": "from left"})
    right["people"].append({"name": "from right"})
    assert replicator.sync() >= 2
    assert diff(left, right) == {}
    names = {doc["name"] for doc in right["people"].find()}
    assert {"from left", "from right"} <= names


def test_conflicting_updates_and_deletes_converge(pair) -> None:
    left, right, replicator = pair
    keys = [doc.key for doc in left["people"].find(limit=12)]
    for number, key in enumerate(keys[:6]):  # both update
        for side, db in (("left", left), ("right", right)):
            if (number % 2 == 0) == (side == "left"):
                continue
            doc = db["people"].get(key)
            doc["name"] = f"{side} wins?"
            db["people"].save(doc)
        for side, db in (("right", right), ("left", left)) if number % 2 == 0 else (("left", left), ("right", right)):
            doc = db["people"].get(key)
            doc["age"] = side
            db["people"].save(doc)
    for key in keys[6:9]:  # left deletes, right updates
        left["people"].delete(key)
        doc = right["people"].get(key)
        doc["name"] = "updated on the right"
        right["people"].save(doc)
    for key in keys[9:12]:  # right updates, then left deletes (a millisecond later at least: it must win)
        doc = right["people"].get(key)
        doc["name"] = "updated on the right"
        right["people"].save(doc)
    updated = max(version_clock(right, key) for key in keys[9:12])
    wait_until(lambda: now_clock() > updated)
    for key in keys[9:12]:
        left["people"].delete(key)
    before = {key: (left["people"].get(key), right["people"].get(key)) for key in keys}
    expected = {key: before[key][0 if winner(left, right, key) is left else 1] for key in keys}
    replicator.sync()
    assert diff(left, right) == {}
    for key in keys:
        assert left["people"].get(key) == expected[key], key
    for key in keys[9:12]:
        assert left["people"].get(key) is None and right["people"].get(key) is None


def test_delete_then_stale_update_does_not_resurrect(pair) -> None:
    left, right, replicator = pair
    key = left["people"].first().key
    doc = right["people"].get(key)
    doc["name"] = "stale"
    right["people"].save(doc)
    updated = version_clock(right, key)
    wait_until(lambda: now_clock() > updated)  # clocks of unconnected copies only order across milliseconds
    left["people"].delete(key)  # later: its tombstone must beat the earlier update everywhere
    assert version_clock(left, key) > updated
    replicator.sync()
    assert left["people"].get(key) is None
    assert right["people"].get(key) is None
    assert diff(left, right) == {}


def test_no_echo_sequences_stop_growing(pair) -> None:
    left, right, replicator = pair
    for number in range(10):
        left["people"].append(person(100 + number))
        right["people"].append(person(200 + number))
    replicator.sync()
    sequences = (left.replication.sequence, right.replication.sequence)
    applied = [replica.counters["applied"] for replica in replicator.replicas]
    for _ in range(3):
        assert replicator.sync() == 0
    assert (left.replication.sequence, right.replication.sequence) == sequences
    assert [replica.counters["applied"] for replica in replicator.replicas] == applied
    assert diff(left, right) == {}
    # What right relayed from left keeps left's origin, and left never applied its own changes again.
    origins = {decode_body(body).origin for _s, _c, body in right.replication.entries(1, 100_000)}
    assert origins <= {left.replication.uuid, right.replication.uuid}
    assert len(documents(left, "people")) == 50


def test_schema_changes_flow_both_ways(pair) -> None:
    left, right, replicator = pair
    right["people"].ensure("by_email", "{email}")
    left.table("notes").append({"text": "hello"})
    replicator.sync()
    assert diff(left, right) == {}
    assert left["people"].seek_one("by_email", Doc({"email": "user3@example.com"})).doc == person(3)
    assert right.tables() == ["notes", "people"]


def test_empty_concurrent_with_an_append_on_the_peer_converges(pair) -> None:
    # The empty removes only what is older than it on the peer; the origin refuses the older changes it missed.
    left, right, replicator = pair
    left["people"].empty()
    right["people"].append({"name": "appended during the empty"})
    replicator.sync()
    assert diff(left, right) == {}


def test_drop_concurrent_with_writes_on_the_peer_converges(open_db) -> None:
    left, right = open_db("left"), open_db("right")
    left.table("notes").append_many([{"n": number} for number in range(10)])
    replicator = LocalReplicator(left, right, two_way=True)
    replicator.sync()
    older = right.table("notes").first()
    older["n"] = -1
    right.table("notes").save(older)  # older than the drop below: must not survive it
    wait_until(lambda: now_clock() > version_clock_of(right, "notes", older.oid), timeout=5)
    left.drop("notes")
    wait_until(lambda: now_clock() > version_clock_of(left, "notes", None), timeout=5)
    newer = right.table("notes").append({"n": "after the drop"})
    replicator.sync()
    assert diff(left, right) == {}
    assert [doc.doc for doc in left.table("notes").find()] == [{"n": "after the drop"}]
    assert newer.key == left.table("notes").first().key


def version_clock_of(db, table: str, oid: bytes | None) -> int:
    """The clock of a document's version, or of the table's drop/empty mark when `oid` is None."""
    with db.read_transaction() as txn:
        if oid is None:
            return db.replication.emptied(txn.txn, table)[0]
        return db.replication.version_of(txn.txn, table, oid).clock
