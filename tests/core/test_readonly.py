"""A database opened with ``readonly=True`` reads everything, sees later commits, and refuses every write."""

from __future__ import annotations

from pathlib import Path

import pytest

from pynndb import Manager
from pynndb.core.database import Database
from pynndb.errors import DatabaseError, ReadOnlyDatabase


def test_readonly_open_reads_and_refuses_writes(manager: Manager, tmp_path: Path) -> None:
    writer = manager.database("w", str(tmp_path / "db"), config={"replication": True})
    people = writer.table("people")
    people.ensure("by_name", "{name}")
    people.append({"name": "ada"})
    # A second environment on the same directory in one process would break LMDB's locks: use a copy.
    writer.copy(str(tmp_path / "copy"))
    reader = Database("r", str(tmp_path / "copy"), {"readonly": True})
    try:
        assert reader.tables() == ["people"]
        assert reader.replication.uuid == writer.replication.uuid
        assert [doc["name"] for doc in reader["people"].find("by_name")] == ["ada"]
        with pytest.raises(ReadOnlyDatabase):
            reader["people"].append({"name": "bob"})
        with pytest.raises(ReadOnlyDatabase):
            reader.table("new")
    finally:
        reader.close()


def test_readonly_open_of_a_missing_database_fails(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no database"):
        Database("r", str(tmp_path / "none"), {"readonly": True})
    assert not (tmp_path / "none").exists()
