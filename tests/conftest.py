"""Fixtures shared by every test package: a manager that closes its databases, a database, a table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pynndb import Database, Manager, Table


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
