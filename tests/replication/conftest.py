"""Fixtures for replication tests: replicated databases in a temporary directory, and helpers that drive the
sans-IO engine by hand (deliver messages, serve requests until nothing is pending)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from pynndb import Database, Manager
from pynndb.core.entries import decode_body
from pynndb.replication import Publisher, Replica, Request
from pynndb.replication.messages import Message


@pytest.fixture
def open_db(manager: Manager, tmp_path: Path) -> Callable[..., Database]:
    """Open (or create) a replicated database `name` under tmp_path: ``open_db('a', max_entries=10)``."""

    def opener(name: str, replication: bool | None = True, **journal: Any) -> Database:
        config: dict[str, Any] = {}
        if replication is not None:
            config["replication"] = replication
        if journal:
            config["journal"] = journal
        return manager.database(name, str(tmp_path / name), config=config or None)

    return opener


def documents(db: Database, table: str) -> dict[str, dict[str, Any]]:
    """Key -> fields of every document of a table ({} when it does not exist)."""
    if table not in db.tables():
        return {}
    return {doc.key: doc.doc for doc in db[table].find()}


def ops_of(db: Database, start: int = 1) -> list[list[Any]]:
    """The ops of every retained journal entry from `start`, one list per entry."""
    return [decode_body(body).ops for _seq, _clock, body in db.replication.entries(start, 1_000_000)]


def deliver(replica: Replica, messages: Iterable[Message]) -> list[Request]:
    """Give messages to a replica; return every request it made (not its acknowledgements of snapshot chunks: the
    flow control they feed is the serving node's, tests/mesh/test_snapshot_flow.py)."""
    requests: list[Request] = []
    for message in messages:
        requests.extend(reply for reply in replica.receive(message) if isinstance(reply, Request))
    return requests


def serve(publisher: Publisher, replica: Replica, requests: list[Request], rounds: int = 100) -> None:
    """Answer a replica's requests (and the requests those answers cause) until none is left."""
    for _round in range(rounds):
        if not requests:
            return
        pending, requests = requests, []
        for request in pending:
            requests.extend(deliver(replica, publisher.serve(request)))
    raise AssertionError(f"requests still pending after {rounds} rounds: {requests}")
