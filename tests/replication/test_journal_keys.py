"""Journal entry format 3: an entry of nothing but inserts carries their index keys, and a replica whose table has
the same index definitions (the same token) writes those keys instead of decoding every document to compute them."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest

from pynndb.core import writes
from pynndb.core.entries import (
    FORMAT,
    HEADER_LENGTH,
    KEYED_FORMAT,
    KEYED_MIN,
    decode_body,
    read_entry,
    read_keyed,
    split_keys,
)
from pynndb.errors import DuplicateKey, MalformedEntry
from pynndb.replication import Entries, Publisher, Replica, diff
from tests.helpers import person
from tests.replication.conftest import deliver, documents, serve

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
KEY = "5f1d7c3e0000000000000001"


def v3_body(
    header: dict[str, Any], documents: list[bytes], keys: list[bytes], lengths: list[int] | None = None
) -> bytes:
    """A format 3 body; `lengths` (default: the keys') go after the documents, header "k" says how many."""
    lengths = list(map(len, keys)) if lengths is None else lengths
    raw = orjson.dumps({**header, "k": header.get("k", len(lengths))})
    packed = struct.pack(f"<{len(lengths)}H", *lengths)
    return bytes([KEYED_FORMAT]) + HEADER_LENGTH.pack(len(raw)) + raw + b"".join(documents) + packed + b"".join(keys)


def index_pairs(db: Any, table: str, index: str) -> list[tuple[bytes, bytes]]:
    """(index key, record key) of every entry of an index, in order."""
    with db._env.begin() as txn:
        return list(txn.cursor(db=db[table]._indexes[index].dbi).iternext())


def people_with_indexes(db: Any) -> Any:
    people = db.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.ensure("by_age_email", "{age:03}{email}")  # unique
    people.ensure("by_nick", "{nick}", duplicates=True)  # sparse: most documents have no nick
    return people


def live_pair(open_db: Any) -> tuple[Any, Any, Any, Replica, Publisher]:
    """A source with `people_with_indexes`, and a one-way replica of it that is live: (source, its people table,
    target, replica, publisher)."""
    source = open_db("source")
    people = people_with_indexes(source)
    target = open_db("target")
    replica = Replica(target, source.replication.uuid).register()
    publisher = Publisher(source)
    serve(publisher, replica, replica.start())
    return source, people, target, replica, publisher


def test_an_entry_of_inserts_carries_the_index_keys_of_each_document(open_db) -> None:
    db = open_db("db")
    people = people_with_indexes(db)
    added = people.append_many(
        [{**person(number), **({"nick": f"n{number}"} if number % 2 else {})} for number in range(KEYED_MIN + 1)]
    )
    body = db.replication.entries(db.replication.sequence)[0][2]
    assert body[0] == KEYED_FORMAT
    entry, keys = read_keyed(body)
    assert keys is not None
    assert keys.tokens == {"people": people._index_token.decode()}
    carried = split_keys(keys, 3, len(entry.ops))
    for position, index in enumerate(("by_name", "by_age_email", "by_nick")):
        pairs = sorted(
            (key, op[2].encode()) for op, each in zip(entry.ops, carried, strict=True) for key in each[position]
        )
        assert pairs == index_pairs(db, "people", index)
    assert sum(1 for each in carried if each[2]) == KEYED_MIN // 2  # a document without the field: no key, length 0
    # Readers that do not want the keys see the entry as before: the change feed and decode_body.
    assert [op[2] for op in read_entry(body).ops] == [doc.key for doc in added]
    assert [op[3]["email"] for op in decode_body(body).ops] == [doc["email"] for doc in added]
    assert [change.key for change in db.changes(since=db.replication.sequence - 1, timeout=0)] == [
        doc.key for doc in added
    ]


def _update_with_insert(db: Any) -> None:
    people = db["people"]
    first = people.append(person(1))
    with db.write_transaction() as txn:
        people.append(person(2), txn=txn)
        first["name"] = "Renamed"
        people.save(first, txn=txn)


def _insert_then_ensure(db: Any) -> None:
    people = db["people"]
    with db.write_transaction() as txn:
        people.append(person(3), txn=txn)
        people.ensure("by_email", "{email}", txn=txn)


def _fewer_inserts_than_keyed_min(db: Any) -> None:
    db["people"].append_many([person(number) for number in range(KEYED_MIN - 1)])


def _single_appends_in_one_transaction(db: Any) -> None:
    with db.write_transaction() as txn:  # (an append per call records no keys: its entry would rarely carry them)
        for number in range(KEYED_MIN + 1):
            db["people"].append(person(number), txn=txn)


def _insert_then_delete(db: Any) -> None:
    people = db["people"]
    with db.write_transaction() as txn:
        doc = people.append(person(5), txn=txn)
        people.delete(doc.key, txn=txn)


@pytest.mark.parametrize(
    "write",
    [
        _update_with_insert,
        _insert_then_ensure,
        _insert_then_delete,
        _fewer_inserts_than_keyed_min,
        _single_appends_in_one_transaction,
    ],
)
def test_an_entry_with_more_than_carriable_inserts_carries_no_keys(open_db, write: Any) -> None:
    source, _people, target, replica, publisher = live_pair(open_db)
    write(source)
    body = source.replication.entries(source.replication.sequence)[0][2]
    assert body[0] == FORMAT
    assert read_keyed(body)[1] is None
    deliver(replica, publisher.poll())
    assert replica.status()["state"] == "live", replica.status()["reason"]
    assert replica.status()["keyed_documents"] == 0
    assert diff(source, target) == {}
    for index in source["people"]._indexes:
        assert index_pairs(target, "people", index) == index_pairs(source, "people", index)


def tags(fields: dict[str, Any]) -> list[str]:
    return [f"tag-{tag}" for tag in fields.get("tags", [])]


def test_an_index_that_makes_several_keys_of_a_document_is_not_carried(open_db) -> None:
    source, people, target, replica, publisher = live_pair(open_db)
    people.ensure("by_tag", tags, duplicates=True)
    deliver(replica, publisher.poll())
    target["people"].ensure("by_tag", tags, duplicates=True)  # an application supplies its index functions
    people.append_many([{**person(1), "tags": ["a", "b"]}] + [person(number) for number in range(2, KEYED_MIN + 1)])
    multi = source.replication.entries(source.replication.sequence)[0][2]
    assert multi[0] == FORMAT
    people.append_many([{**person(number), "tags": ["c"]} for number in range(100, 100 + KEYED_MIN)])
    assert source.replication.entries(source.replication.sequence)[0][2][0] == KEYED_FORMAT
    deliver(replica, publisher.poll())
    assert replica.status()["state"] == "live"
    assert diff(source, target) == {}
    assert index_pairs(target, "people", "by_tag") == index_pairs(source, "people", "by_tag")
    assert (b" tag-b", read_entry(multi).ops[0][2].encode()) in index_pairs(target, "people", "by_tag")


def test_a_replica_writes_the_carried_keys_without_computing_them(open_db) -> None:
    source, people, target, replica, publisher = live_pair(open_db)
    people.append(person(0))
    deliver(replica, publisher.poll())
    computed: list[object] = []

    def refuse(fields: object) -> list[bytes]:
        computed.append(fields)
        raise AssertionError("a replica computed index keys that the entry carried")

    for index in target["people"]._index_list:
        index.keys = refuse
    people.append_many([{**person(number), "nick": f"n{number}"} for number in range(1, 40)])
    people.append_many([person(number) for number in range(40, 40 + KEYED_MIN)])
    deliver(replica, publisher.poll())
    assert computed == []
    assert replica.status()["state"] == "live"
    assert replica.status()["keyed_documents"] == 39 + KEYED_MIN  # (STATUS: what took the carried keys)
    assert diff(source, target) == {}
    for index in ("by_name", "by_age_email", "by_nick"):
        assert index_pairs(target, "people", index) == index_pairs(source, "people", index)


def test_a_batch_that_fails_part_way_journals_and_carries_what_it_wrote(open_db) -> None:
    """A unique clash part way through append_many, caught inside the transaction: the records written before it
    stay, and the entry journals exactly those (with their keys, none of the failed record's), then the next batch."""
    source, people, target, replica, publisher = live_pair(open_db)
    people.append(person(100))
    deliver(replica, publisher.poll())
    batch = [{**person(number), "nick": f"n{number}"} for number in range(KEYED_MIN + 2)]
    batch[KEYED_MIN // 2] = {**person(100), "name": "Clash"}  # by_age_email is unique: person(100) holds its key
    with source.write_transaction() as txn:
        with pytest.raises(DuplicateKey):
            people.append_many(batch, txn=txn)
        people.append_many([person(number) for number in range(200, 200 + KEYED_MIN)], txn=txn)
    body = source.replication.entries(source.replication.sequence)[0][2]
    entry, keys = read_keyed(body)
    assert keys is not None and len(entry.ops) == KEYED_MIN // 2 + KEYED_MIN == len(people) - 1
    assert "Clash" not in [op[3]["name"] for op in decode_body(body).ops]
    carried = split_keys(keys, 3, len(entry.ops))
    for position, index in enumerate(("by_name", "by_age_email", "by_nick")):
        written = {(key, op[2].encode()) for op, each in zip(entry.ops, carried, strict=True) for key in each[position]}
        assert written == set(index_pairs(source, "people", index)) - set(index_pairs(target, "people", index))
    deliver(replica, publisher.poll())
    assert replica.status()["keyed_documents"] == len(entry.ops)
    assert diff(source, target) == {}


def test_a_batch_formatted_in_one_go_without_keys_is_an_ordinary_entry(open_db, monkeypatch) -> None:
    """Ops formatted for the whole call (BULK_MIN) do not depend on recording keys: with keys off, the entry is
    format 2 with the same ops, and a replica applies it (computing the keys)."""
    assert writes.BULK_MIN <= KEYED_MIN  # (a call that records keys is formatted in one go)
    monkeypatch.setattr(writes, "KEYED_MIN", 1 << 30)
    source, people, target, replica, publisher = live_pair(open_db)
    added = people.append_many([person(number) for number in range(writes.BULK_MIN + 3)])
    body = source.replication.entries(source.replication.sequence)[0][2]
    assert body[0] == FORMAT and read_keyed(body)[1] is None
    assert [(op[0], op[1], op[2]) for op in read_entry(body).ops] == [("put", "people", doc.key) for doc in added]
    assert [op[3] for op in decode_body(body).ops] == [doc.doc for doc in added]
    deliver(replica, publisher.poll())
    assert replica.status()["keyed_documents"] == 0 and diff(source, target) == {}


def test_keys_carried_under_another_token_are_computed_again(open_db) -> None:
    """A replica whose table's index definitions differ from the writer's (another token) ignores the keys."""
    target = open_db("target")
    replica = Replica(target, UUID).register()
    create = orjson.dumps({"o": UUID, "v": 1 << 16, "ops": [["create", "people"]]})
    ensure = orjson.dumps(
        {"o": UUID, "v": 2 << 16, "ops": [["ensure", "people", "by_name", {"func": "{name}", "duplicates": True}]]}
    )
    document = b'{"name":"Ann"}'
    header = {"o": UUID, "v": 3 << 16, "ops": [["put", "people", KEY, len(document)]], "kt": {"people": "0" * 16}}
    insert = v3_body(header, [document], [b" WRONG"])
    deliver(replica, [Entries(UUID, [(1, 1 << 16, create), (2, 2 << 16, ensure), (3, 3 << 16, insert)], 3)])
    assert replica.status()["state"] == "live"
    [computed] = target["people"]._indexes["by_name"].keys({"name": "Ann"})
    assert index_pairs(target, "people", "by_name") == [(computed, KEY.encode())]


@pytest.mark.parametrize(
    ("change", "lengths", "keys"),
    [
        ({}, [5], [b" Ann"]),  # the keys are one byte short of the body
        ({}, [3], [b" Ann"]),  # one byte too many
        ({}, [600], [b" " * 600]),  # longer than any LMDB key
        ({"k": 2}, [4], [b" Ann"]),  # fewer lengths than the header says
        ({"k": 1000}, [4], [b" Ann"]),  # more than the body holds
        ({"k": -1}, [], []),
        ({"k": "1"}, [4], [b" Ann"]),
        ({"k": None}, [4], [b" Ann"]),
        ({"kt": ["people"]}, [4], [b" Ann"]),
        ({"kt": None}, [4], [b" Ann"]),
    ],
)
def test_malformed_keyed_bodies_raise(change: dict[str, Any], lengths: list[int], keys: list[bytes]) -> None:
    document = b'{"name":"Ann"}'
    header = {"o": UUID, "v": 1, "ops": [["put", "people", KEY, len(document)]], "kt": {"people": "a" * 16}}
    body = v3_body({**header, **change}, [document], keys, lengths)
    with pytest.raises(MalformedEntry):
        read_entry(body)


def test_keys_that_do_not_match_the_puts_stall_the_replica_and_change_nothing(open_db) -> None:
    source, people, target, replica, publisher = live_pair(open_db)
    people.append_many([person(number) for number in range(KEYED_MIN)])
    seq, clock, body = source.replication.entries(source.replication.sequence)[0]
    entry, keys = read_keyed(body)
    assert keys is not None
    # The same entry with its last key left out: well-formed, but not one key per index of every put.
    ops = [[*op[:3], len(op[3])] for op in entry.ops]
    ends = [keys.start + sum(keys.lengths[: i + 1]) for i in range(len(keys.lengths))]
    carried = [keys.body[end - length : end] for end, length in zip(ends, keys.lengths, strict=True)]
    header = {"o": entry.origin, "v": entry.version, "ops": ops, "kt": keys.tokens}
    short = v3_body(header, [op[3] for op in entry.ops], carried[:-1], list(keys.lengths[:-1]))
    assert read_keyed(short)[1] is not None
    deliver(replica, [Entries(source.replication.uuid, [(seq, clock, short)], seq)])
    assert replica.status()["state"] == "stalled"
    assert "index keys" in replica.status()["reason"]
    assert documents(target, "people") == {}
    deliver(replica, [Entries(source.replication.uuid, [(seq, clock, body)], seq)])
    assert replica.status()["state"] == "live"
    assert diff(source, target) == {}


def test_a_carried_insert_of_a_key_the_replica_holds_is_applied_as_an_update(open_db) -> None:
    source, people, target, replica, publisher = live_pair(open_db)
    people.append_many([{**person(number), "nick": f"n{number}"} for number in range(KEYED_MIN)])
    seq, clock, body = source.replication.entries(source.replication.sequence)[0]
    assert body[0] == KEYED_FORMAT
    deliver(replica, [Entries(source.replication.uuid, [(seq, clock, body)], seq)])
    # The same insert again under the next sequence (as an overlap would bring it): an update of what is there.
    deliver(replica, [Entries(source.replication.uuid, [(seq + 1, clock + 1, body)], seq + 1)])
    assert replica.status()["state"] == "live"
    assert documents(target, "people") == documents(source, "people")
    for index in ("by_name", "by_age_email", "by_nick"):
        assert index_pairs(target, "people", index) == index_pairs(source, "people", index)


def test_an_entry_of_a_later_format_says_to_upgrade() -> None:
    with pytest.raises(MalformedEntry, match="format 4, newer than this release reads .*upgrade"):
        read_entry(bytes([KEYED_FORMAT + 1]) + HEADER_LENGTH.pack(2) + b"{}")
    with pytest.raises(MalformedEntry, match="unknown format"):
        read_entry(b"?not an entry")
