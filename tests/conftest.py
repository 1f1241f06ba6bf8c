"""Fixtures shared by every test package: a manager that closes its databases, a database, a table."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pynndb import Database, Manager, Table
from pynndb.mesh.controller import Controller
from tests.helpers import wait_until
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


@contextmanager
def no_thread_left() -> Iterator[None]:
    """Fail if a pynndb thread started inside the block outlives it."""
    threads_before = set(threading.enumerate())
    yield
    leaked = [
        t for t in threading.enumerate() if t not in threads_before and t.is_alive() and t.name.startswith("pynndb-")
    ]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def pair(mesh: Mesh) -> tuple[Controller, Controller]:
    """Two linked in-process nodes 'a' and 'b' that see each other."""
    a, b = mesh.node("a", heartbeat=0.2), mesh.node("b", heartbeat=0.2)
    a.connect(b)
    wait_until(lambda: mesh.converged([a, b]), timeout=10)
    return a, b


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    """In-process nodes on free ports, all stopped at teardown; fails if a pynndb thread outlives them."""
    with no_thread_left():
        created = Mesh()
        try:
            yield created
        finally:
            created.close()


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


@pytest.fixture(autouse=True, scope="session")
def nothing_left_behind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The whole suite leaves no child process running and no temporary directory behind.

    Tests and the processes they start get a private temporary directory (TMPDIR), which must be empty at the end;
    other programs on the machine cannot disturb the check."""
    children = _children()
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path directories stay where pytest keeps them
    private = tempfile.mkdtemp(prefix="pynndb-tests-")
    saved_environ, saved_tempdir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = private
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        if saved_environ is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_environ
        stray = sorted(os.listdir(private))
        shutil.rmtree(private, ignore_errors=True)
    left = _children() - children
    assert not left, f"child processes left running: {sorted(left)}"
    assert not stray, f"temporary files or directories left behind: {stray}"
