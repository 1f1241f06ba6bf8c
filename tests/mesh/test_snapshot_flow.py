"""Flow control of snapshots: a replica that offers a window acknowledges the chunks it took, and the serving node
sends at most `window` chunks past the last one acknowledged (mesh/replication_serving.py). Before, the serving
thread read the whole database as fast as it could and everything the replica had not written yet waited in the
queues of both nodes: memory that grew with the database (a third of a 400k-document snapshot in the replica's node).

The server's tests drive a real `Publisher` over a database on disk; its frames go to a list instead of a node.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pynndb import Database, Manager
from pynndb.mesh import replication_serving
from pynndb.mesh.replication_serving import SourceServer
from pynndb.replication import Publisher, Replica, Request, diff, snapshot_intake
from pynndb.replication.messages import Entries, SnapshotAck, SnapshotBegin, SnapshotChunk, SnapshotEnd, decode
from tests.helpers import person, wait_until
from tests.mesh.conftest import Mesh, linked_pair

REPLICA = "00000000-0000-4000-8000-000000000001"
DOCUMENTS = 600


class Sent:
    """The frames a server sent, decoded, as they arrive on its serving threads."""

    def __init__(self) -> None:
        self.frames: list[tuple[bytes, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, origin: str, frame: bytes) -> None:
        with self.lock:
            self.frames.append((frame[:36], decode(frame, 36)))

    def messages(self, stream: int, replica: str = REPLICA) -> list[Any]:
        with self.lock:
            return [m for to, m in self.frames if to == replica.encode() and getattr(m, "stream", None) == stream]

    def entries(self, replica: str = REPLICA) -> list[Entries]:
        with self.lock:
            return [m for to, m in self.frames if to == replica.encode() and isinstance(m, Entries)]

    def chunks(self, stream: int) -> list[int]:
        return [m.number for m in self.messages(stream) if isinstance(m, SnapshotChunk)]

    def ended(self, stream: int) -> bool:
        return any(isinstance(m, SnapshotEnd) for m in self.messages(stream))


@pytest.fixture
def source(manager: Manager, tmp_path: Path) -> Database:
    db = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    people = db.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.append_many([person(number) for number in range(DOCUMENTS)])
    return db


@pytest.fixture
def server() -> Any:
    counters: dict[str, int] = {}
    sent = Sent()
    made = SourceServer("t", sent, counters)
    try:
        yield made, sent, counters
    finally:
        made.stop()


def snapshot_request(db: Database, stream: int, window: int) -> Request:
    return Request(db.replication.uuid, REPLICA, 1, True, None, stream, window)


def ack(db: Database, stream: int, number: int) -> SnapshotAck:
    return SnapshotAck(db.replication.uuid, REPLICA, stream, number)


def test_an_answer_sends_at_most_its_window_past_the_last_acknowledged_chunk(source: Database, server: Any) -> None:
    made, sent, counters = server
    publisher = Publisher(source, chunk_bytes=2000)  # small chunks: many of them
    made.submit(publisher, snapshot_request(source, 7, 4), "nodeb")
    wait_until(lambda: counters["snapshot_waits"] == 1, timeout=10)
    begin = sent.messages(7)[0]
    assert isinstance(begin, SnapshotBegin) and begin.window == 4  # the replica learns the source keeps to it
    assert sent.chunks(7) == [1, 2, 3, 4], "it waits after the window's chunks"
    made.acknowledge(ack(source, 7, 2))
    wait_until(lambda: counters["snapshot_waits"] == 2, timeout=10)
    assert sent.chunks(7) == [1, 2, 3, 4, 5, 6]
    made.acknowledge(ack(source, 8, 6))  # another stream's acknowledgement does not move this answer
    made.acknowledge(ack(source, 7, 1))  # nor one behind what was acknowledged
    assert counters["snapshot_acks"] == 3
    assert sent.chunks(7) == [1, 2, 3, 4, 5, 6] and counters["snapshot_waits"] == 2
    for _round in range(1000):  # the replica acknowledges every chunk it gets, as it takes them
        if sent.ended(7):
            break
        taken = len(sent.chunks(7))
        made.acknowledge(ack(source, 7, taken))
        wait_until(lambda taken=taken: sent.ended(7) or len(sent.chunks(7)) > taken, timeout=10)
    chunks = sent.chunks(7)
    assert chunks == list(range(1, len(chunks) + 1)) and len(chunks) > 20
    assert sent.messages(7)[-1].chunks == len(chunks)
    wait_until(lambda: counters["requests_served"] == 1, timeout=10)
    assert counters["answers_ended"] == 0


def test_a_request_without_a_window_is_answered_at_once(source: Database, server: Any) -> None:
    made, sent, counters = server
    made.submit(Publisher(source, chunk_bytes=2000), snapshot_request(source, 3, 0), "nodeb")
    wait_until(lambda: sent.ended(3), timeout=10)
    assert sent.messages(3)[0].window == 0 and len(sent.chunks(3)) > 20
    assert counters["snapshot_waits"] == 0 and counters["requests_served"] == 1


class HandedSent(Sent):
    """A node's loop that has not run yet: each frame's marker stays unset until the test sets it."""

    def __init__(self) -> None:
        super().__init__()
        self.markers: list[threading.Event] = []

    def __call__(self, origin: str, frame: bytes) -> threading.Event:  # type: ignore[override]
        super().__call__(origin, frame)
        marker = threading.Event()
        with self.lock:
            self.markers.append(marker)
        return marker

    def count(self) -> int:
        with self.lock:
            return len(self.frames)


def test_an_answer_sends_its_next_frame_once_the_loop_took_the_previous_one(
    source: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop needs the GIL to send a frame (and every other message of its node): the serving thread waits
    for the loop's marker of frame n before it sends frame n + 1, and only for HAND_OFF if the loop never runs."""
    monkeypatch.setattr(replication_serving, "HAND_OFF", 0.3)
    counters: dict[str, int] = {}
    sent = HandedSent()
    made = SourceServer("t", sent, counters)
    try:
        made.submit(Publisher(source, chunk_bytes=2000), snapshot_request(source, 3, 0), "nodeb")
        wait_until(lambda: sent.count() == 1, timeout=10)
        time.sleep(0.2)  # (a wrong server would have sent its next frames by now: there is no event to wait for)
        assert sent.count() == 1, "the second frame waits for the loop to take the first"
        for number in range(1, 4):
            sent.markers[number - 1].set()  # the loop ran: the next frame goes, and only it
            wait_until(lambda number=number: sent.count() == number + 1, timeout=10)
            assert sent.count() == number + 1
        # A loop that never runs again (a stopping node) holds each frame up for HAND_OFF at most.
        started = time.monotonic()
        wait_until(lambda: sent.count() >= 6, timeout=10)
        assert time.monotonic() - started >= 2 * replication_serving.HAND_OFF * 0.9
        made.stop()  # a stopping node: the answer ends at its next frame instead of waiting for each
        assert counters["answers_ended"] == 1 and not sent.ended(3)
    finally:
        for marker in list(sent.markers):
            marker.set()
        made.stop()


def test_a_newer_request_of_the_same_replica_ends_the_answer_under_way(source: Database, server: Any) -> None:
    made, sent, counters = server
    publisher = Publisher(source, chunk_bytes=2000)
    made.submit(publisher, snapshot_request(source, 1, 2), "nodeb")
    wait_until(lambda: counters["snapshot_waits"] == 1, timeout=10)
    made.submit(publisher, snapshot_request(source, 2, 0), "nodeb")  # asked again (say, after a silence)
    wait_until(lambda: counters["answers_ended"] == 1 and sent.ended(2), timeout=10)
    assert sent.chunks(1) == [1, 2] and not sent.ended(1)
    made.acknowledge(ack(source, 1, 2))  # the old answer's acknowledgement: it stays ended
    assert sent.chunks(1) == [1, 2]


def test_an_answer_ends_when_its_requester_goes_down_or_the_node_stops(source: Database, server: Any) -> None:
    made, sent, counters = server
    publisher = Publisher(source, chunk_bytes=2000)
    made.submit(publisher, snapshot_request(source, 1, 2), "nodeb")
    wait_until(lambda: counters["snapshot_waits"] == 1, timeout=10)
    made.forget("nodec")  # another node: nothing changes
    made.forget("nodeb")
    wait_until(lambda: counters["answers_ended"] == 1, timeout=10)
    other = Request(source.replication.uuid, "00000000-0000-4000-8000-000000000002", 1, True, None, 5, 2)
    made.submit(publisher, other, "nodec")
    wait_until(lambda: counters["snapshot_waits"] == 2, timeout=10)
    started = time.monotonic()
    made.stop()  # waits for its threads: the waiting answer ends at once, not after STALL
    assert time.monotonic() - started < replication_serving.STALL / 2
    assert counters["answers_ended"] == 2


def test_a_gap_repair_never_waits_behind_snapshots_waiting_for_their_replicas(source: Database, server: Any) -> None:
    made, sent, counters = server
    publisher = Publisher(source, chunk_bytes=2000)
    waiting = replication_serving.WORKERS + 1  # more than the threads that answer gap repairs
    for number in range(waiting):
        replica = f"00000000-0000-4000-8000-{number + 10:012}"
        made.submit(publisher, Request(source.replication.uuid, replica, 1, True, None, 1, 2), f"node{number}")
    wait_until(lambda: counters["snapshot_waits"] == waiting, timeout=10)  # every one of them holds its thread
    made.submit(publisher, Request(source.replication.uuid, REPLICA, 1, False, None, 4, 16), "nodeb")
    wait_until(lambda: sent.entries(), timeout=10)
    (entries,) = sent.entries()
    assert entries.entries[0][0] == 1
    assert entries.last == source.replication.sequence


def test_an_answer_nobody_acknowledges_gives_up(
    source: Database, server: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made, sent, counters = server
    monkeypatch.setattr(replication_serving, "STALL", 0.3)
    made.submit(Publisher(source, chunk_bytes=2000), snapshot_request(source, 1, 3), "nodeb")
    wait_until(lambda: counters["answers_ended"] == 1, timeout=10)
    assert sent.chunks(1) == [1, 2, 3] and not sent.ended(1)
    assert "no acknowledgement from nodeb" in caplog.text


def test_a_replica_acknowledges_as_it_takes_chunks_when_the_source_keeps_a_window(
    manager: Manager, tmp_path: Path, source: Database
) -> None:

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    target = manager.database("target", str(tmp_path / "target"))
    replica = Replica(target, source.replication.uuid, clock=clock, request_timeout=2.0).register()
    (request,) = replica.start()
    assert isinstance(request, Request) and request.window == snapshot_intake.WINDOW
    messages = list(Publisher(source, chunk_bytes=2000).serve(request))  # the journal starts at 1: entries
    assert not any(isinstance(m, SnapshotChunk) for m in messages)
    (again,) = replica.resync()
    answer = list(Publisher(source, chunk_bytes=2000).serve(again))
    begin, chunks, end = answer[0], answer[1:-1], answer[-1]
    assert isinstance(begin, SnapshotBegin) and begin.window == snapshot_intake.WINDOW and len(chunks) > 20
    assert replica.receive(begin) == []
    acks: list[Any] = []
    for chunk in chunks[:10]:
        acks += replica.receive(chunk)
    every = snapshot_intake.WINDOW // 4
    assert acks == [SnapshotAck(begin.source, target.replication.uuid, begin.stream, n) for n in (every, 2 * every)]
    clock.now = snapshot_intake.ACK_AGAIN / 2
    assert replica.tick() == []
    clock.now = snapshot_intake.ACK_AGAIN + 0.01  # nothing came since: the acknowledgement again (one may be lost)
    assert replica.tick() == [SnapshotAck(begin.source, target.replication.uuid, begin.stream, 10)]
    assert replica.tick() == []
    for chunk in chunks[10:]:
        replica.receive(chunk)
    assert replica.receive(end) == [] and replica.state == "live"
    assert diff(source, target) == {}


def test_a_replica_of_a_source_that_keeps_no_window_does_not_acknowledge(manager: Manager, tmp_path: Path) -> None:
    db = manager.database("plain", str(tmp_path / "plain"), config={"replication": True})
    db.table("people").append_many([person(number) for number in range(300)])

    target = manager.database("target", str(tmp_path / "target"))
    replica = Replica(target, db.replication.uuid).register()
    (request,) = replica.resync()
    old_source = Request(request.source, request.replica, request.start, True, None, request.stream)  # no window
    answer = Publisher(db, chunk_bytes=500).serve(old_source)
    replies = [reply for message in answer for reply in replica.receive(message)]
    assert replies == [] and replica.state == "live" and diff(db, target) == {}


def test_a_full_sync_between_nodes_keeps_the_replicas_queue_within_the_window(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodea, nodeb, cmd, peer = linked_pair(mesh)
    big = manager.database("big", str(tmp_path / "big"), config={"replication": True, "journal": {"max_entries": 50}})
    copy = manager.database("copy", str(tmp_path / "copy"))
    people = big.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    for first in range(0, 3000, 20):  # more commits than the journal keeps: a new replica needs a snapshot
        people.append_many([person(number) for number in range(first, first + 20)])
    cmd.call("REGISTER", {"path": big.path})
    serving, hosting = nodea.replication, nodeb.replication
    assert serving is not None and hosting is not None
    source = serving.holdings.source(big.replication.uuid)
    assert source is not None
    source.publisher.chunk_bytes = 8 << 10  # many small chunks (~40)
    queued: list[int] = []
    chunk = snapshot_intake.chunk

    def slow_chunk(*args: Any) -> Any:
        queued.append(hosting._inbox._targeted.qsize())  # what waits behind the chunk being taken
        time.sleep(0.01)  # the replica takes its chunks more slowly than the source reads them
        return chunk(*args)

    monkeypatch.setattr(snapshot_intake, "chunk", slow_chunk)
    cmd.call("REPLICATE", {"path": copy.path, "uuid": big.replication.uuid}, target=peer)
    wait_until(lambda: copy.replication.marks().get(big.replication.uuid, 0) == big.replication.sequence, 30)
    assert diff(big, copy) == {}
    assert len(queued) > 2 * snapshot_intake.WINDOW
    # Before: the source sent every chunk at once, and they all waited on node b (~40 here).
    assert max(queued) <= snapshot_intake.WINDOW, queued
    assert serving.counters["snapshot_waits"] > 0 and serving.counters["snapshot_acks"] >= len(queued) // 4 - 1
    assert serving.counters["answers_ended"] == 0


def test_a_replica_on_the_source_node_itself_takes_a_flow_controlled_snapshot(
    mesh: Mesh, manager: Manager, tmp_path: Path
) -> None:
    """Source and replica on one node: the answer's chunks and the replica's acknowledgements never leave the node."""
    node = mesh.node("solo")
    cmd = mesh.plugin(node)
    big = manager.database("big", str(tmp_path / "big"), config={"replication": True, "journal": {"max_entries": 50}})
    copy = manager.database("copy", str(tmp_path / "copy"))
    people = big.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    for first in range(0, 3000, 20):
        people.append_many([person(number) for number in range(first, first + 20)])
    cmd.call("REGISTER", {"path": big.path})
    service = node.replication
    assert service is not None
    source = service.holdings.source(big.replication.uuid)
    assert source is not None
    source.publisher.chunk_bytes = 8 << 10  # ~40 chunks: more than the window
    cmd.call("REPLICATE", {"path": copy.path, "uuid": big.replication.uuid})
    wait_until(lambda: copy.replication.marks().get(big.replication.uuid, 0) == big.replication.sequence, 30)
    assert diff(big, copy) == {}
    assert service.counters["snapshot_acks"] >= 40 // (snapshot_intake.WINDOW // 4) - 1
    assert service.counters["answers_ended"] == 0
