"""Filtered replication (issue 12): a replica of only some tables takes their documents, indexes, schema ops and
snapshots, skips every other table's ops while its mark still passes them, and keeps its filter in its registration."""

from __future__ import annotations

import pytest

from pynndb.errors import FilterConflict, InvalidReplication, MalformedEntry
from pynndb.replication import LocalReplicator, Publisher, Replica, diff, register, registrations, unregister
from pynndb.replication.messages import Request, SnapshotBegin, SnapshotChunk, decode, encode
from pynndb.replication.replica import REGISTRATION, filters
from pynndb.replication.source import snapshot
from pynndb.replication.table_filter import in_filter, tables_of
from tests.replication.conftest import documents, serve


def fill(db, tables=("a", "b", "c"), count: int = 20, start: int = 0) -> None:
    for name in tables:
        table = db.table(name)
        table.ensure("by_n", "{n:04}")
        table.append_many([{"n": number, "table": name} for number in range(start, start + count)])


def changes(db) -> None:
    """Every kind of op, on tables in and out of the filter [a, b]."""
    a, b, c = db.table("a"), db.table("b"), db.table("c")
    first = next(iter(a.find()))
    a.delete(first.key)
    b.append({"n": 500})
    c.append({"n": 600})
    a.ensure("by_table", "{table}", duplicates=True)
    c.ensure("by_table", "{table}", duplicates=True)
    b.drop("by_n")
    c.empty()
    db.drop("b")
    db.table("b").append({"n": 700})  # re-created
    db.table("d").append({"n": 800})  # a new table, not in the filter


def test_a_filtered_one_way_replica_holds_exactly_the_chosen_tables(open_db) -> None:
    source, target = open_db("source"), open_db("target")
    fill(source)
    replicator = LocalReplicator(source, target, tables=["a", "b"])
    replicator.sync()
    assert sorted(target.tables()) == ["a", "b"]
    assert diff(source, target, tables=["a", "b"]) == {}
    changes(source)
    replicator.sync()
    assert sorted(target.tables()) == ["a", "b"]
    assert diff(source, target, tables=["a", "b"]) == {}
    assert diff(source, target) != {}  # c and d are not replicated
    assert sorted(target["a"]._indexes) == ["by_n", "by_table"]
    assert sorted(target["b"]._indexes) == []
    replica = replicator.replicas[0]
    assert replica.hwm == source.replication.sequence  # the mark passes skipped entries too
    assert replica.status()["tables"] == ["a", "b"]
    assert filters(target) == {source.replication.uuid: frozenset({"a", "b"})}


def test_the_replica_journals_only_what_it_applied(open_db) -> None:
    source, target = open_db("source"), open_db("target")
    source.table("a")
    replicator = LocalReplicator(source, target, tables=["a"])
    replicator.sync()
    before = target.replication.sequence
    source.table("c").append({"n": 1})
    replicator.sync()
    assert target.replication.sequence == before  # an entry of other tables only: nothing applied, nothing journaled
    source.table("a").append({"n": 2})
    replicator.sync()
    assert target.replication.sequence == before + 1


def test_a_snapshot_replaces_only_the_chosen_tables(open_db) -> None:
    source = open_db("source", max_entries=50)
    target = open_db("target")
    fill(source)
    # The replica had every table once (an earlier unfiltered replication); with the filter, b and c keep that data.
    everything = LocalReplicator(source, target)
    everything.sync()
    unregister(target, source.replication.uuid)
    for number in range(120):  # past the journal's retention: the filtered replica must take a snapshot
        source.table("a").append({"n": 1000 + number})
        source.table("b").append({"n": 1000 + number})
    old_b, old_c = documents(target, "b"), documents(target, "c")
    replica = Replica(target, source.replication.uuid, "one-way", tables=["a"]).register()
    publisher = Publisher(source)
    serve(publisher, replica, replica.start())
    assert replica.counters["full_resyncs"] == 1 and replica.state == "live"
    assert diff(source, target, tables=["a"]) == {}
    assert documents(target, "b") == old_b and documents(target, "c") == old_c  # left the filter: kept, not updated
    assert diff(source, target, tables=["b"]) != {}


def test_a_snapshot_asked_with_tables_carries_only_those(open_db) -> None:
    source = open_db("source")
    fill(source)
    messages = list(snapshot(source, tables=["b"]))
    begin = messages[0]
    assert isinstance(begin, SnapshotBegin) and sorted(begin.tables) == ["b"] and begin.documents == 20
    assert {message.table for message in messages if isinstance(message, SnapshotChunk)} == {"b"}
    publisher = Publisher(source)
    served = list(publisher.serve(Request(source.replication.uuid, "x", 1, True, ["a", "c"])))
    assert {message.table for message in served if isinstance(message, SnapshotChunk)} == {"a", "c"}


def test_a_replica_ignores_other_tables_in_a_full_snapshot(open_db) -> None:
    """An older source ignores `tables` in the request and sends everything: the replica keeps only its tables."""
    source, target = open_db("source"), open_db("target")
    fill(source)
    replica = Replica(target, source.replication.uuid, "one-way", tables=["c"]).register()
    for message in snapshot(source):
        replica.receive(message)
    assert sorted(target.tables()) == ["c"]
    assert diff(source, target, tables=["c"]) == {}


def test_a_filtered_two_way_pair(open_db) -> None:
    left, right = open_db("left"), open_db("right")
    fill(left, ("a", "b"))
    fill(right, ("c",))
    replicator = LocalReplicator(left, right, two_way=True, tables=["a", "c"])
    replicator.sync()
    left.table("a").append({"n": 100, "side": "left"})
    right.table("a").append({"n": 101, "side": "right"})
    left.table("b").append({"n": 102})
    right.table("b").append({"n": 103})
    right.table("c").append({"n": 104})
    replicator.sync()
    assert diff(left, right, tables=["a", "c"]) == {}
    assert len(documents(left, "a")) == 22 and len(documents(left, "c")) == 21
    assert len(documents(left, "b")) == 21  # b is not in the filter: each side keeps its own
    assert [doc["n"] for doc in documents(right, "b").values()] == [103]
    assert [replica.status()["tables"] for replica in replicator.replicas] == [["a", "c"], ["a", "c"]]


def test_a_filtered_source_of_an_aggregation(open_db) -> None:
    one, two, target = open_db("one"), open_db("two"), open_db("target")
    fill(one, ("a", "b"))
    fill(two, ("a", "b"), count=5, start=100)
    first = LocalReplicator(one, target, tables=["a"])
    second = LocalReplicator(two, target)
    first.sync()
    second.sync()
    assert len(documents(target, "a")) == 25 and len(documents(target, "b")) == 5


def test_another_filter_for_a_registration_is_refused(open_db) -> None:
    source, target = open_db("source"), open_db("target")
    uuid = source.replication.uuid
    Replica(target, uuid, "one-way", tables=["a", "b"]).register()
    Replica(target, uuid, "one-way", tables=["b", "a"]).register()  # the same filter again: idempotent
    with pytest.raises(FilterConflict, match="UNREPLICATE") as raised:
        Replica(target, uuid, "one-way", tables=["a"]).register()
    assert raised.value.code == "filter_conflict"
    with pytest.raises(FilterConflict):
        Replica(target, uuid, "one-way").register()
    unregister(target, uuid)
    Replica(target, uuid, "one-way", tables=["a"]).register()  # after UNREPLICATE: a new filter
    assert filters(target)[uuid] == frozenset({"a"})


@pytest.mark.parametrize(
    ("before", "after", "snapshot"),
    [(["a", "b"], ["a"], False), (None, ["a"], False), (["a"], ["a", "b"], True), (["a"], None, True)],
)
def test_replicating_again_with_a_new_filter_starts_over(open_db, before, after, snapshot) -> None:
    """After UNREPLICATE, a filter that takes tables the kept mark did not cover starts with a snapshot (their
    earlier content is not in later entries); a smaller filter resumes from the mark. Tables that left keep their
    data and stop updating."""
    source, target = open_db("source"), open_db("target")
    fill(source, ("a", "b"))
    uuid = source.replication.uuid
    LocalReplicator(source, target, tables=before).sync()
    unregister(target, uuid)
    source.table("a").append({"n": 900})
    source.table("b").append({"n": 901})
    old_b = documents(target, "b")
    replicator = LocalReplicator(source, target, tables=after)
    replicator.sync()
    replica = replicator.replicas[0]
    assert replica.counters["full_resyncs"] == (1 if snapshot else 0)
    chosen = ["a", "b"] if after is None else after
    assert diff(source, target, tables=chosen) == {}
    if "b" not in chosen:
        assert documents(target, "b") == old_b  # left the filter: kept, not updated
    unregister(target, uuid)
    again = LocalReplicator(source, target, tables=after)  # the same filter again: resumes from the mark
    again.sync()
    assert again.replicas[0].counters["full_resyncs"] == 0


def test_a_registration_made_before_filters_means_every_table(open_db) -> None:
    source, target = open_db("source"), open_db("target")
    uuid = source.replication.uuid
    with target._env.begin(write=True) as txn:
        txn.put(REGISTRATION + uuid.encode(), b'{"mode":"read-only"}', db=target._meta)
    assert registrations(target) == {uuid: "read-only"} and filters(target) == {uuid: None}
    register(target, uuid, False)  # the same (unfiltered) registration: accepted
    with pytest.raises(FilterConflict):
        register(target, uuid, False, frozenset({"a"}))


@pytest.mark.parametrize("tables", [[], "a", ["a", 1], [""], ["__meta"], ["a/b"], 3])
def test_bad_tables_are_refused(open_db, tables) -> None:
    source, target = open_db("source"), open_db("target")
    with pytest.raises(InvalidReplication) as raised:
        Replica(target, source.replication.uuid, "one-way", tables=tables).register()
    assert raised.value.code == "bad_params"


def test_in_filter() -> None:
    chosen = tables_of(["a"])
    assert in_filter(chosen, ["put", "a", "k", b"{}"]) and not in_filter(chosen, ["put", "b", "k", b"{}"])
    assert in_filter(None, ["drop", "b"]) and in_filter(chosen, ["bogus"])  # malformed ops fail where applied


def test_request_tables_round_trip() -> None:
    uuid = "12345678-1234-1234-1234-123456789012"
    plain = Request(uuid, uuid, 5, True)
    assert b"tables" not in encode(plain)  # an unfiltered replica's frame is unchanged
    assert decode(encode(plain)) == plain
    filtered = Request(uuid, uuid, 5, True, ["a", "b"])
    assert decode(encode(filtered)) == filtered
    for bad in (b'"a"', b"[]", b"[1]", b'[""]'):
        frame = b'{"v":1,"type":"request","source":"%b","replica":"%b","start":1,"tables":%b}\n' % (
            uuid.encode(),
            uuid.encode(),
            bad,
        )
        with pytest.raises(MalformedEntry):
            decode(frame)
