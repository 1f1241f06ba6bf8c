"""Transactions: atomic across tables and indexes, aborted by an exception, snapshot reads."""

from __future__ import annotations

import pytest

from pynndb import Database, Table
from pynndb.errors import DuplicateKey, TransactionError
from tests.helpers import person


class Boom(Exception):
    pass


def state(db: Database) -> dict[str, object]:
    """Every table's records and index orders."""
    result: dict[str, object] = {"tables": db.tables()}
    for name in db.tables():
        table = db.table(name)
        result[name] = (
            [(d.key, d.doc) for d in table.find()],
            {index: [d.key for d in table.find(index)] for index in table.indexes()},
        )
    return result


def test_commit_on_clean_exit_across_tables(db: Database, table: Table) -> None:
    other = db.table("other")
    with db.write_transaction() as txn:
        doc = table.append(person(1), txn=txn)
        other.append({"owner": doc.key}, txn=txn)
        assert table.get(doc.key, txn=txn) == doc  # the transaction sees its own writes
        assert table.get(doc.key) is None  # others do not, yet
    assert table.get(doc.key) == doc
    assert other.first()["owner"] == doc.key


def test_exception_leaves_no_trace_in_any_table_or_index(db: Database, table: Table) -> None:
    kept = [table.append(person(i)) for i in range(5)]
    other = db.table("other")
    other.ensure("by_owner", "{owner}", duplicates=True)
    before = state(db)
    with pytest.raises(Boom), db.write_transaction() as txn:
        table.append(person(10), txn=txn)
        kept[0]["email"] = "changed@x"
        table.save(kept[0], txn=txn)
        table.delete(kept[1], txn=txn)
        other.append({"owner": "x"}, txn=txn)
        other.empty(txn=txn)
        other.append({"owner": "y"}, txn=txn)
        raise Boom
    assert state(db) == before


def test_schema_changes_roll_back_too(db: Database, table: Table) -> None:
    for i in range(5):
        table.append(person(i))
    before = state(db)
    with pytest.raises(Boom), db.write_transaction() as txn:
        db.table("created", txn=txn).append({"a": 1}, txn=txn)
        table.ensure("by_name", "{name}", duplicates=True, txn=txn)
        table.drop("by_age", txn=txn)
        raise Boom
    assert state(db) == before
    assert table.indexes() == ["by_age", "by_email"]
    table.append(person(10))
    assert len(list(table.seek("by_age", person(10)))) == 2


def test_dropping_a_table_rolls_back(db: Database, table: Table) -> None:
    for i in range(5):
        table.append(person(i))
    before = state(db)
    with pytest.raises(Boom), db.write_transaction() as txn:
        db.drop("people", txn=txn)
        raise Boom
    assert state(db) == before
    table.append(person(10))
    assert table.records() == 6


def test_error_inside_transaction_from_pynndb_itself_rolls_back(db: Database, table: Table) -> None:
    table.append(person(1))
    before = state(db)
    with pytest.raises(DuplicateKey), db.write_transaction() as txn:
        table.append(person(2), txn=txn)
        table.append(person(1), txn=txn)
    assert state(db) == before


def test_read_transaction_is_a_snapshot(db: Database, table: Table) -> None:
    first = table.append(person(1))
    with db.read_transaction() as read:
        table.append(person(2))
        table.delete(first)
        assert table.records(txn=read) == 1
        assert table.get(first.key, txn=read) == first
        assert [d.key for d in table.find("by_email", txn=read)] == [first.key]
        assert [r.doc.key for r in table.filter("by_age", txn=read)] == [first.key]
    assert table.records() == 1 and table.get(first.key) is None


def test_reads_inside_a_write_transaction(db: Database, table: Table) -> None:
    with db.write_transaction() as txn:
        docs = [table.append(person(i), txn=txn) for i in range(3)]
        assert table.records(txn=txn) == 3
        assert [d.key for d in table.find("by_age", txn=txn)] == [
            d.key for d in sorted(docs, key=lambda d: (d["age"], d.key))
        ]
        assert table.seek_one("by_email", person(2), txn=txn) == docs[2]
        assert table.last(txn=txn) == docs[2]
    assert table.records() == 3


def test_calls_without_txn_inside_an_open_write_transaction_join_it(db: Database) -> None:
    people = db.table("people")
    with pytest.raises(RuntimeError), db.write_transaction() as txn:
        people.append({"name": "inside"}, txn=txn)
        db.table("audit").append({"event": "joined"})  # creates a table and appends without txn=
        raise RuntimeError("abort everything")
    assert people.records() == 0
    assert "audit" not in db.tables()
    with db.write_transaction() as txn:
        people.append({"name": "kept"})
        db.table("audit").append({"event": "kept"}, txn=txn)
    assert people.records() == 1
    assert db.table("audit").records() == 1


def test_a_second_write_transaction_in_the_same_thread_is_a_clear_error(db: Database) -> None:
    with db.write_transaction(), pytest.raises(TransactionError, match="already open in this thread"):
        db.write_transaction()
    with db.write_transaction() as txn:  # the first one finished: a new one is fine
        db.table("people").append({"name": "after"}, txn=txn)
    assert db.table("people").records() == 1


@pytest.mark.timeout(60)
def test_threads_writing_to_one_database_lose_nothing(db: Database) -> None:
    import threading

    people = db.table("people")
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            for item in range(200):
                if item % 2:
                    people.append({"writer": number, "item": item})
                else:
                    with db.write_transaction() as txn:
                        people.append({"writer": number, "item": item}, txn=txn)
                        people.append({"writer": number, "item": -item})  # joins this thread's transaction
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert not errors
    assert people.records() == 4 * 300
