"""Snapshots of stored key/value pairs: a one-way replica writes records, index entries and versions as the source
stores them (no decoding), journals them for its own replicas, and ends identical; two-way and aggregating replicas
keep their rules; malformed chunks raise MalformedEntry and a broken snapshot is taken again, whole."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import orjson
import pytest

from pynndb import Database
from pynndb.errors import JournalTrimmed, MalformedEntry
from pynndb.replication import (
    LocalReplicator,
    Publisher,
    Replica,
    Request,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    decode,
    diff,
    encode,
)
from pynndb.replication import snapshot as take_snapshot
from pynndb.replication.messages import StoredPairs
from tests.helpers import person, upper_name
from tests.replication.conftest import deliver, documents, ops_of, serve

SOURCE = "0f8fad5b-d9cb-469f-a165-70867728950e"


def stored_dump(db: Database) -> dict[str, Any]:
    """Every table's stored records and index entries, byte for byte, with definitions and dictionaries."""
    db._reload_schema()
    result: dict[str, Any] = {}
    with db._env.begin() as txn:
        for name, table in sorted(db._tables.items()):
            if table._dbi is None:
                continue
            compressor = table._compressor
            result[name] = {
                "records": list(txn.cursor(db=table._dbi)),
                "indexes": {index.name: list(txn.cursor(db=index.dbi)) for index in table._index_list},
                "definition": db._table_definition(txn, name),
                "dictionary": None if compressor is None else compressor.dictionary,
            }
    return result


def versions_dump(db: Database) -> list[tuple[bytes, bytes]]:
    with db._env.begin() as txn:
        return list(txn.cursor(db=db.replication._versions))


def chunk_parts(messages: list[Any]) -> list[tuple[str, str | None]]:
    return [
        (message.stored.part, message.stored.index)
        for message in messages
        if isinstance(message, SnapshotChunk) and message.stored is not None
    ]


def fill(db: Database, count: int = 400) -> None:
    people = db.table("people")
    people.ensure("by_email", "{email}")  # unique
    people.ensure("by_name", "{name}", duplicates=True)  # dupsort, many records per key
    people.ensure("by_age_name", "{age:03}{name}", duplicates=True)
    people.append_many([person(number) for number in range(count)])
    db.table("empty_one").ensure("by_x", "{x}")
    db.table("cities").append_many([{"city": f"city {n}", "n": n} for n in range(30)])


def snapshot_into(source: Database, target: Database, chunk_bytes: int = 3000, stored: bool = True) -> Replica:
    replica = Replica(target, source.replication.uuid).register()
    assert deliver(replica, take_snapshot(source, chunk_bytes=chunk_bytes, stored=stored)) == []
    assert replica.hwm == source.replication.sequence
    assert replica.state == "live"
    return replica


def test_one_way_fast_snapshot_is_identical_and_answers_the_same(open_db) -> None:
    source = open_db("source")
    fill(source)
    messages = list(take_snapshot(source, chunk_bytes=3000))
    parts = chunk_parts(messages)
    assert ("records", None) in parts and ("index", "by_name") in parts and ("index", "by_email") in parts
    assert parts.count(("index", "by_name")) >= 2, "a dupsort index's entries must span several chunks"
    assert all(len(encode(m)) < 3000 + 600 for m in messages if isinstance(m, SnapshotChunk)), "bounded chunks"
    target = open_db("target", replication=False)
    replica = Replica(target, source.replication.uuid).register()
    assert deliver(replica, messages) == []
    assert diff(source, target) == {}
    assert stored_dump(target) == stored_dump(source)
    assert replica.snapshot_progress == (430, 430)
    people, copy = source["people"], target["people"]
    for index in ("by_email", "by_name", "by_age_name"):
        assert [doc.key for doc in copy.find(index)] == [doc.key for doc in people.find(index)]
    assert [d.key for d in copy.seek("by_name", {"name": "Name 7"})] == [
        d.key for d in people.seek("by_name", {"name": "Name 7"})
    ]
    assert copy.seek_one("by_email", {"email": "user42@example.com"}).doc == person(42)
    assert [d.key for d in copy.range("by_age_name", {"age": 21, "name": ""}, {"age": 22, "name": ""})] == [
        d.key for d in people.range("by_age_name", {"age": 21, "name": ""}, {"age": 22, "name": ""})
    ]
    # Live entries continue from the snapshot's sequence, through the same indexes.
    doc = people.seek_one("by_email", {"email": "user5@example.com"})
    doc["name"] = "Renamed"
    people.save(doc)
    people.append(person(1000))
    deliver(replica, Publisher(source).serve(replica.start()[0]))
    assert diff(source, target) == {}
    assert stored_dump(target) == stored_dump(source)


def test_the_wire_codec_round_trips_fast_chunks(open_db) -> None:
    source = open_db("source")
    fill(source, 200)
    source.replication.set_versioned(True)
    people = source.table("people")
    people.append(person(500))
    people.delete(people.seek_one("by_email", {"email": "user3@example.com"}))  # a tombstone
    messages = list(take_snapshot(source, chunk_bytes=2000))
    assert ("tombstones", None) in chunk_parts(messages)
    decoded = [decode(encode(message)) for message in messages]
    for original, copy in zip(messages, decoded, strict=True):
        if isinstance(original, SnapshotChunk):
            assert (copy.source, copy.seq, copy.table, copy.stored) == (
                original.source,
                original.seq,
                original.table,
                original.stored,
            )
        else:
            assert copy == original
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    assert deliver(replica, decoded) == []
    assert diff(source, target) == {}
    assert stored_dump(target) == stored_dump(source)


@pytest.mark.parametrize("count", [1, 2048, 5000])  # (5000: more items than the decoder keeps a Struct for)
def test_stored_pairs_of_one_size_and_of_many_sizes_round_trip(count: int) -> None:
    """Keys of one size (record keys) and values of many (documents), and the reverse (an index part): every item
    comes back as it went, in order, whatever the count."""
    rng = random.Random(count)
    keys = tuple(b"%024x" % number for number in range(count))
    values = tuple(orjson.dumps({"n": number, "pad": "x" * rng.randrange(0, 300)}) for number in range(count))
    names = tuple(b"name-%d" % rng.randrange(10 ** rng.randrange(1, 9)) for _ in range(count))
    for stored in (StoredPairs("records", keys, values), StoredPairs("index", tuple(sorted(names)), keys, None, "ix")):
        chunk = SnapshotChunk("a" * 32, 7, "people", [], b"[]", stored, 3, 1)
        copy = decode(encode(chunk))
        assert isinstance(copy, SnapshotChunk)
        assert copy.stored == stored


def test_fast_and_json_snapshots_write_the_same_bytes_and_versions_and_journal_no_record(open_db) -> None:
    source = open_db("source")
    fill(source, 300)
    source.replication.set_versioned(True)
    people = source.table("people")
    for number in (1, 2, 3):
        people.delete(people.seek_one("by_email", {"email": f"user{number}@example.com"}))
    people.append(person(900))
    results = []
    for stored in (False, True):
        target = open_db(f"target-{stored}")
        target.replication.set_versioned(True)  # a one-way replica that keeps versions (in a pair elsewhere)
        snapshot_into(source, target, chunk_bytes=2500, stored=stored)
        ops = [op for entry in ops_of(target) for op in entry]
        results.append((stored_dump(target), versions_dump(target), ops))
    (json_dump, json_versions, json_ops), (fast_dump, fast_versions, fast_ops) = results
    assert fast_dump == json_dump == stored_dump(source)
    assert fast_versions == json_versions
    assert any(version[24] == 1 for _key, version in fast_versions), "tombstones are kept"
    # Neither journals a record: the journal starts again after the snapshot, with one entry of no ops.
    assert fast_ops == json_ops == []


def test_compressed_table_with_a_trained_dictionary_round_trips(open_db) -> None:
    source = open_db("source")
    fill(source, 600)
    source["people"].compress(level=3, train=True)
    source["cities"].compress(level=5)
    dump = stored_dump(source)
    assert dump["people"]["dictionary"] and dump["people"]["records"][0][1][0] != ord("{"), "stored compressed"
    messages = list(take_snapshot(source, chunk_bytes=4000))
    begin = messages[0]
    assert isinstance(begin, SnapshotBegin) and set(begin.dictionaries) == {"people"}
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    assert deliver(replica, [decode(encode(message)) for message in messages]) == []
    assert diff(source, target) == {}
    assert stored_dump(target) == dump, "records stored as the source stores them, same dictionary and level"
    assert target["people"].seek_one("by_email", {"email": "user9@example.com"}).doc == person(9)
    # Later entries are written with the same compression.
    source["people"].append(person(7000))
    deliver(replica, Publisher(source).serve(replica.start()[0]))
    assert stored_dump(target) == stored_dump(source)


def test_function_index_is_copied_without_the_function(open_db) -> None:
    source = open_db("source")
    people = source.table("people")
    people.ensure("upper", upper_name, duplicates=True)
    people.append_many([person(number) for number in range(100)])
    target = open_db("target")
    snapshot_into(source, target)
    assert diff(source, target) == {}
    copy = target["people"]
    assert copy.index("upper").definition.to_json() == people.index("upper").definition.to_json()
    assert [doc.key for doc in copy.find("upper")] == [doc.key for doc in people.find("upper")]
    copy.ensure("upper", upper_name, duplicates=True)  # the application supplies the function to seek by it
    assert len(list(copy.seek("upper", {"name": "Name 3"}))) == 2


def test_chain_a_to_b_to_c_after_a_fast_snapshot_of_b(open_db) -> None:
    a = open_db("a")
    fill(a, 500)
    a["people"].compress(level=3, train=True)
    b, c = open_db("b"), open_db("c")  # b keeps a journal: c replicates it
    snapshot_into(a, b)
    first, last = b.replication.retained
    assert first == last > 1 and ops_of(b, first) == [[]], "b's journal started again after the snapshot"
    with LocalReplicator(b, c) as b_to_c:
        b_to_c.sync()  # c's start is no longer in b's journal: c takes a snapshot of b
        assert b_to_c.replicas[0].counters["full_resyncs"] == 1
        assert diff(a, c) == {}
        assert stored_dump(c) == stored_dump(a)
    # And it keeps flowing through both hops.
    a_to_b = LocalReplicator(a, b)
    a["people"].append(person(9999))
    a_to_b.sync()
    LocalReplicator(b, c).sync()
    assert diff(a, c) == {}


def test_a_journaled_one_way_replica_restarts_its_journal_after_a_snapshot_and_its_followers_resync(
    open_db,
) -> None:
    """b (one-way replica of a, with a journal) takes a snapshot without journaling its records; c (replica of b)
    and a change feed on b, both current before it, learn of it from b's next entry and resync; nothing is lost."""
    a, b, c = open_db("a"), open_db("b"), open_db("c")
    fill(a, 300)
    a_to_b = Replica(b, a.replication.uuid).register()
    a_publisher, b_publisher = Publisher(a), Publisher(b)
    serve(a_publisher, a_to_b, a_to_b.start())  # a's journal holds everything: b applies (and journals) entries
    b_to_c = Replica(c, b.replication.uuid).register()
    serve(b_publisher, b_to_c, b_to_c.start())
    assert diff(a, c) == {} and b_to_c.counters["full_resyncs"] == 0
    position = b.replication.sequence
    a["people"].append(person(1000))
    serve(a_publisher, a_to_b, a_to_b.resync())  # b replaces its content by a snapshot of a
    assert a_to_b.counters["full_resyncs"] == 1 and diff(a, b) == {}
    first, last = b.replication.retained
    assert first == last == position + 2 and ops_of(b, first) == [[]]  # no op per record; one number skipped
    with pytest.raises(JournalTrimmed):
        list(b.changes(since=position, timeout=0))
    # c hears of the restart from b's publisher (no write on a needed), asks for what it lacks: a snapshot of b.
    requests: list[Request] = []
    for message in b_publisher.poll():
        requests += deliver(b_to_c, [message])
    assert requests and requests[0].start == position + 1
    serve(b_publisher, b_to_c, requests)
    assert b_to_c.counters["full_resyncs"] == 1 and b_to_c.state == "live" and diff(a, c) == {}
    # Live again through both hops, with entries: no more snapshots.
    a["people"].append(person(1001))
    for message in a_publisher.poll():
        deliver(a_to_b, [message])
    for message in b_publisher.poll():
        deliver(b_to_c, [message])
    assert diff(a, c) == {} and a_to_b.counters["full_resyncs"] == b_to_c.counters["full_resyncs"] == 1
    assert [change.key for change in b.changes(since=first, timeout=0)] == [a["people"].last().key]


def filled_with_replica(open_db: Any) -> tuple[Database, Database, Replica]:
    """A source `fill`ed with 300 people, an empty target, and a one-way replica registered in it."""
    source = open_db("source")
    fill(source, 300)
    target = open_db("target")
    return source, target, Replica(target, source.replication.uuid).register()


def test_a_crash_mid_snapshot_leads_to_a_fresh_snapshot(open_db) -> None:
    source, target, replica = filled_with_replica(open_db)
    messages = list(take_snapshot(source, chunk_bytes=2000))
    assert target.replication.snapshots() == {}
    deliver(replica, messages[:5])  # begin and a few chunks, then the process dies
    assert source.replication.uuid not in target.replication.marks()
    # What an application reading the replica can see: part of a snapshot, at the source's sequence.
    assert target.replication.snapshots() == {source.replication.uuid: source.replication.sequence}
    restarted = Replica(target, source.replication.uuid).register()
    requests = restarted.start()
    assert requests[0].snapshot is True, "an interrupted snapshot is asked for again, whole"
    assert deliver(restarted, Publisher(source).serve(requests[0])) == []
    assert diff(source, target) == {}
    assert stored_dump(target) == stored_dump(source)
    assert restarted.hwm == source.replication.sequence
    assert target.replication.snapshots() == {}


def test_chunks_are_numbered_and_the_end_counts_them_over_the_wire(open_db) -> None:
    source = open_db("source")
    fill(source, 300)
    messages = [decode(encode(message)) for message in take_snapshot(source, chunk_bytes=2000)]
    chunks = [message for message in messages if isinstance(message, SnapshotChunk)]
    assert [chunk.number for chunk in chunks] == list(range(1, len(chunks) + 1))
    assert isinstance(messages[-1], SnapshotEnd) and messages[-1].chunks == len(chunks)
    json_chunks = [m for m in take_snapshot(source, chunk_bytes=2000, stored=False) if isinstance(m, SnapshotChunk)]
    assert [decode(encode(chunk)).number for chunk in json_chunks] == list(range(1, len(json_chunks) + 1))
    # A source that does not number its chunks (an older one) sends frames without either field.
    assert decode(encode(replace(chunks[0], number=0))).number == 0
    assert decode(encode(SnapshotEnd(source.replication.uuid, 5))).chunks is None
    assert b'"chunks"' not in encode(SnapshotEnd(source.replication.uuid, 5))


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_snapshot_with_a_lost_chunk_never_becomes_the_content_and_is_asked_for_again(open_db, where: str) -> None:
    """The mesh can lose a frame in a link cut and deliver the ones after it: a snapshot with a hole must not be
    taken (its documents would be missing for good, with the mark saying they are there)."""
    source, target, replica = filled_with_replica(open_db)
    uuid = source.replication.uuid
    messages = [decode(encode(message)) for message in take_snapshot(source, chunk_bytes=2000)]
    assert len(messages) > 6
    lost = 3 if where == "middle" else len(messages) - 2  # (the last chunk: only the end can tell)
    requests = deliver(replica, messages[:lost] + messages[lost + 1 :])
    assert [request.snapshot for request in requests] == [True]
    assert replica.counters["snapshots_retaken"] == 1 and replica.state == "snapshot"
    assert replica.hwm == 0 and uuid not in target.replication.marks()
    assert Replica(target, uuid).start()[0].snapshot is True  # (a restart now asks for a whole snapshot too)
    assert deliver(replica, Publisher(source).serve(requests[0])) == []
    assert replica.state == "live" and replica.hwm == source.replication.sequence
    assert diff(source, target) == {}
    assert stored_dump(target) == stored_dump(source)


def test_a_chunk_delivered_twice_is_written_once(open_db) -> None:
    source, target, replica = filled_with_replica(open_db)
    messages = list(take_snapshot(source, chunk_bytes=2000))
    assert deliver(replica, messages[:4] + [messages[3], messages[2]] + messages[4:]) == []
    assert replica.counters["snapshots_retaken"] == 0 and replica.state == "live"
    assert replica.snapshot_progress == (messages[0].documents, messages[0].documents)  # counted once
    assert stored_dump(target) == stored_dump(source)


def test_a_snapshot_restarted_at_the_same_sequence_still_ends_identical(open_db) -> None:
    source, target, replica = filled_with_replica(open_db)
    first = list(take_snapshot(source, chunk_bytes=2000))
    second = list(take_snapshot(source, chunk_bytes=2000))
    assert first[0].seq == second[0].seq
    # The replica asked twice: the two answers interleave (the second begin starts over, same sequence). Without
    # streams to tell them apart, the first answer's later chunks are out of order for the second: the replica
    # takes neither and asks again, and the snapshot it then gets ends identical.
    requests = deliver(replica, first[:6] + [second[0]] + first[6:12] + second[1:])
    assert [request.snapshot for request in requests] == [True]
    assert replica.counters["snapshots_retaken"] == 1 and replica.state == "snapshot"
    assert deliver(replica, take_snapshot(source, chunk_bytes=2000)) == []
    assert replica.state == "live" and replica.hwm == first[0].seq
    assert diff(source, target) == {}
    assert stored_dump(target) == stored_dump(source)


def test_two_way_snapshot_from_fast_chunks_keeps_last_writer_wins(open_db) -> None:
    a, b = open_db("a"), open_db("b")
    with LocalReplicator(a, b, two_way=True) as pair:
        people_a = a.table("people")
        people_a.ensure("by_email", "{email}")
        people_a.append_many([person(number) for number in range(50)])
        pair.sync()
        doc = people_a.seek_one("by_email", {"email": "user1@example.com"})
        doc["name"] = "newer on a"
        people_a.save(doc)
        people_a.delete(people_a.seek_one("by_email", {"email": "user2@example.com"}))
        pair.sync()
    people_b = b["people"]
    newest = people_b.seek_one("by_email", {"email": "user3@example.com"})
    newest["name"] = "newest on b"
    people_b.save(newest)
    # A full snapshot of a into b (two-way): b's newer change stays, a's delete holds.
    replica = Replica(b, a.replication.uuid, "two-way").register()
    assert deliver(replica, take_snapshot(a, chunk_bytes=1500)) == []
    assert b["people"].get(newest.key).doc["name"] == "newest on b"
    assert b["people"].seek_one("by_email", {"email": "user2@example.com"}) is None
    assert b["people"].seek_one("by_email", {"email": "user1@example.com"}).doc["name"] == "newer on a"


def test_aggregate_snapshot_from_fast_chunks_replaces_only_that_source(open_db) -> None:
    one, two, target = open_db("one"), open_db("two"), open_db("target")
    one.table("people").append_many([person(number) for number in range(20)])
    two.table("people").append_many([person(number) for number in range(100, 130)])
    replicators = [LocalReplicator(one, target), LocalReplicator(two, target)]
    for replicator in replicators:
        replicator.sync()
    assert len(target["people"]) == 50
    one_people = one["people"]
    one_people.delete(one_people.first())
    replica = Replica(target, one.replication.uuid).register()
    assert replica.mode == "aggregate"
    assert deliver(replica, take_snapshot(one, chunk_bytes=1000)) == []
    assert len(target["people"]) == 49
    assert documents(target, "people") == {**documents(one, "people"), **documents(two, "people")}


# --- malformed input ---------------------------------------------------------------------------------------------
def stored_frame(part: str = "records", **header: Any) -> bytes:
    pairs = [(b"k1", b'{"a":1}'), (b"k2", b'{"a":2}')]
    chunk = SnapshotChunk(SOURCE, 3, "people", stored=StoredPairs.of(part, pairs))
    frame = encode(chunk)
    if not header:
        return frame
    head, _newline, payload = frame.partition(b"\n")
    return orjson.dumps({**orjson.loads(head), **header}) + b"\n" + payload


def with_payload(frame: bytes, payload: bytes) -> bytes:
    return frame.partition(b"\n")[0] + b"\n" + payload


GOOD = stored_frame()
GOOD_PAYLOAD = GOOD.partition(b"\n")[2]


@pytest.mark.parametrize(
    "frame",
    [
        stored_frame(format=2),
        stored_frame(format=None),
        stored_frame(part="documents"),
        stored_frame(part="index"),  # an index part must name its index
        stored_frame(index="by_x"),  # a records part must not
        stored_frame(count=3),
        stored_frame(count=-1),
        stored_frame(count="2"),
        stored_frame(count=10**9),
        stored_frame(versioned="no"),
        stored_frame(versioned=True),  # no version lengths in the payload
        stored_frame(table=5),
        stored_frame(seq=None),
        GOOD[:-1],
        GOOD + b"x",
        with_payload(GOOD, b""),
        with_payload(GOOD, GOOD_PAYLOAD[:3]),
        with_payload(stored_frame(key_size=None), b"\x00\x00\x04\x00" + b"k1k2" + GOOD_PAYLOAD[4:]),  # an empty key
        stored_frame(key_size=0),
        stored_frame(key_size=True),
        stored_frame(value_size=8),
        stored_frame(value_size=-7),
        with_payload(GOOD, GOOD_PAYLOAD.replace(b"k1", b'k"')),  # a record key JSON would need to escape
        encode(SnapshotChunk(SOURCE, 3, "people", stored=StoredPairs.of("records", [(b"k", b"")]))),  # empty value
        encode(SnapshotChunk(SOURCE, 3, "people", stored=StoredPairs.of("records", [(b"k", b"{}")], [b"short"]))),
        encode(SnapshotChunk(SOURCE, 3, "people", stored=StoredPairs.of("tombstones", [(b"k", b"not 41 bytes")]))),
        encode(SnapshotChunk(SOURCE, 3, "people", stored=StoredPairs.of("index", [(b"x", b"bad key!")], None, "i"))),
        encode(SnapshotChunk(SOURCE, 3, "people", stored=StoredPairs.of("records", [(b"k" * 300, b"{}")]))),
        encode(SnapshotChunk(SOURCE, 3, "people", stored=StoredPairs.of("index", [(b"x" * 600, b"k")], None, "i"))),
        encode(SnapshotChunk(SOURCE, 3, "people", stored=StoredPairs.of("tombstones", [(b"k", b"v" * 41)], [b""]))),
        encode(SnapshotBegin(SOURCE, 3, {}, 0)).replace(b'"dictionaries":{}', b'"dictionaries":{"t":5}'),
        encode(SnapshotBegin(SOURCE, 3, {}, 0)).replace(b'"dictionaries":{}', b'"dictionaries":[]'),
    ],
)
def test_malformed_fast_chunks_raise(frame: bytes) -> None:
    with pytest.raises(MalformedEntry):
        decode(frame)


def test_random_damage_to_fast_chunks_raises_malformed_entry_and_nothing_else(open_db) -> None:
    source = open_db("source")
    fill(source, 30)
    source.replication.set_versioned(True)
    source["people"].delete(source["people"].first())
    frames = [encode(message) for message in take_snapshot(source, chunk_bytes=800)]
    generator = random.Random(99)
    for _ in range(3000):
        frame = bytearray(generator.choice(frames))
        if generator.random() < 0.3:
            frame = frame[: generator.randrange(len(frame))]
        else:
            for _hit in range(generator.randrange(1, 4)):
                frame[generator.randrange(len(frame))] = generator.randrange(256)
        try:
            decode(bytes(frame))
        except MalformedEntry:
            pass


def test_a_bad_fast_chunk_stalls_the_replica_and_a_new_snapshot_repairs(open_db) -> None:
    source = open_db("source")
    fill(source, 100)
    target = open_db("target")
    messages = list(take_snapshot(source))
    begin, end = messages[0], messages[-1]
    bad_chunks = [
        SnapshotChunk(begin.source, begin.seq, "people", stored=StoredPairs.of("index", [(b"k", b"x")], None, "nope")),
        SnapshotChunk(
            begin.source, begin.seq, "people", stored=StoredPairs.of("records", [(b"b", b"{}"), (b"a", b"{}")])
        ),
        SnapshotChunk(
            begin.source, begin.seq, "people", stored=StoredPairs.of("records", [(b"a", b"\x28\xb5garbage")])
        ),
    ]
    for number, bad in enumerate(bad_chunks, 1):
        replica = Replica(target, source.replication.uuid).register()
        deliver(replica, [begin, bad])
        assert replica.status()["state"] == "stalled"
        assert replica.counters["malformed"] == 1
        deliver(replica, [end])
        assert replica.hwm == 0, "a snapshot that broke must not be taken as complete"
        requests = replica.tick() or replica.start()
        assert requests[0].snapshot is True
        if number == len(bad_chunks):
            deliver(replica, Publisher(source).serve(requests[0]))
            assert diff(source, target) == {}
            assert replica.status()["state"] == "live"


def test_json_chunks_are_still_understood(open_db) -> None:
    source = open_db("source")
    fill(source, 100)
    source["people"].compress(level=3, train=True)
    target = open_db("target")
    messages = [decode(encode(m)) for m in take_snapshot(source, chunk_bytes=2000, stored=False)]
    assert not chunk_parts(messages)
    replica = Replica(target, source.replication.uuid).register()
    assert deliver(replica, messages) == []
    assert diff(source, target) == {}
    assert stored_dump(target)["people"]["definition"] == stored_dump(source)["people"]["definition"]
    request = Request(source.replication.uuid, target.replication.uuid, 1, True)
    assert isinstance(list(Publisher(source).serve(request))[-1], SnapshotEnd)
