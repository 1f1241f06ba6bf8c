"""A replica's inserts a column at a time (core/columns.py): taken only where no put can clash, and the same content
as the record-by-record path, index by index, whatever the records carry."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from pynndb import Database, Manager
from pynndb.core import columns
from pynndb.core.storage import Storage

SOURCE = str(uuid.uuid4())


def tags(fields: dict[str, Any]) -> list[str] | None:
    return fields.get("tags")


def table_with_indexes(db: Database, unique: bool = False, several: bool = True) -> Any:
    people = db.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    if several:  # (a journal entry then carries no keys)
        people.ensure("by_tag", tags, duplicates=True)  # several keys a record, or none
    people.ensure("by_nick", "{nick}", duplicates=not unique)  # sparse: most records have no nick
    return people


def content(db: Database) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every pair of the table and of each of its indexes, as stored."""
    people = db["people"]
    handles = {"records": people._dbi, **{name: index.dbi for name, index in people._indexes.items()}}
    with db._env.begin() as txn:
        return {name: list(txn.cursor(db=dbi).iternext()) for name, dbi in handles.items()}


def record(number: int) -> tuple[bytes, bytes, Any]:
    """A put as a replica applies it: (key, stored JSON, fields or the keys its source computed)."""
    fields: dict[str, Any] = {"name": f"N{number % 7}", "n": number}
    if number % 3 == 0:
        fields["tags"] = [f"t{number % 4}", "all"]
    if number % 10 == 0:
        fields["nick"] = f"nick{number}"
    stored = b'{"name":"N%d","n":%d%s%s}' % (
        number % 7,
        number,
        b',"tags":["t%d","all"]' % (number % 4) if "tags" in fields else b"",
        b',"nick":"nick%d"' % number if "nick" in fields else b"",
    )
    return b"%024x" % number, stored, fields


def put(db: Database, records: list[tuple[bytes, bytes, Any]]) -> None:
    for tx in Storage(db).transactions(SOURCE):
        with tx:
            tx.put_documents("people", records)


@pytest.fixture
def pair(manager: Manager, tmp_path: Path) -> tuple[Database, Database]:
    """Two databases without a journal (a one-way replica's put path): a column at a time, and record by record."""
    return (
        manager.database("columns", str(tmp_path / "columns")),
        manager.database("records", str(tmp_path / "records")),
    )


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many records each column-at-a-time write put."""
    seen: list[int] = []
    write = columns.write

    def spy(txn: Any, dbi: Any, indexes: Any, computed: columns.Columns) -> None:
        seen.append(len(computed.oids))
        write(txn, dbi, indexes, computed)

    monkeypatch.setattr(columns, "write", spy)
    return seen


def one_by_one(db: Database, records: list[tuple[bytes, bytes, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(columns, "columns", lambda *args: None)
        put(db, records)


def test_ascending_keys_after_the_tables_last_are_new(pair: tuple[Database, Database]) -> None:
    db = pair[0]
    people = db.table("people")
    with db._env.begin(write=True) as txn:
        assert not columns.ascending(txn, people._dbi, [])
        assert columns.ascending(txn, people._dbi, [b"a", b"b"])  # an empty table
        txn.put(b"c", b"{}", db=people._dbi)
        assert not columns.ascending(txn, people._dbi, [b"d", b"d"])  # not strictly
        assert not columns.ascending(txn, people._dbi, [b"e", b"d"])
        assert not columns.ascending(txn, people._dbi, [b"c", b"d"])  # the table holds c
        assert not columns.ascending(txn, people._dbi, [b"b", b"d"])
        assert columns.ascending(txn, people._dbi, [b"ca", b"d"])


def test_a_column_at_a_time_stores_what_record_by_record_does(
    pair: tuple[Database, Database], writes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = pair
    for db in pair:
        table_with_indexes(db)
        db["people"].compress(3)  # values are stored compressed: the same bytes either way
    batches = [[record(n) for n in range(50)], [record(n) for n in range(50, 120)]]
    for batch in batches:
        put(fast, batch)
        one_by_one(slow, batch, monkeypatch)
    assert writes == [50, 70]
    assert content(fast) == content(slow)
    assert len(fast["people"]) == 120 and fast["people"].get(b"%024x" % 30)["tags"] == ["t2", "all"]
    stored = content(fast)
    assert len(stored["by_tag"]) == sum(2 for n in range(120) if n % 3 == 0)
    assert len(stored["by_nick"]) == 12 and len(stored["by_name"]) == 120


def test_carried_keys_are_put_as_given(
    pair: tuple[Database, Database], writes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = pair
    for db in pair:
        table_with_indexes(db)
    index_list = fast["people"]._index_list
    batch = []
    for number in range(40):
        key, stored, fields = record(number)
        carried = tuple(index.keys(fields) for index in index_list)
        carried = ([b"carried-" + fields["name"].encode()], *carried[1:])  # proves the keys were not recomputed
        batch.append((key, stored, carried))
    put(fast, batch)
    one_by_one(slow, batch, monkeypatch)
    assert writes == [40]
    assert content(fast) == content(slow)
    assert content(fast)["by_name"][0][0].startswith(b"carried-")


@pytest.mark.parametrize(
    "case",
    ["unique index", "below the last key", "not ascending", "too few records", "an existing record"],
)
def test_records_that_could_clash_go_record_by_record(
    pair: tuple[Database, Database], writes: list[int], case: str
) -> None:
    db = pair[0]
    table_with_indexes(db, unique=case == "unique index")
    put(db, [record(n) for n in (100, 101)])  # too few for a column at a time
    batch = [record(n) for n in range(200, 220)]
    if case == "below the last key":
        batch = [record(n) for n in range(20)]
    elif case == "not ascending":
        batch[3], batch[4] = batch[4], batch[3]
    elif case == "too few records":
        batch = batch[:7]
    elif case == "an existing record":
        batch[0] = (*record(101)[:2], {"name": "Changed", "n": 101})  # the other path takes it as an update
    put(db, batch)
    assert writes == ([19] if case == "an existing record" else [])  # (then the new ones that follow it)
    assert len(db["people"]) == 2 + len(batch) - (case == "an existing record")
    assert len(content(db)["by_name"]) == len(db["people"])
    if case == "an existing record":
        assert [doc.key for doc in db["people"].seek("by_name", {"name": "Changed"})] == [f"{101:024x}"]


def test_a_key_that_cannot_be_made_raises_as_record_by_record(
    pair: tuple[Database, Database], writes: list[int]
) -> None:
    """A key function that fails part way: the column path writes nothing, the other path writes the records
    before the failing one and raises its error."""
    db = pair[0]
    people = db.table("people")

    def picky(fields: dict[str, Any]) -> int:
        if fields["n"] == 5:
            raise ValueError("no key for 5")
        return int(fields["n"])

    people.ensure("by_n", picky, duplicates=True)
    storage = Storage(db)
    with pytest.raises(ValueError, match="no key for 5"):
        for tx in storage.transactions(SOURCE):
            with tx:
                tx.put_documents("people", [record(n) for n in range(10)])
    assert writes == []
    assert len(people) == 0  # (the transaction did not commit)
    put(db, [record(n) for n in range(6, 16)])
    assert writes == [10] and len(people) == 10


# --- an application's append_many ------------------------------------------------------------------------------------
def fields(number: int) -> dict[str, Any]:
    return record(number)[2] | {"maybe": None if number % 2 else number}  # (a null that is no NaN)


def journal(db: Database) -> list[tuple[list[Any], list[Any] | None]]:
    """Each entry's ops (documents decoded) and the index keys it carries, per put op."""
    from pynndb.core.entries import decode_body, read_keyed, split_keys

    entries = []
    for _seq, _clock, body in db.replication.entries(1, 1000):
        entry, keys = read_keyed(body)
        ops = decode_body(body).ops
        puts = [op for op in entry.ops if op[0] == "put"]
        carried = None if keys is None else split_keys(keys, len(db["people"]._index_list), len(puts))
        entries.append((ops, carried))
    return entries


@pytest.fixture
def journaled(manager: Manager, tmp_path: Path) -> tuple[Database, Database]:
    """Two journaled databases: an application's appends a column at a time, and record by record."""
    return tuple(  # type: ignore[return-value]
        manager.database(name, str(tmp_path / name), config={"replication": True}) for name in ("columns", "records")
    )


@pytest.mark.parametrize("several", [True, False])
def test_append_many_a_column_at_a_time_stores_and_journals_what_record_by_record_does(
    journaled: tuple[Database, Database], writes: list[int], monkeypatch: pytest.MonkeyPatch, several: bool
) -> None:
    from pynndb.core.doc import Doc

    fast, slow = journaled
    for db in journaled:
        table_with_indexes(db, several=several)
        db["people"].compress(3)
    batches = [[Doc(fields(n), b"%024x" % n) for n in range(first, first + 60)] for first in (0, 60)]
    for batch in batches:
        fast["people"].append_many(batch)
        with monkeypatch.context() as patch:
            patch.setattr(columns, "insert_many", lambda *args: False)
            slow["people"].append_many(batch)
    assert writes == [60, 60]
    assert content(fast) == content(slow)
    assert journal(fast) == journal(slow)
    ops, carried = journal(fast)[-1]
    assert len(ops) == 60 and (carried is None) == several  # (format 3 carries the keys, one a record and index)
    assert fast["people"].get(b"%024x" % 3)["maybe"] is None


def test_append_many_that_fails_part_way_writes_and_journals_what_came_before(
    journaled: tuple[Database, Database], writes: list[int]
) -> None:
    """A document that cannot be stored part way through a call, caught inside the transaction: the records before
    it are written and journaled with their keys, nothing of it or after it; a replica of it converges."""
    from pynndb.core.entries import KEYED_MIN
    from pynndb.errors import InvalidDocument
    from pynndb.replication import Publisher, Replica, diff
    from tests.replication.conftest import deliver, serve

    source, target = journaled
    people = table_with_indexes(source, several=False)
    publisher = Publisher(source)
    replica = Replica(target, source.replication.uuid).register()
    serve(publisher, replica, replica.start())
    batch = [fields(n) for n in range(KEYED_MIN * 2)]
    batch[KEYED_MIN + 1] = {"name": "bad", "n": float("nan")}
    with source.write_transaction() as txn:
        with pytest.raises(InvalidDocument, match="NaN"):
            people.append_many(batch, txn=txn)
        people.append_many([fields(n) for n in range(100, 100 + KEYED_MIN)], txn=txn)
    assert writes == [KEYED_MIN + 1, KEYED_MIN]
    assert sorted(doc["n"] for doc in people.find()) == list(range(KEYED_MIN + 1)) + list(range(100, 100 + KEYED_MIN))
    ops, carried = journal(source)[-1]
    assert [op[3]["n"] for op in ops] == [doc["n"] for doc in people.find()]
    assert carried is not None and len(carried) == len(ops)
    deliver(replica, publisher.poll())
    assert replica.status()["state"] == "live" and diff(source, target) == {}
    assert content(target) == content(source)


def test_appends_that_could_clash_go_record_by_record(journaled: tuple[Database, Database], writes: list[int]) -> None:
    from pynndb.core.doc import Doc
    from pynndb.errors import DuplicateKey

    db = journaled[0]
    people = table_with_indexes(db, unique=True)
    people.append_many([fields(n) for n in range(20)])  # a unique index: each put is checked
    plain = table_with_indexes(journaled[1])
    taken = plain.append_many([fields(n) for n in range(20)])
    with pytest.raises(DuplicateKey):  # a key the table holds: not after its last key
        plain.append_many([Doc(fields(n), taken[n].oid) for n in range(5, 15)])
    plain.append_many([fields(n) for n in range(5)])  # (too few for a column at a time)
    assert writes == [20] and len(people) == 20 and len(plain) == 25


@pytest.mark.parametrize("name", ["people", 'we"ird %s %d %% names'])
def test_put_ops_formatted_in_one_go_are_the_ops_one_at_a_time(name: str) -> None:
    import orjson

    from pynndb.core.ops import PUT_FORMAT, put_ops

    table_json = orjson.dumps(name)
    keys = [b"%024x" % number for number in range(5)]
    lengths = [2, 10, 100, 1000, 65536]
    ops = [PUT_FORMAT % (table_json, key, length) for key, length in zip(keys, lengths, strict=True)]
    assert put_ops(table_json, iter(keys), iter(lengths)) == b",".join(ops)
    assert orjson.loads(b"[" + put_ops(table_json, keys, lengths) + b"]") == [
        ["put", name, key.decode(), length] for key, length in zip(keys, lengths, strict=True)
    ]
    assert put_ops(table_json, [], []) == b""


def test_a_versioned_database_journals_each_records_version(
    journaled: tuple[Database, Database], writes: list[int]
) -> None:
    """A two-way database keeps a version per document: its appends go record by record, each journaled with it."""
    db = journaled[0]
    db.replication.set_versioned(True)
    people = table_with_indexes(db)
    added = people.append_many([fields(n) for n in range(20)])
    assert writes == []
    with db._env.begin() as txn:
        versions = {key for key, _value in txn.cursor(db=db.replication._versions).iternext()}
    assert len(versions) == 20 and all(any(doc.oid in key for key in versions) for doc in added)


def test_a_large_call_is_written_in_batches_and_stops_at_a_failing_record(
    journaled: tuple[Database, Database], writes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records are gathered COLUMN_BATCH at a time (buffers used again, not a million at once); a record that fails
    in a later batch leaves every record before it written and journaled, and nothing after it."""
    from pynndb.errors import InvalidDocument

    monkeypatch.setattr(columns, "COLUMN_BATCH", 16)
    db = journaled[0]
    people = table_with_indexes(db, several=False)
    batch = [fields(n) for n in range(50)]
    batch[40] = {"name": "bad", "n": float("inf")}
    with db.write_transaction() as txn, pytest.raises(InvalidDocument):
        people.append_many(batch, txn=txn)
    assert writes == [16, 16, 8]
    assert sorted(doc["n"] for doc in people.find()) == list(range(40))
    ops, carried = journal(db)[-1]
    assert [op[3]["n"] for op in ops] == list(range(40)) and carried is not None and len(carried) == 40


def test_a_replicas_run_goes_a_batch_at_a_time_then_record_by_record_where_it_could_clash(
    pair: tuple[Database, Database], writes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(columns, "COLUMN_BATCH", 16)
    fast, slow = pair
    for db in pair:
        table_with_indexes(db)
    batch = [record(n) for n in range(100, 140)]
    batch[20] = record(5)  # (another process's id, below the others: not ascending from there)
    put(fast, batch)
    one_by_one(slow, batch, monkeypatch)
    assert writes == [16]  # the first batch; the second holds the record out of order: record by record on
    assert content(fast) == content(slow) and len(fast["people"]) == 40
