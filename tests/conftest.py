"""Fixtures shared by every test package: a manager that closes its databases, a database, a table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynndb import Database, Manager, Table
from tests.mesh.conftest import Mesh


@pytest.fixture
def manager() -> Iterator[Manager]:
    """A Manager whose databases are all closed at teardown."""
    with Manager() as opened:
        yield opened


@pytest.fixture
def db(manager: Manager, tmp_path: Path) -> Database:
    """An empty database in a temporary directory."""
    return manager.database("test", str(tmp_path / "db"))


@pytest.fixture
def table(db: Database) -> Table:
    """Table 'people' with a unique index on email and a duplicates index on age."""
    people = db.table("people")
    people.ensure("by_email", "{email}")
    people.ensure("by_age", "{age}", duplicates=True)
    return people


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    """In-process nodes on free ports, all stopped at teardown; fails if a pynndb thread outlives them."""
    threads_before = set(threading.enumerate())
    created = Mesh()
    try:
        yield created
    finally:
        created.close()
    leaked = [
        t for t in threading.enumerate() if t not in threads_before and t.is_alive() and t.name.startswith("pynndb-")
    ]
    assert not leaked, f"threads left running: {leaked}"
