"""The wire codec: every message round-trips; malformed frames raise MalformedEntry; a replica given malformed
content stalls without changing anything and recovers on the next good delivery."""

from __future__ import annotations

import random

import orjson
import pytest

from pynndb.errors import MalformedEntry
from pynndb.replication import (
    Entries,
    Publisher,
    Replica,
    Request,
    SnapshotAck,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    decode,
    diff,
    encode,
)
from pynndb.replication import snapshot as take_snapshot
from tests.helpers import person
from tests.replication.conftest import deliver, documents

SOURCE = "0f8fad5b-d9cb-469f-a165-70867728950e"
REPLICA = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

MESSAGES = [
    Entries(SOURCE, [(7, 1 << 40, b'{"o":"x","v":1,"ops":[]}'), (8, (1 << 40) + 1, b"")], 99),
    Entries(SOURCE, [], 0),
    Request(SOURCE, REPLICA, 12),
    Request(SOURCE, REPLICA, 1, True),
    SnapshotBegin(SOURCE, 42, {"people": {"indexes": {"by_name": {"func": "{name}"}}, "compression": None}}, 3),
    SnapshotChunk(SOURCE, 42, "people", [["k1", {"a": 1}, [5, SOURCE, SOURCE]], ["k2", None, None]]),
    SnapshotEnd(SOURCE, 42),
    SnapshotAck(SOURCE, REPLICA, 3, 16),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message) -> None:
    frame = encode(message)
    assert isinstance(frame, bytes)
    assert decode(frame) == message
    assert decode(memoryview(frame)) == message


def test_windows_round_trip_and_frames_without_one_are_as_before() -> None:
    """`window` (flow control) is not part of what a request asks (it compares equal without it), so its round
    trip is checked here; a request or begin without one encodes as before flow control existed."""
    offered = Request(SOURCE, REPLICA, 1, True, None, 9, 16)
    assert decode(encode(offered)).window == 16
    begin = SnapshotBegin(SOURCE, 42, {}, 0, {}, 9, 16)
    assert decode(encode(begin)).window == 16
    for message in (Request(SOURCE, REPLICA, 1, True, None, 9), SnapshotBegin(SOURCE, 42, {}, 0, {}, 9)):
        assert b"window" not in encode(message) and decode(encode(message)).window == 0
    assert decode(encode(SnapshotAck(SOURCE, REPLICA, 9, 4))) == SnapshotAck(SOURCE, REPLICA, 9, 4)


def test_round_trip_of_real_entries_and_snapshot(open_db) -> None:
    source = open_db("source")
    people = source.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.append_many([person(number) for number in range(50)])
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    messages = list(take_snapshot(source, chunk_bytes=1000))
    decoded = [decode(encode(message)) for message in messages]
    for original, copy in zip(messages, decoded, strict=True):
        if isinstance(original, SnapshotChunk):
            assert copy.documents == orjson.loads(original.raw)
            assert (copy.source, copy.seq, copy.table) == (original.source, original.seq, original.table)
        else:
            assert copy == original
    assert deliver(replica, decoded) == []
    assert diff(source, target) == {}
    people.append(person(99))
    entries = Publisher(source).serve(Request(source.replication.uuid, target.replication.uuid, 1))
    assert deliver(replica, [decode(encode(message)) for message in entries]) == []
    assert diff(source, target) == {}


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(TypeError):
        encode({"type": "request"})


VALID = encode(MESSAGES[0])


def header(**fields) -> bytes:
    return orjson.dumps({"v": 1, "source": SOURCE, **fields}) + b"\n"


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"no newline",
        b"\n",
        b"not json\n",
        b"[1, 2]\n",
        header(v=2, type="end", seq=1),
        header(v="1", type="end", seq=1),
        orjson.dumps({"type": "end", "source": SOURCE, "seq": 1}) + b"\n",
        header(type="unknown"),
        header(type="end"),
        header(type="end", seq="1"),
        header(type="end", seq=True),
        header(type="end", seq=1.5),
        header(type="end", seq=1, source=5),
        orjson.dumps({"v": 1, "type": "end", "seq": 1}) + b"\n",
        header(type="request", replica=REPLICA, start=1, snapshot="yes"),
        header(type="request", start=1),
        header(type="begin", seq=1, tables=[], documents=0),
        header(type="begin", seq=1, tables={}, documents=0, window=-1),
        header(type="request", replica=REPLICA, start=1, window=4097),
        header(type="request", replica=REPLICA, start=1, window="16"),
        header(type="ack", replica=REPLICA, stream=3),
        header(type="ack", replica=REPLICA, stream=3, number=-1),
        header(type="ack", replica=5, stream=3, number=1),
        header(type="chunk", seq=1, table="people") + b"not json",
        header(type="chunk", seq=1, table="people") + b'{"a": 1}',
        header(type="chunk", seq=1, table=3) + b"[]",
        header(type="entries", entries="x"),
        header(type="entries", entries=[[1, 2]]),
        header(type="entries", entries=[[1, 2, -1]]),
        header(type="entries", entries=[[1, 2, "3"]]),
        header(type="entries", entries=[[1, 2, True]]),
        header(type="entries", entries=[[1, 2, 3], [3, 2, 3]]) + b"abcdef",
        header(type="entries", entries=[[1, 2, 10]]) + b"short",
        header(type="entries", entries=[[1, 2, 1]]) + b"ab",
        VALID[:-1],
        VALID[: VALID.index(b"\n")],
        VALID[: VALID.index(b"\n") // 2] + b"\n",
        VALID + b"trailing",
    ],
)
def test_malformed_frames_raise(frame: bytes) -> None:
    with pytest.raises(MalformedEntry):
        decode(frame)


@pytest.mark.parametrize("frame", [None, "a str\n", 42, ["list"]])
def test_non_bytes_frames_raise(frame) -> None:
    with pytest.raises(MalformedEntry):
        decode(frame)


def test_random_bytes_raise_malformed_entry_and_nothing_else() -> None:
    generator = random.Random(1234)
    frames = [encode(message) for message in MESSAGES]
    for _ in range(2000):
        kind = generator.randrange(3)
        if kind == 0:
            frame = bytes(generator.randrange(256) for _ in range(generator.randrange(64)))
        elif kind == 1:
            frame = generator.choice(frames)
            frame = frame[: generator.randrange(len(frame))]
        else:
            frame = bytearray(generator.choice(frames))
            frame[generator.randrange(len(frame))] = generator.randrange(256)
            frame = bytes(frame)
        try:
            decode(frame)
        except MalformedEntry:
            pass


def test_malformed_entry_content_stalls_the_replica_then_it_recovers(open_db) -> None:
    source = open_db("source")
    people = source.table("people")
    for number in range(5):
        people.append(person(number))
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    good = source.replication.entries(1)
    deliver(replica, [Entries(source.replication.uuid, good[:2], 2)])
    before = documents(target, "people"), target.replication.sequence, target.replication.marks()
    for bad_body in (b"not json", b"[1, 2]", b'{"o": 5, "v": 1, "ops": []}', b'{"o": "%s", "v": 1, "ops": [["nope"]]}'):
        if b"%s" in bad_body:
            bad_body = bad_body % source.replication.uuid.encode()
        seq, clock, _body = good[2]
        # A good entry followed by a bad one in the same batch: neither may be applied.
        bad = Entries(source.replication.uuid, [good[2], (seq + 1, clock + 1, bad_body)], 6)
        assert deliver(replica, [bad]) == []
        status = replica.status()
        assert status["state"] == "stalled"
        assert status["reason"] and "malformed" in status["reason"]
        assert (documents(target, "people"), target.replication.sequence, target.replication.marks()) == before
        assert replica.hwm == 2
    assert replica.counters["malformed"] == 4
    deliver(replica, [Entries(source.replication.uuid, good[2:], 6)])
    assert replica.status()["state"] == "live"
    assert replica.status()["reason"] is None
    assert diff(source, target) == {}


def test_malformed_snapshot_chunk_stalls_and_a_new_snapshot_repairs(open_db) -> None:
    source = open_db("source")
    source.table("people").append_many([person(number) for number in range(20)])
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    messages = list(take_snapshot(source))
    begin, end = messages[0], messages[-1]
    bad = SnapshotChunk(begin.source, begin.seq, "people", [["k", {"a": 1}]])
    deliver(replica, [begin, bad])
    assert replica.status()["state"] == "stalled"
    assert replica.counters["malformed"] == 1
    deliver(replica, [end])
    assert replica.hwm == 0, "a snapshot that broke must not be taken as complete"
    requests = replica.tick() or replica.start()
    assert requests[0].snapshot is True, "an interrupted snapshot is asked for again, whole"
    deliver(replica, Publisher(source).serve(requests[0]))
    assert diff(source, target) == {}
    assert replica.status()["state"] == "live"


def test_messages_from_another_source_are_ignored(open_db) -> None:
    source = open_db("source")
    source.table("people").append(person(1))
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    stranger = Entries(SOURCE, source.replication.entries(1), 2)
    assert deliver(replica, [stranger, SnapshotEnd(SOURCE, 50)]) == []
    assert replica.hwm == 0
    assert target.tables() == []
