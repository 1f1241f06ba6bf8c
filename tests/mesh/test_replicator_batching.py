"""The replication service applies live entries of one source that arrived together in one transaction."""

from __future__ import annotations

from pathlib import Path

from pynndb import Manager
from pynndb.replication.messages import Entries, encode
from tests.helpers import person, wait_until
from tests.mesh.conftest import Mesh


def test_entries_that_arrived_together_are_applied_in_one_transaction(
    mesh: Mesh, manager: Manager, tmp_path: Path
) -> None:
    """Regression: a replica behind a burst of 100 single-document commits applied them one message (one
    transaction, one wake-up) at a time, and the burst's last write waited for all of them."""
    node = mesh.node("solo")
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    replica = manager.database("replica", str(tmp_path / "replica"), config={"replication": True})
    source.table("people")
    first = source.replication.sequence
    for number in range(50):
        source.table("people").append(person(number))  # one commit, one journal entry each
    entries = source.replication.entries(1)
    assert len(entries) == first + 50
    service = node.replication
    assert service is not None
    db = service.open(replica.path)
    service.replicate(db, source.replication.uuid, "one-way")  # no source served here: nothing arrives by itself
    commits: list[int] = []
    replica.add_listener(lambda: commits.append(1))  # called after each write transaction committed here
    frames = [("topic", encode(Entries(source.replication.uuid, [entry], entry[0])), node.id) for entry in entries]
    service.take(frames)  # what the service thread does with a full inbox
    wait_until(lambda: replica.table("people").records() == 50, timeout=5)
    assert len(commits) == 1  # all 51 source entries in one transaction
    assert replica.replication.marks()[source.replication.uuid] == entries[-1][0]
