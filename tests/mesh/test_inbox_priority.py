"""Live entries of one database never wait behind another database's snapshot on the same nodes: a step takes the
live topic frames first, then about one snapshot chunk (`replication_inbox.Inbox`). Before, both waited in one
queue in arrival order, and a live write lagged up to 78 ms while 200k documents of another database were synced."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pynndb import Manager
from pynndb.mesh import replicator
from pynndb.mesh.replication_inbox import TARGETED, TOPIC, Inbox
from pynndb.replication import diff, snapshot_intake
from tests.helpers import person, wait_until
from tests.mesh.conftest import Mesh, linked_pair


def test_a_step_takes_live_frames_first_then_about_one_chunk() -> None:
    inbox = Inbox()
    for number in range(3):
        inbox.targeted(b"c%d" % number + b"x" * 999, "a")  # three chunks of 1000 bytes, queued first
    inbox.topic(b"live 1", "a")
    inbox.targeted(b"request", "a")
    inbox.topic(b"live 2", "a")
    taken, more = inbox.take(100, 1 << 20, 1000)
    assert [(kind, payload[:6]) for kind, payload, _origin in taken] == [
        (TOPIC, b"live 1"),
        (TOPIC, b"live 2"),
        (TARGETED, b"c0" + b"x" * 4),
    ]
    assert more
    taken, more = inbox.take(100, 1 << 20, 1000)
    assert [payload[:2] for _kind, payload, _origin in taken] == [b"c1"] and more
    taken, more = inbox.take(100, 1 << 20, 1000)
    assert [payload[:2] for _kind, payload, _origin in taken] == [b"c2"] and more
    taken, more = inbox.take(100, 1 << 20, 1000)
    assert [payload for _kind, payload, _origin in taken] == [b"request"] and not more


def test_live_entries_overtake_another_databases_snapshot(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodea, nodeb, cmd, peer = linked_pair(mesh)
    # A: replicated and live. B: a source whose journal no longer starts at 1, so its replica takes a snapshot.
    live = manager.database("live", str(tmp_path / "live"), config={"replication": True})
    live_copy = manager.database("live-copy", str(tmp_path / "live-copy"))
    big = manager.database("big", str(tmp_path / "big"), config={"replication": True, "journal": {"max_entries": 50}})
    big_copy = manager.database("big-copy", str(tmp_path / "big-copy"))
    people = big.table("people")
    for first in range(0, 3000, 20):
        people.append_many([person(number) for number in range(first, first + 20)])
    for db in (live, big):
        cmd.call("REGISTER", {"path": db.path})
    events = live.table("events")
    events.append({"n": 0})
    cmd.call("REPLICATE", {"path": live_copy.path, "uuid": live.replication.uuid}, target=peer)
    wait_until(lambda: "events" in live_copy.tables() and live_copy.table("events").records() == 1, timeout=10)

    service = nodea.replication
    assert service is not None
    source = service.holdings.source(big.replication.uuid)
    assert source is not None
    source.publisher.chunk_bytes = 16 << 10  # many small chunks
    chunk = snapshot_intake.chunk

    def slow_chunk(*args: Any) -> Any:
        time.sleep(0.02)  # each chunk applies slowly: the snapshot takes a while on node b
        return chunk(*args)

    monkeypatch.setattr(snapshot_intake, "chunk", slow_chunk)
    # A step takes about one snapshot chunk (1 MiB) after the live frames; these chunks are small, so one a step too.
    monkeypatch.setattr(replicator, "TARGETED_SLICE_BYTES", 1)
    served = service.counters["requests_served"]
    cmd.call("REPLICATE", {"path": big_copy.path, "uuid": big.replication.uuid}, target=peer)
    wait_until(lambda: service.counters["requests_served"] > served, timeout=10)  # the whole snapshot is sent
    oid = events.append({"n": 1}).oid  # sent after every chunk of it
    wait_until(lambda: live_copy.table("events").get(oid) is not None, timeout=10)
    mark = big_copy.replication.marks().get(big.replication.uuid, 0)
    assert mark < big.replication.sequence, "the live write waited for the other database's whole snapshot"
    wait_until(lambda: big_copy.replication.marks().get(big.replication.uuid, 0) == big.replication.sequence, 30)
    assert diff(big, big_copy) == {} and diff(live, live_copy) == {}
