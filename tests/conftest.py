"""Fixtures shared by every test package: a manager that closes its databases, a database, a table."""

from __future__ import annotations

import os
import tempfile
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


def _children() -> set[int]:
    """PIDs of this process's live children (Linux /proc; empty elsewhere)."""
    found = set()
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                found.add(int(entry))
    return found


def _our_temp_dirs() -> set[str]:
    return {name for name in os.listdir(tempfile.gettempdir()) if name.startswith("pynndb-")}


@pytest.fixture(autouse=True, scope="session")
def nothing_left_behind() -> Iterator[None]:
    """The whole suite leaves no child process running and no pynndb-* temporary directory behind."""
    children, directories = _children(), _our_temp_dirs()
    yield
    left = _children() - children
    assert not left, f"child processes left running: {sorted(left)}"
    stray = _our_temp_dirs() - directories
    assert not stray, f"temporary directories left behind: {sorted(stray)}"
