"""Journal entry format 2 (version byte, JSON header, documents as stored): replicas write the bytes as they are;
format 1 entries (all JSON) are still read; malformed bodies raise MalformedEntry and stall a replica cleanly."""

from __future__ import annotations

import orjson
import pytest

from pynndb.core import entries as entries_module
from pynndb.core import writes as table_module
from pynndb.core.entries import FORMAT, HEADER_LENGTH, decode_body, read_entry, single_put
from pynndb.core.journal_writes import KEY
from pynndb.errors import MalformedEntry
from pynndb.replication import Entries, Publisher, Replica, diff
from tests.helpers import person
from tests.replication.conftest import deliver, documents, serve

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def v2_body(header: dict, documents: list[bytes]) -> bytes:
    raw = orjson.dumps(header)
    return bytes([FORMAT]) + HEADER_LENGTH.pack(len(raw)) + raw + b"".join(documents)


def test_an_entry_carries_the_stored_bytes_of_its_documents(open_db) -> None:
    db = open_db("db")
    people = db.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    added = people.append_many([person(number) for number in range(3)])
    body = db.replication.entries(db.replication.sequence)[0][2]
    assert body[0] == FORMAT  # (fewer inserts than KEYED_MIN: no index keys, see test_journal_keys.py)
    entry = read_entry(body)
    assert entry.origin == db.replication.uuid
    with db._env.begin() as txn:
        stored = [txn.get(doc.oid, db=people._dbi) for doc in added]
    assert [op[3] for op in entry.ops] == stored
    assert [op[:3] for op in entry.ops] == [["put", "people", doc.key] for doc in added]
    assert [op[3] for op in decode_body(body).ops] == [person(number) for number in range(3)]


def test_a_replica_writes_documents_without_encoding_them_again(open_db, monkeypatch) -> None:
    source = open_db("source")
    people = source.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.append_many([person(number) for number in range(50)])
    people.append(person(50))
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    encoded: list[object] = []

    def refuse(value: object, *args: object) -> bytes:
        encoded.append(value)
        raise AssertionError("a replica re-encoded a document")

    monkeypatch.setattr(table_module, "_dumps", refuse)
    serve(Publisher(source), replica, replica.start())
    monkeypatch.undo()
    assert encoded == []
    assert replica.status()["state"] == "live"
    assert diff(source, target) == {}
    assert [doc.key for doc in target["people"].find("by_name")] == [doc.key for doc in people.find("by_name")]
    # The replica's own journal (it keeps one) carries the same bytes onwards.
    assert read_entry(target.replication.entries(target.replication.sequence)[0][2]).ops[0][3].startswith(b"{")


def test_format_1_entries_are_still_read(open_db) -> None:
    key = "5f1d7c3e0000000000000001"
    body = orjson.dumps(
        {"o": UUID, "v": 7 << 16, "ops": [["create", "people"], ["put", "people", key, {"name": "Ann", "age": 3}]]}
    )
    assert body[:1] == b"{"
    entry = read_entry(body)
    assert (entry.origin, entry.version) == (UUID, 7 << 16)
    assert orjson.loads(entry.ops[1][3]) == {"name": "Ann", "age": 3}
    assert decode_body(body).ops[1][3] == {"name": "Ann", "age": 3}
    # A replica applies it, and a change feed reads it from a journal that holds it.
    target = open_db("target")
    replica = Replica(target, UUID).register()
    deliver(replica, [Entries(UUID, [(1, 7 << 16, body)], 1)])
    assert replica.status()["state"] == "live"
    assert documents(target, "people") == {key: {"name": "Ann", "age": 3}}
    old = open_db("old")
    old.table("people")
    start = old.replication.sequence + 1
    with old._env.begin(write=True) as txn:  # a journal written by a release that wrote format 1
        txn.put(
            KEY.pack(start, 8 << 16),
            body.replace(UUID.encode(), old.replication.uuid.encode()),
            db=old.replication._journal,
        )
    changes = list(old.changes(since=start - 1, timeout=0))
    assert [(change.op, change.key, change.doc.doc if change.doc else None) for change in changes] == [
        ("put", key, {"name": "Ann", "age": 3})
    ]


MALFORMED = [
    b"\x03whatever",
    b"\x02\x01",
    b"\x02" + HEADER_LENGTH.pack(100) + b"{}",
    b"\x02" + HEADER_LENGTH.pack(3) + b"abc",
    v2_body({"o": UUID, "v": 1, "ops": [["put", "people", "k", 5]]}, [b'{"a":'])[:-1],
    v2_body({"o": UUID, "v": 1, "ops": [["put", "people", "k", 7]]}, [b'{"a":1}', b"extra"]),
    v2_body({"o": UUID, "v": 1, "ops": [["put", "people", "k", "7"]]}, [b'{"a":1}']),
    v2_body({"o": UUID, "v": 1, "ops": [["put", "people", "k", 3]]}, [b"[1]"]),
    v2_body({"o": 5, "v": 1, "ops": []}, []),
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_bodies_raise(body: bytes) -> None:
    with pytest.raises(MalformedEntry):
        read_entry(body)
    assert single_put(body) is None  # (the replica's shortcut leaves them to read_entry, which says what is wrong)


def test_the_shortcut_for_one_put_reads_what_read_entry_reads(open_db) -> None:
    db = open_db("db")
    people = db.table("people")
    doc = people.append(person(1))
    body = db.replication.entries(db.replication.sequence)[0][2]
    entry = read_entry(body)
    assert single_put(body) == (entry.origin, entry.version, "people", doc.key, entry.ops[0][3])


@pytest.mark.parametrize(
    "header, documents",
    [
        ({"o": UUID, "v": 1, "ops": [["put", "p", "k", 7], ["put", "p", "l", 7]]}, [b'{"a":1}', b'{"a":2}']),
        ({"o": UUID, "v": 1, "ops": [["delete", "p", "k"]]}, []),
        ({"o": UUID, "v": 1, "ops": [["put", "p", "", 7]]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": [["put", "p", 5, 7]]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": [["put", 5, "k", 7]]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": [["put", "p", "k", 7.0]]}, [b'{"a":1}']),
        ({"o": UUID, "v": True, "ops": [["put", "p", "k", 7]]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1.5, "ops": [["put", "p", "k", 7]]}, [b'{"a":1}']),
        ({"v": 1, "ops": [["put", "p", "k", 7]]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": [["put", "p", "k", 7, "x"]]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": [["put", "p", "k", 6]]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": [["put", "p", "k", 8]]}, [b'{"a":1} ']),
        ({"o": UUID, "v": 1, "ops": [["put", "p", "k", 3]]}, [b"[1]"]),
        # shapes the shortcut unpacks without checking each level first: refused by what fails or by the classes
        ({"o": UUID, "v": 1, "ops": {"abcd": 1}}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": ["putx"]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": "x"}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": 5}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": [["put", "p", "k"]]}, [b'{"a":1}']),
        ({"o": UUID, "v": 1, "ops": [{"put": 1, "p": 2, "k": 3, "x": 4}]}, [b'{"a":1}']),
        ([UUID, 1, [["put", "p", "k", 7]]], [b'{"a":1}']),
        ("header", [b'{"a":1}']),
    ],
)
def test_the_shortcut_leaves_every_other_entry_to_read_entry(header: dict, documents: list[bytes]) -> None:
    assert single_put(v2_body(header, documents)) is None


def test_a_long_header_is_left_to_read_entry_and_read_once() -> None:
    # One put into a table with a long name: read_keyed reads it (the shortcut parses no header that long, so an
    # entry of many ops is never parsed twice).
    body = v2_body({"o": UUID, "v": 1, "ops": [["put", "p" * 1100, "k", 7]]}, [b'{"a":1}'])
    assert single_put(body) is None
    assert read_entry(body).ops == [["put", "p" * 1100, "k", b'{"a":1}']]


def test_a_replica_applies_one_put_entries_by_the_shortcut(open_db, monkeypatch) -> None:
    source = open_db("source")
    people, pets = source.table("people"), source.table("pets")
    people.ensure("by_name", "{name}", duplicates=True)
    first = [people.append(person(number)) for number in range(3)]
    pets.append({"name": "Rex"})
    people.append_many([person(number) for number in range(3, 6)])  # one entry of three puts
    people.delete(first[0].key)
    people.append(person(6))
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    read: list[bytes] = []
    real = entries_module.read_keyed

    def counted(body: bytes) -> object:
        read.append(body)
        return real(body)

    monkeypatch.setattr("pynndb.replication.appliers.read_keyed", counted)
    serve(Publisher(source), replica, replica.start())
    assert replica.status()["state"] == "live"
    assert diff(source, target) == {}
    assert [doc.key for doc in target["people"].find("by_name")] == [doc.key for doc in people.find("by_name")]
    # Only the entries that are not one put went the long way: the table creations, the index, the batch and
    # the delete.
    assert [read_entry(body).ops[0][0] for body in read].count("put") == 1
    # The replica's journal carries the entries as they came (it relays them to its own replicas).
    own = [body for _seq, _clock, body in target.replication.entries(1, 100)]
    ones = [body for _seq, _clock, body in source.replication.entries(1, 100) if single_put(body) is not None]
    assert ones and all(body in own for body in ones)


def test_a_malformed_document_stalls_the_replica_and_changes_nothing(open_db) -> None:
    target = open_db("target")
    replica = Replica(target, UUID).register()
    good = v2_body({"o": UUID, "v": 1 << 16, "ops": [["put", "people", "k1", 7]]}, [b'{"a":1}'])
    bad = v2_body({"o": UUID, "v": 2 << 16, "ops": [["put", "people", "k2", 7]]}, [b'{"a":!}'])
    deliver(replica, [Entries(UUID, [(1, 1 << 16, good), (2, 2 << 16, bad)], 2)])
    assert replica.status()["state"] == "stalled"
    assert documents(target, "people") == {}
    assert replica.hwm == 0
    deliver(replica, [Entries(UUID, [(1, 1 << 16, good)], 1)])
    assert replica.hwm == 1
    assert documents(target, "people") == {"k1": {"a": 1}}


def test_puts_to_keys_the_replica_holds_are_updates_in_a_batch(open_db) -> None:
    source = open_db("source")
    people = source.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    first = people.append(person(1))
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    publisher = Publisher(source)
    serve(publisher, replica, replica.start())
    with source.write_transaction() as txn:  # one entry: new, update of a held key, new, the same new key again
        second = people.append(person(2), txn=txn)
        first["name"] = "Renamed"
        people.save(first, txn=txn)
        people.append(person(3), txn=txn)
        second["name"] = "Again"
        people.save(second, txn=txn)
    deliver(replica, publisher.poll())
    assert replica.status()["state"] == "live"
    assert diff(source, target) == {}
    names = [doc.doc["name"] for doc in target["people"].find("by_name")]
    assert names == [doc.doc["name"] for doc in people.find("by_name")]
    assert sorted(names) == ["Again", "Name 3", "Renamed"]


def test_a_one_way_replica_journals_plain_puts_as_they_came(open_db, monkeypatch) -> None:
    """Entries of nothing but puts are applied in runs across entries and journaled verbatim (no entry is built
    again): the replica's entry for each is the source's body, byte for byte."""
    source = open_db("source")
    people = source.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    publisher = Publisher(source)
    serve(publisher, replica, replica.start())
    start = source.replication.sequence + 1
    for number in range(20):
        people.append(person(number))
    people.append_many([person(number) for number in range(20, 30)])
    sent = source.replication.entries(start, 1000)

    def refuse(*args: object) -> int:
        raise AssertionError("an entry of plain puts was built again instead of relayed as it came")

    monkeypatch.setattr(target.replication, "write_entry", refuse)
    deliver(replica, [Entries(source.replication.uuid, sent, sent[-1][0])])  # one batch: one run of 21 entries
    monkeypatch.undo()
    assert replica.status()["state"] == "live"
    assert diff(source, target) == {}
    relayed = target.replication.entries(target.replication.sequence - len(sent) + 1, 1000)
    assert [body for _seq, _clock, body in relayed] == [body for _seq, _clock, body in sent]


def test_a_relayed_run_is_journaled_in_order_and_trimmed(open_db) -> None:
    """A run of relayed entries goes into the replica's journal in one write: sequences follow on, every clock is
    past the relayed entry's version and past the one before, and the journal is still trimmed to its retention."""
    source = open_db("source")
    people = source.table("people")
    target = open_db("target", max_entries=40)  # trimmed every 10 entries
    replica = Replica(target, source.replication.uuid).register()
    publisher = Publisher(source)
    serve(publisher, replica, replica.start())
    before = target.replication.sequence
    start = source.replication.sequence + 1
    for number in range(95):
        people.append(person(number))
    sent = source.replication.entries(start, 1000)
    deliver(replica, [Entries(source.replication.uuid, sent, sent[-1][0])])  # one run of 95 entries
    assert replica.status()["state"] == "live"
    assert diff(source, target) == {}
    assert target.replication.sequence == before + len(sent)
    first, last = target.replication.retained
    assert last == before + len(sent)
    assert last - first + 1 <= 40 + 10  # trimmed as it went (at most one trim interval over the retention)
    kept = target.replication.entries(first, 1000)
    assert [seq for seq, _clock, _body in kept] == list(range(first, last + 1))
    clocks = [clock for _seq, clock, _body in kept]
    assert clocks == sorted(set(clocks))  # strictly increasing
    versions = {body: clock for _seq, clock, body in sent}
    assert all(clock > versions[body] for _seq, clock, body in kept)  # (entries carry their version: the clock)
    assert [body for _seq, _clock, body in kept] == [body for _seq, _clock, body in sent][-len(kept) :]


def test_runs_of_puts_and_other_ops_keep_their_order(open_db) -> None:
    """Runs into one table end at an entry into another table or of another op (index, delete, update): every
    change lands in order and the replica's journal describes the same changes."""
    source = open_db("source")
    people, pets = source.table("people"), source.table("pets")
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    publisher = Publisher(source)
    serve(publisher, replica, replica.start())
    start = source.replication.sequence + 1
    first = people.append(person(1))
    people.append(person(2))
    dog = pets.append({"name": "Rex"})
    people.ensure("by_name", "{name}", duplicates=True)
    people.append(person(3))
    pets.delete(dog.key)
    first["name"] = "Renamed"
    people.save(first)
    pets.append({"name": "Tom"})
    sent = source.replication.entries(start, 1000)
    deliver(replica, [Entries(source.replication.uuid, sent, sent[-1][0])])
    assert replica.status()["state"] == "live"
    assert diff(source, target) == {}
    assert [doc.doc["name"] for doc in target["people"].find("by_name")] == ["Name 2", "Name 3", "Renamed"]
    relayed = target.replication.entries(target.replication.sequence - len(sent) + 1, 1000)
    assert [decode_body(body) for _seq, _clock, body in relayed] == [decode_body(body) for _seq, _clock, body in sent]
