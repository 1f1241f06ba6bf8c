"""Snapshots: writes during a snapshot are neither missed nor doubled; a replica behind the journal recovers."""

from __future__ import annotations

import threading

from pynndb.replication import (
    LocalReplicator,
    Publisher,
    Replica,
    Request,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    diff,
)
from pynndb.replication import snapshot as take_snapshot
from tests.helpers import person
from tests.replication.conftest import deliver, documents, serve


def test_writes_between_snapshot_chunks_are_neither_missed_nor_doubled(open_db) -> None:
    source = open_db("source")
    people = source.table("people")
    people.ensure("by_email", "{email}")
    people.append_many([person(number) for number in range(300)])
    target = open_db("target")
    publisher = Publisher(source)
    replica = Replica(target, source.replication.uuid).register()
    taken_at = source.replication.sequence
    kinds = []
    written = 1000
    keys = [doc.key for doc in people.find()]
    for message in take_snapshot(source, chunk_bytes=2000):
        kinds.append(type(message))
        assert deliver(replica, [message]) == []
        # Between chunks: new documents, updates and deletes of documents the snapshot has or has not sent yet.
        people.append(person(written))
        doc = people.get(keys.pop())
        doc["name"] = f"updated {written}"
        people.save(doc)
        people.delete(keys.pop(0))
        written += 1
    assert kinds[0] is SnapshotBegin and kinds[-1] is SnapshotEnd
    assert kinds.count(SnapshotChunk) >= 5, "the snapshot must come in several chunks"
    assert replica.hwm == taken_at
    assert documents(target, "people") != documents(source, "people")
    # Everything after the snapshot, plus a replay of what it already covered: duplicates are dropped.
    assert deliver(replica, publisher.serve(replica.start()[0])) == []
    assert deliver(replica, publisher.serve(replica_request(replica, 1))) == []
    assert replica.hwm == source.replication.sequence
    assert diff(source, target) == {}
    assert len(target["people"]) == 300  # one append and one delete per message
    assert replica.counters["duplicates"] >= source.replication.sequence - taken_at


def replica_request(replica: Replica, start: int, snapshot: bool = False) -> Request:
    return Request(replica.source, replica.db.replication.uuid, start, snapshot)


def test_snapshot_while_another_thread_writes(open_db) -> None:
    source = open_db("source")
    people = source.table("people")
    people.append_many([person(number) for number in range(2000)])
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    publisher = Publisher(source)
    stop = threading.Event()
    appended = []

    def writer() -> None:
        number = 10_000
        while not stop.is_set() and number < 12_000:
            appended.append(people.append(person(number)).key)
            number += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        first = source.replication.sequence
        deliver(replica, publisher.serve(replica_request(replica, 1, snapshot=True)))
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert replica.counters["full_resyncs"] == 1
    assert replica.hwm >= first
    serve(publisher, replica, [replica_request(replica, replica.hwm + 1)])
    assert replica.hwm == source.replication.sequence
    assert diff(source, target) == {}
    assert len(target["people"]) == 2000 + len(appended)


def test_replica_behind_the_trimmed_journal_recovers_through_a_snapshot(open_db) -> None:
    source = open_db("source", max_entries=20)
    people = source.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    target = open_db("target")
    replicator = LocalReplicator(source, target)
    for number in range(10):
        people.append(person(number))
    replicator.sync()
    mark = target.replication.marks()[source.replication.uuid]
    deleted = [doc.key for doc in people.find(limit=3)]
    for key in deleted:
        people.delete(key)
    for number in range(10, 700):
        people.append(person(number))
    assert source.replication.retained[0] > mark + 1, "the journal no longer holds what the replica needs"
    replicator.sync()
    replica = replicator.replicas[0]
    assert replica.counters["full_resyncs"] == 1
    assert diff(source, target) == {}
    assert not set(deleted) & set(documents(target, "people"))
    assert target.replication.marks()[source.replication.uuid] == source.replication.sequence
    people.append(person(5000))
    assert replicator.sync() == 1
    assert replica.counters["full_resyncs"] == 1
    assert diff(source, target) == {}


def test_new_replica_of_a_trimmed_source_starts_from_a_snapshot(open_db) -> None:
    source = open_db("source", max_entries=5)
    people = source.table("people")
    for number in range(600):
        people.append(person(number))
    target = open_db("target")
    replicator = LocalReplicator(source, target)
    replicator.sync()
    assert replicator.replicas[0].counters["full_resyncs"] == 1
    assert diff(source, target) == {}


def test_one_way_snapshot_drops_tables_the_source_no_longer_has(open_db) -> None:
    source = open_db("source", max_entries=5)
    target = open_db("target")
    replicator = LocalReplicator(source, target)
    source.table("gone").append({"x": 1})
    replicator.sync()
    source.drop("gone")
    for number in range(600):
        source.table("people").append(person(number))
    replicator.sync()
    assert replicator.replicas[0].counters["full_resyncs"] == 1
    assert target.tables() == ["people"]
    assert diff(source, target) == {}
