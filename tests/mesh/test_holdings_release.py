"""A node's holdings release a database once it is neither served nor hosted and nothing uses it any more (answers,
digests and commands lease it), on the service's step (`settle`), never under a use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pynndb import Manager
from pynndb.core import registry
from pynndb.mesh.replication_holdings import Holdings
from pynndb.mesh.watch import Waker


@pytest.fixture
def holdings() -> Iterator[Holdings]:
    waker = Waker()
    held = Holdings(waker)
    try:
        yield held
    finally:
        held.release()
        waker.close()


def journaled(tmp_path: Path, name: str) -> str:
    path = str(tmp_path / name)
    with Manager() as manager:
        manager.database(path, config={"replication": True}).table("people").append({"name": "Ann"})
    return path


def test_an_unserved_database_stays_open_while_leased_and_is_released_after(holdings: Holdings, tmp_path: Path) -> None:
    path = journaled(tmp_path, "source")
    with holdings.open_checked(path, lambda db: None) as db:
        assert holdings.serve(db)
    holdings.lease(db)  # an answer under way, say
    assert holdings.unserve(db)
    holdings.settle()
    assert not db.closed and registry.find(path) is db  # the use goes on
    assert len(db["people"]) == 1
    holdings.unlease(db)
    holdings.settle()
    assert db.closed and registry.find(path) is None
    with holdings.opened(path) as found:
        assert found is None
    with holdings.open_checked(path, lambda db: None) as again:
        assert again is not db and len(again["people"]) == 1  # opened anew


def test_a_database_served_again_before_the_step_is_not_released(holdings: Holdings, tmp_path: Path) -> None:
    path = journaled(tmp_path, "source")
    with holdings.open_checked(path, lambda db: None) as db:
        holdings.serve(db)
    holdings.unserve(db)
    with holdings.open_checked(path, lambda db: None) as same:  # REGISTER again, before the service's step
        assert same is db
        holdings.serve(same)
    holdings.settle()
    assert not db.closed
    with holdings.leased(db.replication.uuid) as found:  # DIGEST and DUMP find it by uuid
        assert found is db


def test_a_command_that_holds_the_database_keeps_it_open_until_it_ends(holdings: Holdings, tmp_path: Path) -> None:
    path = journaled(tmp_path, "source")
    with holdings.open_checked(path, lambda db: None) as db:
        holdings.serve(db)
    with holdings.opened(path) as held:  # UNREGISTER's handler: unserves, then still reads the database
        assert held is db
        holdings.unserve(db)
        holdings.settle()  # the service's step runs meanwhile
        assert not db.closed and db.replication.uuid
    holdings.settle()
    assert db.closed
    with holdings.leased_snapshot() as (databases, sources, hosted):
        assert (databases, sources, hosted) == ([], [], [])
