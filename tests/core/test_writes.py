"""append / save / delete / empty, and bad input that must raise and change nothing."""

from __future__ import annotations

import re

import pytest

from pynndb import Database, Doc, Table
from pynndb.errors import (
    DatabaseClosed,
    DocumentDoesNotExist,
    DuplicateKey,
    InvalidDocument,
    InvalidKey,
    PyNNDBError,
    ReadOnlyDatabase,
)
from tests.helpers import person


def snapshot(table: Table) -> tuple[list[dict], list[str], list[str]]:
    """Everything a table holds: records in key order and both index orders."""
    records = [(doc.key, doc.doc) for doc in table.find()]
    return records, [d.key for d in table.find("by_email")], [d.key for d in table.find("by_age")]


def test_append_assigns_time_ordered_hex_keys(table: Table) -> None:
    docs = [table.append(person(i)) for i in range(50)]
    keys = [doc.key for doc in docs]
    assert all(re.fullmatch(r"[0-9a-f]{24}", key) for key in keys)
    assert len(set(keys)) == 50
    assert keys == sorted(keys)
    assert [doc.key for doc in table.find()] == keys


def test_append_returns_doc_and_stores_it(table: Table) -> None:
    doc = table.append({"name": "Fred", "age": 30, "email": "fred@x"})
    assert isinstance(doc, Doc) and doc.key is not None
    stored = table.get(doc.key)
    assert stored == doc and stored.doc == {"name": "Fred", "age": 30, "email": "fred@x"}


def test_append_of_a_doc_sets_its_key_in_place(table: Table) -> None:
    doc = Doc({"name": "Jim"})
    assert table.append(doc) is doc
    assert doc.key is not None and table.get(doc.key)["name"] == "Jim"


def test_append_with_a_chosen_key(table: Table) -> None:
    key = "000000000000000000000001"
    table.append(Doc({"name": "chosen"}, oid=key))
    assert table.get(key)["name"] == "chosen"


def test_append_of_an_existing_key_is_an_error_not_an_overwrite(table: Table) -> None:
    first = table.append({"name": "original", "email": "a@x"})
    before = snapshot(table)
    with pytest.raises(DuplicateKey):
        table.append(Doc({"name": "intruder", "email": "b@x"}, oid=first.key))
    assert snapshot(table) == before
    assert table.get(first.key)["name"] == "original"


def test_append_many(table: Table) -> None:
    docs = table.append_many(person(i) for i in range(100))
    assert len(docs) == 100 and table.records() == 100
    assert [d.key for d in table.find()] == [d.key for d in docs]


def test_append_many_mixes_new_keys_and_chosen_keys_in_creation_order(table: Table) -> None:
    """A batch takes its new keys in one go: they follow the keys appended before it and precede those after it;
    Docs that carry a key keep it."""
    before = table.append(person(0)).key
    chosen = "000000000000000000000abc"
    docs = table.append_many([person(1), Doc(person(2), oid=chosen), Doc(person(3)), person(4)])
    after = table.append(person(5)).key
    keys = [doc.key for doc in docs]
    assert keys[1] == chosen
    fresh = [keys[0], keys[2], keys[3]]
    assert all(re.fullmatch(r"[0-9a-f]{24}", key) for key in fresh)
    assert before < fresh[0] < fresh[1] < fresh[2] < after
    assert [table.get(key)["age"] for key in keys] == [person(n)["age"] for n in range(1, 5)]


def test_append_many_is_atomic(table: Table) -> None:
    table.append(person(5))
    with pytest.raises(DuplicateKey):
        table.append_many([person(1), person(2), person(5), person(6)])
    assert table.records() == 1
    assert len(list(table.find("by_age"))) == 1


def test_save_updates_record_and_indexes(table: Table) -> None:
    doc = table.append({"name": "Fred", "age": 30, "email": "fred@x"})
    doc["age"] = 31
    doc["email"] = "fred@y"
    table.save(doc)
    assert table.get(doc.key)["age"] == 31
    assert table.seek_one("by_email", {"email": "fred@y"}) == doc
    assert table.seek_one("by_email", {"email": "fred@x"}) is None
    assert list(table.seek("by_age", {"age": 30})) == []
    assert [d.key for d in table.seek("by_age", {"age": 31})] == [doc.key]


def test_save_removing_an_indexed_field_unindexes_it(table: Table) -> None:
    doc = table.append({"name": "Fred", "age": 30, "email": "fred@x"})
    del doc["email"]
    table.save(doc)
    assert list(table.find("by_email")) == []
    assert table.records() == 1


def test_save_of_unknown_record_is_an_error(table: Table) -> None:
    with pytest.raises(DocumentDoesNotExist):
        table.save(Doc({"name": "nobody"}))
    with pytest.raises(DocumentDoesNotExist):
        table.save(Doc({"name": "nobody"}, oid="ffffffffffffffffffffffff"))
    assert table.records() == 0 and list(table.find("by_age")) == []


def test_save_that_breaks_a_unique_index_changes_nothing(table: Table) -> None:
    table.append({"name": "A", "age": 1, "email": "a@x"})
    b = table.append({"name": "B", "age": 2, "email": "b@x"})
    before = snapshot(table)
    b["email"] = "a@x"
    b["age"] = 3
    with pytest.raises(DuplicateKey):
        table.save(b)
    assert snapshot(table) == before


def test_delete_by_doc_key_bytes_and_list(table: Table) -> None:
    docs = [table.append(person(i)) for i in range(6)]
    table.delete(docs[0])
    table.delete(docs[1].key)
    table.delete(docs[2].oid)
    table.delete([docs[3], docs[4].key])
    assert [d.key for d in table.find()] == [docs[5].key]
    assert [d.key for d in table.find("by_email")] == [docs[5].key]
    assert [d.key for d in table.find("by_age")] == [docs[5].key]


def test_delete_missing_key_is_an_error_and_deletes_nothing(table: Table) -> None:
    docs = [table.append(person(i)) for i in range(3)]
    before = snapshot(table)
    with pytest.raises(DocumentDoesNotExist):
        table.delete("ffffffffffffffffffffffff")
    with pytest.raises(DocumentDoesNotExist):
        table.delete([docs[0], "ffffffffffffffffffffffff"])
    with pytest.raises(DocumentDoesNotExist):
        table.delete(Doc({"name": "never stored"}))
    assert snapshot(table) == before


def test_delete_with_a_bad_key_type(table: Table) -> None:
    with pytest.raises(InvalidKey):
        table.delete(42)  # type: ignore[arg-type]


def test_empty_removes_records_and_index_entries_but_keeps_indexes(table: Table) -> None:
    for i in range(20):
        table.append(person(i))
    table.empty()
    assert table.records() == 0 and len(table) == 0
    assert list(table.find("by_email")) == [] and list(table.find("by_age")) == []
    assert table.indexes() == ["by_age", "by_email"]
    doc = table.append(person(1))
    assert table.seek_one("by_email", person(1)) == doc


@pytest.mark.parametrize(
    "bad",
    [
        ["a", "list"],
        "a string",
        42,
        None,
        {"when": object()},
        {"nested": {"set": {1, 2}}},
        {1: "non-str key"},
        {"name": "\ud800"},
        {"big": 2**70},
        {"score": float("nan")},
        {"score": float("inf")},
    ],
    ids=["list", "str", "int", "none", "object", "set", "int-key", "surrogate", "bigint", "nan", "inf"],
)
def test_bad_documents_raise_invalid_document_and_change_nothing(table: Table, bad: object) -> None:
    table.append(person(1))
    before = snapshot(table)
    with pytest.raises(InvalidDocument):
        table.append(bad)  # type: ignore[arg-type]
    assert snapshot(table) == before


def test_save_with_a_non_json_value_changes_nothing(table: Table) -> None:
    doc = table.append(person(1))
    before = snapshot(table)
    doc["email"] = "new@x"
    doc["when"] = object()
    with pytest.raises(InvalidDocument):
        table.save(doc)
    assert snapshot(table) == before


def test_a_document_whose_index_key_cannot_be_stored_changes_nothing(table: Table) -> None:
    table.append(person(1))
    before = snapshot(table)
    with pytest.raises(PyNNDBError):
        table.append({"email": "x" * 600})  # longer than an LMDB key
    with pytest.raises(PyNNDBError):
        table.append({"email": {"a": "dict"}})
    assert snapshot(table) == before


def test_an_index_function_that_changes_the_schema_is_seen_by_the_append_that_ran_it(db: Database) -> None:
    """A journal-less append computes the document's index keys before its transaction begins; a schema change made
    meanwhile (here by the key function itself) sends it down the general path, which computes them again."""
    people = db.table("people")

    def tagged(doc: dict[str, object]) -> object:
        if "by_name" not in people.indexes():
            people.ensure("by_name", "{name}")
        return doc.get("tag")

    people.ensure("by_tag", tagged, duplicates=True)
    added = people.append({"name": "Ann", "tag": "x"})
    assert [doc.key for doc in people.find("by_name")] == [added.key]
    assert [doc.key for doc in people.find("by_tag")] == [added.key]


def test_a_journal_less_append_follows_the_journal_setting(db: Database) -> None:
    """Appends to a database without a journal skip what a journal needs; turning the journal on (or making the
    database a read-only replica) in this process takes effect at the next append."""
    people = db.table("people")
    people.append({"name": "before"})
    db.replication.enable()
    assert db.replication.sequence == 0
    people.append({"name": "after"})
    assert db.replication.sequence == 1
    db.replication.enable(False)
    db.replication.set_read_only(True)
    with pytest.raises(ReadOnlyDatabase):
        people.append({"name": "refused"})
    db.replication.set_read_only(False)
    people.append({"name": "again"})
    assert [doc["name"] for doc in people.find()] == ["before", "after", "again"]
    assert db.replication.sequence == 1
    db.close()
    with pytest.raises(DatabaseClosed):
        people.append({"name": "closed"})


def test_a_commit_listener_hears_appends_to_a_database_without_a_journal(db: Database) -> None:
    people = db.table("people")
    heard: list[int] = []
    people.append({"name": "unheard"})
    db.add_listener(lambda: heard.append(people.records()))
    people.append({"name": "one"})
    people.append({"name": "two"})
    assert heard == [2, 3]
    db.remove_listener(db._listeners[0])
    people.append({"name": "three"})
    assert heard == [2, 3]
