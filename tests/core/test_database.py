"""Manager and Database: tables, drop, close, paths, config, storage, compression."""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import pytest

from pynndb import Database, Manager, Table
from pynndb.core.database import check_lmdb_version
from pynndb.errors import (
    ConfigError,
    DatabaseClosed,
    InvalidName,
    NoSuchDatabase,
    NoSuchTable,
    TransactionError,
    UnsupportedDependency,
)
from tests.helpers import person


def test_manager_opens_and_returns_databases(manager: Manager, tmp_path: Path) -> None:
    db = manager.database("one", str(tmp_path / "one"))
    assert manager["one"] is db
    assert manager.database("one") is db
    assert "one" in manager and manager.databases() == ["one"]
    with pytest.raises(NoSuchDatabase):
        manager["two"]


def test_path_defaults_to_the_name(manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db = manager.database("here")
    assert db.path == str(tmp_path / "here") and os.path.isdir(db.path)


def test_path_and_underscore_path(db: Database, tmp_path: Path) -> None:
    assert db.path == str(tmp_path / "db") and db._path == db.path
    assert os.path.exists(os.path.join(db.path, "data.mdb"))


def test_tables_and_table(db: Database) -> None:
    assert db.tables() == []
    people = db.table("people")
    db.table("places")
    assert db.table("people") is people
    assert db.tables() == ["people", "places"]
    assert db["people"] is people
    with pytest.raises(NoSuchTable):
        db["nope"]


@pytest.mark.parametrize("name", ["", "a/b", "__meta__", "x" * 201, 12])
def test_bad_table_names(db: Database, name: object) -> None:
    with pytest.raises(InvalidName):
        db.table(name)  # type: ignore[arg-type]
    assert db.tables() == []


def test_drop_an_open_table(db: Database, table: Table) -> None:
    for i in range(10):
        table.append(person(i))
    db.drop("people")
    assert db.tables() == []
    with pytest.raises(NoSuchTable):
        table.records()
    again = db.table("people")
    assert again.records() == 0 and again.indexes() == []


def test_drop_an_open_empty_table_then_reuse_the_name(db: Database) -> None:
    db.table("scratch")
    db.drop("scratch")
    recreated = db.table("scratch")
    recreated.append({"x": 1})
    assert recreated.records() == 1
    assert db.tables() == ["scratch"]


def test_drop_a_table_that_was_never_opened(manager: Manager, tmp_path: Path) -> None:
    path = str(tmp_path / "d")
    table = manager.database("d", path).table("old")
    table.ensure("by_email", "{email}")
    table.append(person(1))
    manager.close("d")
    db = manager.database("d", path)
    db.drop("old")
    assert db.tables() == []
    assert db.table("old").records() == 0
    with pytest.raises(NoSuchTable):
        db.drop("never-existed")


def test_close_then_use_raises_database_closed(manager: Manager, db: Database, table: Table) -> None:
    doc = table.append(person(1))
    db.close()
    assert db.closed and "test" not in manager
    for call in [
        lambda: table.append(person(2)),
        lambda: db.write_transaction(),
        lambda: db.read_transaction(),
        lambda: table.get(doc.key),
        lambda: list(table.find()),
        lambda: table.records(),
        lambda: db.tables(),
    ]:
        with pytest.raises(DatabaseClosed):
            call()
    db.close()  # closing twice is harmless


def test_closed_database_reopens_with_its_data(manager: Manager, tmp_path: Path) -> None:
    path = str(tmp_path / "c")
    db = manager.database("c", path)
    key = db.table("t").append({"a": 1}).key
    manager.close("c")
    assert db.closed
    assert manager.database("c", path).table("t").get(key)["a"] == 1


def test_storage_used(db: Database, table: Table) -> None:
    used_before, _ = db.storage_used()
    table.append_many(person(i) for i in range(2000))
    used_after, on_disk = db.storage_used()
    assert used_after > used_before + 2000 * 50
    assert on_disk > 0


def test_map_grows_automatically(manager: Manager, tmp_path: Path) -> None:
    db = manager.database("small", str(tmp_path / "small"), config={"map_size": 256 * 1024})
    table = db.table("t")
    table.ensure("by_email", "{email}")
    for i in range(3000):
        table.append(person(i))
    assert table.records() == 3000
    assert db._env.info()["map_size"] > 256 * 1024


def test_append_many_from_a_generator_survives_map_growth(manager: Manager, tmp_path: Path) -> None:
    db = manager.database("small", str(tmp_path / "small"), config={"map_size": 256 * 1024})
    table = db.table("t")
    docs = table.append_many(person(i) for i in range(5000))
    assert len(docs) == 5000
    assert table.records() == 5000


def test_durable_config(manager: Manager, tmp_path: Path) -> None:
    durable = manager.database("durable", str(tmp_path / "durable"), config={"durable": True})
    assert durable.config.durable and durable._env.flags()["sync"] and durable._env.flags()["metasync"]
    durable.table("t").append({"a": 1})
    assert durable.table("t").records() == 1
    default = manager.database("default", str(tmp_path / "default"))
    assert not default.config.durable and not default._env.flags()["sync"]


@pytest.mark.parametrize(
    "config",
    [{"durable": "yes"}, {"nonsense": 1}, {"map_size": -1}, {"map_size": True}, "durable", {"journal": 3}],
)
def test_bad_config(manager: Manager, tmp_path: Path, config: object) -> None:
    with pytest.raises(ConfigError):
        manager.database("bad", str(tmp_path / "bad"), config=config)  # type: ignore[arg-type]


def test_wrong_transaction_types(manager: Manager, db: Database, table: Table, tmp_path: Path) -> None:
    other = manager.database("other", str(tmp_path / "other"))
    with pytest.raises(TransactionError):
        table.append(person(1), txn="not a txn")  # type: ignore[arg-type]
    with db.read_transaction() as read, pytest.raises(TransactionError):
        table.append(person(1), txn=read)
    with other.write_transaction() as foreign, pytest.raises(TransactionError):
        table.append(person(1), txn=foreign)
    with db.write_transaction() as finished:
        pass
    with pytest.raises(TransactionError):
        table.append(person(1), txn=finished)
    with pytest.raises(TransactionError):
        table.get("ffffffffffffffffffffffff", txn=finished)
    assert table.records() == 0


# --- compression ---------------------------------------------------------------------------------------------
def test_compression_without_dictionary_round_trips(db: Database, table: Table) -> None:
    docs = [table.append(person(i)) for i in range(50)]
    table.compress(3)
    more = [table.append(person(i)) for i in range(50, 60)]
    every = docs + more
    assert [d.doc for d in table.find()] == [d.doc for d in every]
    assert table.get(docs[7].key) == docs[7]
    assert table.seek_one("by_email", person(55)) == more[5]
    with db.read_transaction() as read:
        stored = read.txn.get(docs[7].oid, db=table._dbi)
    assert not stored.startswith(b"{")  # really compressed on disk


def test_compression_with_trained_dictionary_round_trips_and_reopens(manager: Manager, tmp_path: Path) -> None:
    path = str(tmp_path / "z")
    table = manager.database("z", path).table("t")
    table.ensure("by_email", "{email}")
    docs = [table.append(person(i)) for i in range(300)]
    size_plain = sum(len(v) for v in raw_values(table))
    table.compress(3, train=True, dictionary_size=4096)
    assert sum(len(v) for v in raw_values(table)) < size_plain * 0.7
    doc = docs[10]
    doc["age"] = 99
    table.save(doc)
    manager.close("z")
    table = manager.database("z", path).table("t")
    assert table.get(doc.key)["age"] == 99
    assert [d.key for d in table.find()] == [d.key for d in docs]
    assert table.seek_one("by_email", person(200)).key == docs[200].key
    table.append(person(1000))
    assert table.records() == 301


def test_switching_compression_off(db: Database) -> None:
    table = db.table("t")
    docs = [table.append(person(i)) for i in range(100)]
    table.compress(5, train=True, dictionary_size=4096)
    table.compress(None)
    assert all(value.startswith(b"{") for value in raw_values(table))
    assert [d.doc for d in table.find()] == [d.doc for d in docs]


def test_bad_compression_settings(db: Database) -> None:
    table = db.table("t")
    with pytest.raises(ValueError):
        table.compress(0)
    table.append({"a": 1})
    with pytest.raises(ValueError):
        table.compress(3, train=True)  # too few records to train on
    assert table.first()["a"] == 1


def raw_values(table: Table) -> list[bytes]:
    with table._db.read_transaction() as read:
        return [bytes(value) for _key, value in read.txn.cursor(db=table._dbi)]


@pytest.mark.parametrize("version", ["2.2.1", "2.2.0", "2.1.1", "1.4.1", "0.99"])
def test_a_py_lmdb_that_breaks_map_growth_is_refused(version: str) -> None:
    # 2.2.x invalidates open handles when the map grows (test_map_grows_automatically fails on it); older ones can
    # crash resizing under another thread's reads. An install that skipped pyproject.toml's bound gets told why.
    with pytest.raises(UnsupportedDependency, match=r"py-lmdb >= 2\.3, found " + version.replace(".", r"\.")):
        check_lmdb_version(version)
    assert issubclass(UnsupportedDependency, ImportError)  # (what an import failure is expected to raise)


@pytest.mark.parametrize("version", ["2.3.0", "2.10.0", "3.0.0", "12.1", lmdb.__version__])
def test_a_py_lmdb_from_2_3_is_accepted(version: str) -> None:
    check_lmdb_version(version)
