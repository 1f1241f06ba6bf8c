"""Secondary indexes: format strings, functions, sparse, unique vs duplicates, ensure/drop/reindex."""

from __future__ import annotations

import pytest

from pynndb import Database, Doc, Table
from pynndb.errors import (
    DuplicateKey,
    IndexDefinitionError,
    InvalidIndexKey,
    InvalidName,
    NoSuchIndex,
    PyNNDBError,
)
from tests.helpers import person, tag_keys, upper_name


def keys_of(docs: object) -> list[str]:
    return [d.key for d in docs]  # type: ignore[attr-defined]


def test_format_string_index(db: Database) -> None:
    table = db.table("t")
    table.ensure("by_name", "{name}")
    for name in ["carol", "alice", "bob"]:
        table.append({"name": name})
    assert [d["name"] for d in table.find("by_name")] == ["alice", "bob", "carol"]


def test_compound_format_string_index(db: Database) -> None:
    table = db.table("t")
    table.ensure("by_age_name", "{age:03}{name}", duplicates=True)
    table.append({"name": "zed", "age": 9})
    table.append({"name": "amy", "age": 10})
    table.append({"name": "bob", "age": 9})
    table.append({"name": "no age"})  # sparse: lacks a field
    assert [d["name"] for d in table.find("by_age_name")] == ["bob", "zed", "amy"]
    assert table.seek_one("by_age_name", {"age": 9, "name": "zed"})["name"] == "zed"
    got = [d["name"] for d in table.range("by_age_name", lower={"age": 9, "name": "c"}, upper={"age": 10, "name": "b"})]
    assert got == ["zed", "amy"]


def test_numbers_sort_by_value_without_padding(db: Database) -> None:
    table = db.table("t")
    table.ensure("by_n", "{n}", duplicates=True)
    values = [10, -3, 2.5, 0, -1.5, 100, 9, -200, 1e10, 3]
    for value in values:
        table.append({"n": value})
    assert [d["n"] for d in table.find("by_n")] == sorted(values)
    assert [d["n"] for d in table.range("by_n", lower={"n": -2}, upper={"n": 9.5})] == [-1.5, 0, 2.5, 3, 9]


def test_tuple_and_list_values_sort_by_value(db: Database) -> None:
    table = db.table("t")
    table.ensure("by_pair", lambda d: (d["group"], d["name"]), duplicates=True)
    pairs = [(2, "a"), (10, "a"), (1, "zz"), (2, ""), (1, "z"), (-5, "q")]
    for group, name in pairs:
        table.append({"group": group, "name": name})
    assert [(d["group"], d["name"]) for d in table.find("by_pair")] == sorted(pairs)


def test_function_index_returning_one_key(db: Database) -> None:
    table = db.table("t")
    table.ensure("upper", upper_name)
    table.append({"name": "bob"})
    table.append({"name": "Alice"})
    table.append({"age": 3})  # upper_name returns None: not indexed
    assert [d["name"] for d in table.find("upper")] == ["Alice", "bob"]
    # the template goes through the function too
    assert table.seek_one("upper", {"name": "BOB"})["name"] == "bob"
    assert table.seek_one("upper", {"name": "carl"}) is None


def test_function_index_returning_a_list(db: Database) -> None:
    table = db.table("t")
    table.ensure("by_tag", tag_keys, duplicates=True)
    one = table.append({"tags": ["x", "y"]})
    two = table.append({"tags": ["y", "z", "y"]})
    table.append({"tags": []})
    table.append({"other": 1})
    assert keys_of(table.seek("by_tag", {"tags": ["y"]})) == [one.key, two.key]
    assert keys_of(table.find("by_tag")) == [one.key, one.key, two.key, two.key]
    two["tags"] = ["z"]
    table.save(two)
    assert keys_of(table.seek("by_tag", {"tags": ["y"]})) == [one.key]
    table.delete(one)
    assert keys_of(table.find("by_tag")) == [two.key]


def test_sparse_index_skips_records_without_the_field(table: Table) -> None:
    with_email = table.append({"email": "a@x", "age": 1})
    table.append({"age": 2})
    table.append({"email": None, "age": 3})
    assert keys_of(table.find("by_email")) == [with_email.key]
    assert table.records() == 3


def test_unique_index_rejects_a_second_key_and_the_write_changes_nothing(table: Table) -> None:
    table.append({"email": "a@x", "age": 1})
    with pytest.raises(DuplicateKey):
        table.append({"email": "a@x", "age": 2})
    assert table.records() == 1
    assert keys_of(table.seek("by_age", {"age": 2})) == []


def test_duplicates_index_holds_many_records_per_key(table: Table) -> None:
    docs = [table.append({"email": f"{i}@x", "age": 5}) for i in range(5)]
    assert keys_of(table.seek("by_age", {"age": 5})) == keys_of(docs)


def test_ensure_returns_the_existing_index(table: Table) -> None:
    first = table.index("by_email")
    assert table.ensure("by_email", "{email}") is first
    assert table.indexes() == ["by_age", "by_email"]


def test_ensure_builds_from_existing_records(db: Database) -> None:
    table = db.table("t")
    docs = [table.append(person(i)) for i in range(20)]
    table.ensure("by_email", "{email}")
    assert keys_of(table.find("by_email")) == keys_of(sorted(docs, key=lambda d: d["email"]))


def test_ensure_with_a_conflicting_definition_is_an_error(table: Table) -> None:
    table.append(person(1))
    with pytest.raises(IndexDefinitionError):
        table.ensure("by_email", "{name}")
    with pytest.raises(IndexDefinitionError):
        table.ensure("by_email", "{email}", duplicates=True)
    assert keys_of(table.seek("by_email", person(1))) == [table.first().key]


def test_ensure_force_rebuilds_with_the_new_definition(table: Table) -> None:
    docs = [table.append(person(i)) for i in range(10)]
    table.ensure("by_email", "{name}", duplicates=True, force=True)
    assert table.index("by_email").duplicates
    expected = keys_of(sorted(docs, key=lambda d: (d["name"], d.key)))
    assert keys_of(table.find("by_email")) == expected
    table.append({"name": docs[0]["name"], "email": docs[0]["email"]})  # no longer unique
    assert table.records() == 11


def test_ensure_unique_over_repeated_values_fails_and_creates_nothing(table: Table) -> None:
    for i in range(10):
        table.append(person(i))
    with pytest.raises(DuplicateKey):
        table.ensure("unique_age", "{age}")  # ages repeat
    assert "unique_age" not in table.indexes()
    table.append(person(100))
    assert table.records() == 11


def test_failed_forced_rebuild_leaves_the_old_index_working(table: Table) -> None:
    docs = [table.append(person(i)) for i in range(10)]
    with pytest.raises(DuplicateKey):
        table.ensure("by_email", "{age}", force=True)  # ages repeat: cannot be unique
    assert keys_of(table.find("by_email")) == keys_of(sorted(docs, key=lambda d: d["email"]))
    table.append(person(50))
    assert table.records() == 11


@pytest.mark.parametrize("fmt", ["{name", "name}", "{}", "{0}", "no fields", "", "{name!x}"])
def test_broken_format_strings_are_rejected(table: Table, fmt: str) -> None:
    with pytest.raises(IndexDefinitionError):
        table.ensure("bad", fmt)
    assert "bad" not in table.indexes()


def test_bad_index_definitions(table: Table) -> None:
    with pytest.raises(IndexDefinitionError):
        table.ensure("bad", 42)  # type: ignore[arg-type]
    with pytest.raises(IndexDefinitionError):
        table.ensure("bad", "{name}", duplicates="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidName):
        table.ensure("a/b", "{name}")
    with pytest.raises(InvalidName):
        table.ensure("__hidden", "{name}")
    assert table.indexes() == ["by_age", "by_email"]


def test_format_that_cannot_format_a_document_raises_and_changes_nothing(db: Database) -> None:
    table = db.table("t")
    table.ensure("padded", "{age:d}")
    table.append({"age": 7})
    with pytest.raises(InvalidIndexKey):
        table.append({"age": "seven"})
    assert table.records() == 1 and [d["age"] for d in table.find("padded")] == [7]


def test_function_returning_an_unstorable_key(db: Database) -> None:
    table = db.table("t")
    table.ensure("weird", lambda d: d.get("v"))
    table.append({"v": 1})
    with pytest.raises(InvalidIndexKey):
        table.append({"v": {"a": 1}})
    with pytest.raises(InvalidIndexKey):
        table.append({"v": "x" * 1000})
    assert table.records() == 1


def test_drop_index(table: Table) -> None:
    doc = table.append(person(1))
    table.drop("by_email")
    assert table.indexes() == ["by_age"]
    with pytest.raises(NoSuchIndex):
        list(table.find("by_email"))
    assert table.get(doc.key) == doc
    table.append({**person(2), "email": doc["email"]})  # no longer unique
    with pytest.raises(NoSuchIndex):
        table.drop("by_email")
    table.ensure("by_email", "{email}", duplicates=True)
    assert len(list(table.seek("by_email", doc))) == 2


def test_reindex_rebuilds_entries(table: Table) -> None:
    docs = [table.append(person(i)) for i in range(10)]
    table.reindex("by_age")
    table.reindex("by_email")
    assert keys_of(table.find("by_age")) == keys_of(sorted(docs, key=lambda d: (d["age"], d.key)))
    assert len(list(table.find("by_email"))) == 10
    with pytest.raises(NoSuchIndex):
        table.reindex("nope")


def test_unknown_index_everywhere(table: Table) -> None:
    calls = [
        lambda: table.find("nope"),
        lambda: table.seek("nope", {}),
        lambda: table.seek_one("nope", {}),
        lambda: table.range("nope"),
        lambda: table.filter("nope"),
        lambda: table.first("nope"),
        lambda: table.last("nope"),
        lambda: table.index("nope"),
    ]
    for call in calls:
        with pytest.raises(NoSuchIndex):
            result = call()
            if result is not None and not isinstance(result, Doc):
                list(result)


def test_template_without_the_indexed_field(table: Table) -> None:
    table.append(person(1))
    with pytest.raises(PyNNDBError):
        list(table.seek("by_email", {"name": "no email"}))


def test_indexes_survive_reopen(manager, tmp_path) -> None:  # noqa: ANN001
    path = str(tmp_path / "reopen")
    table = manager.database("r", path).table("t")
    table.ensure("by_email", "{email}")
    table.ensure("by_age", "{age}", duplicates=True)
    docs = [table.append(person(i)) for i in range(10)]
    manager.close("r")
    table = manager.database("r", path).table("t")
    assert table.indexes() == ["by_age", "by_email"]
    assert keys_of(table.find("by_email")) == keys_of(sorted(docs, key=lambda d: d["email"]))
    with pytest.raises(DuplicateKey):
        table.append(person(3))


def test_unique_clash_inside_a_callers_transaction_leaves_no_part_of_the_record(db: Database) -> None:
    table = db.table("t")
    table.ensure("by_age", "{age}", duplicates=True)
    table.ensure("by_email", "{email}")
    table.ensure("by_name", "{name}")  # checked after the others: their keys must be taken back
    with db.write_transaction() as txn:
        kept = table.append({"name": "a", "email": "a@x", "age": 1}, txn=txn)
        with pytest.raises(DuplicateKey, match="by_name"):
            table.append({"name": "a", "email": "b@x", "age": 1}, txn=txn)
        later = table.append({"name": "c", "email": "b@x", "age": 1}, txn=txn)
    assert table.records() == 2
    assert keys_of(table.seek("by_age", {"age": 1})) == sorted([kept.key, later.key])
    assert keys_of(table.find("by_email")) == [kept.key, later.key]
    assert keys_of(table.find("by_name")) == [kept.key, later.key]
