"""The replication service has no thread of its own: its steps run on the node's socket loop (no hand-off between
a frame, its apply and what is published), and whole-database work (a replica's digest) runs on a worker, never on
the loop."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pynndb import Manager
from pynndb.core.database import Database
from pynndb.core.doorbell import bell_directory
from pynndb.core.storage import Storage
from pynndb.mesh import divergence, replicator
from pynndb.mesh.plugin import Plugin
from pynndb.mesh.replication_holdings import Holdings, Hosted
from pynndb.mesh.replicator import ReplicationService
from pynndb.mesh.watch import Waker
from tests.helpers import person, wait_until
from tests.mesh.conftest import Mesh


def replicated_pair(
    mesh: Mesh, manager: Manager, tmp_path: Path
) -> tuple[Database, Database, Plugin, str, dict[str, Any]]:
    """Nodes a - b, a source served by a, replicated into a database on b: (source, replica, a Plugin on a, b's
    id, the REPLICATE params)."""
    nodea, nodeb = mesh.node("a"), mesh.node("b")
    nodea.connect(nodeb)
    source = manager.database("s", str(tmp_path / "s"), config={"replication": True})
    replica = manager.database("r", str(tmp_path / "r"), config={"replication": True})
    cmd = mesh.plugin(nodea)
    cmd.call("REGISTER", {"path": source.path})
    peer = cmd.call("LOOKUP", {"name": "b"})["peer"]
    params = {"path": replica.path, "uuid": source.replication.uuid}
    cmd.call("REPLICATE", params, target=peer)
    return source, replica, cmd, peer, params


def test_steps_run_on_the_loop_thread_and_no_service_thread_exists(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    step = ReplicationService._step

    def recorded(service: ReplicationService) -> None:
        threads.add(threading.current_thread().name)
        step(service)

    monkeypatch.setattr(ReplicationService, "_step", recorded)
    source, replica, _cmd, _peer, _params = replicated_pair(mesh, manager, tmp_path)
    people = source.table("people")
    for number in range(20):
        people.append(person(number))
    wait_until(lambda: "people" in replica.tables() and replica.table("people").records() == 20, timeout=10)
    assert threads == {"pynndb-a-loop", "pynndb-b-loop"}
    names = [thread.name for thread in threading.enumerate()]
    assert not [name for name in names if name.endswith("-replication")], names


def test_steps_woken_by_a_stream_leave_the_routine_to_its_pace(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The routine part of a step (ticks, catching up, announcements) comes at most every REPLICA_TICK in a stream;
    # a longer pace than this test lasts shows that nothing else waits for it: replication starts (its requests
    # go at once), a stream is applied, a divergence check completes.
    monkeypatch.setattr(replicator, "REPLICA_TICK", 60.0)
    steps: list[str] = []
    routines: list[str] = []
    step, routine = ReplicationService._step, ReplicationService._routine

    def counted_step(service: ReplicationService) -> None:
        steps.append(threading.current_thread().name)
        step(service)

    def counted_routine(service: ReplicationService, *args: Any) -> None:
        routines.append(threading.current_thread().name)
        routine(service, *args)

    monkeypatch.setattr(ReplicationService, "_step", counted_step)
    monkeypatch.setattr(ReplicationService, "_routine", counted_routine)
    source, replica, cmd, peer, params = replicated_pair(mesh, manager, tmp_path)
    people = source.table("people")
    people.append(person(0))
    wait_until(lambda: "people" in replica.tables() and replica.table("people").records() == 1, timeout=10)
    del steps[:], routines[:]
    for number in range(1, 31):  # each write waits for the one before it: every step is woken by an arrival
        people.append(person(number))
        wait_until(lambda number=number: replica.table("people").records() == number + 1, timeout=10, interval=0.001)
    stream = (steps.count("pynndb-b-loop"), routines.count("pynndb-b-loop"))
    assert stream[0] >= 30 and stream[1] == 0, stream
    assert routines.count("pynndb-a-loop") < steps.count("pynndb-a-loop") / 2  # (a's: its safety poll, 0.5 s)
    reply = cmd.call("VERIFY", params, target=peer, timeout=20)
    assert [entry["verification"] for entry in reply["replicas"]] == ["match"]


def test_a_database_no_longer_served_stops_waking_the_node(mesh: Mesh, manager: Manager, tmp_path: Path) -> None:
    # The node (in this process) listens to a served database's commits on a doorbell of its own; after UNREGISTER
    # commits of other processes must not wake it any more (each would run a step for nothing), and serving the
    # database again listens again.
    node = mesh.node("solo")
    source = manager.database("s", str(tmp_path / "s"), config={"replication": True})
    cmd = mesh.plugin(node)
    bells = bell_directory(source.path)

    def listening() -> list[str]:
        names = os.listdir(bells) if os.path.isdir(bells) else []
        return [name for name in names if name.startswith(f"{os.getpid()}-")]

    cmd.call("REGISTER", {"path": source.path})
    wait_until(listening, timeout=5)
    cmd.call("UNREGISTER", {"path": source.path})
    wait_until(lambda: not listening(), timeout=5)
    cmd.call("REGISTER", {"path": source.path})
    wait_until(listening, timeout=5)
    cmd.call("UNREGISTER", {"path": source.path})
    cmd.call("REGISTER", {"path": source.path})  # served again before a step could settle: keeps its doorbell
    service = node.replication
    assert service is not None
    wait_until(lambda: not service.holdings._unwatched, timeout=5)  # (the step that settles them ran)
    assert len(listening()) == 1


def test_a_replica_is_digested_on_a_worker_not_on_the_loop(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digested: list[str] = []
    replica_summary = divergence.replica_summary

    def recorded(db: Any, source: str, *rest: Any) -> Any:
        digested.append(threading.current_thread().name)
        return replica_summary(db, source, *rest)

    monkeypatch.setattr(divergence, "replica_summary", recorded)
    node = mesh.node("solo")
    source = manager.database("s", str(tmp_path / "s"), config={"replication": True})
    replica = manager.database("r", str(tmp_path / "r"), config={"replication": True})
    source.table("people").append_many([person(number) for number in range(30)])
    cmd = mesh.plugin(node)
    cmd.call("REGISTER", {"path": source.path})
    cmd.call("REPLICATE", {"path": replica.path, "uuid": source.replication.uuid})
    wait_until(lambda: "people" in replica.tables() and replica.table("people").records() == 30, timeout=10)
    reply = cmd.call("VERIFY", {"path": replica.path, "uuid": source.replication.uuid}, timeout=20)
    assert [entry["verification"] for entry in reply["replicas"]] == ["match"]
    assert digested and all(name.startswith("pynndb-solo-verify") for name in digested), digested


def test_a_digest_taken_while_a_snapshot_is_under_way_is_inconclusive_not_a_mismatch(
    mesh: Mesh, manager: Manager, tmp_path: Path
) -> None:
    """A snapshot answering an older request can begin after a check decided to digest the replica at S: what the
    digest reads is then part of a snapshot, not the content at S, and must not make the replica 'diverged'."""
    node = mesh.node("solo")
    source = manager.database("s", str(tmp_path / "s"), config={"replication": True})
    replica = manager.database("r", str(tmp_path / "r"), config={"replication": True})
    source.table("people").append_many([person(number) for number in range(30)])
    uuid = source.replication.uuid
    cmd = mesh.plugin(node)
    cmd.call("REGISTER", {"path": source.path})
    cmd.call("REPLICATE", {"path": replica.path, "uuid": uuid})
    params = {"path": replica.path, "uuid": uuid}
    wait_until(lambda: cmd.call("VERIFY", params, timeout=20)["replicas"][0]["verification"] == "match", timeout=30)
    victim = replica.table("people").first()
    assert victim is not None
    # What a snapshot under way looks like in storage: its marker, and the tables holding part of it.
    for tx in Storage(replica).transactions(uuid):
        with tx:
            tx.set_snapshot_marker(uuid, source.replication.sequence)
            tx.put("people", victim.oid, None)
    found = cmd.call("VERIFY", params, timeout=20)["replicas"][0]
    assert found["verification"] == "inconclusive" and found["state"] == "live", found
    for tx in Storage(replica).transactions(uuid):
        with tx:
            tx.set_snapshot_marker(uuid, None)  # the same content, now standing for the mark: a real divergence
    found = cmd.call("VERIFY", params, timeout=20)["replicas"][0]
    assert found["verification"] == "mismatch" and found["state"] == "diverged", found


def test_a_backlog_is_published_in_slices_in_order(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A served database's backlog goes out a few batches per step (the loop serves its sockets in between), every
    batch once and in order."""
    steps_publishing: list[int] = []  # per step that published: how many batches
    step = ReplicationService._step

    def recorded(service: ReplicationService) -> None:
        before = service.counters["published"]
        step(service)
        if service.counters["published"] > before:
            steps_publishing.append(service.counters["published"] - before)

    monkeypatch.setattr(ReplicationService, "_step", recorded)
    node = mesh.node("solo")
    source = manager.database("s", str(tmp_path / "s"), config={"replication": True})
    replica = manager.database("r", str(tmp_path / "r"), config={"replication": True})
    people = source.table("people")
    service = node.replication
    assert service is not None
    service.register(service.open(source.path))
    held = service.holdings.source(source.replication.uuid)
    assert held is not None
    held.publisher.batch_entries = 1  # one batch per entry: 20 commits are 20 batches
    service.replicate(service.open(replica.path), source.replication.uuid, "one-way")
    uuid = source.replication.uuid
    wait_until(lambda: replica.replication.marks().get(uuid, 0) >= source.replication.sequence, timeout=10)
    steps_publishing.clear()

    def backlog() -> None:
        for number in range(20):
            people.append(person(number))  # 20 commits while the loop is busy here: one backlog

    node._engine.loop.on_loop(backlog)  # type: ignore[union-attr]
    wait_until(lambda: "people" in replica.tables() and replica.table("people").records() == 20, timeout=10)
    assert [doc["name"] for doc in replica.table("people").find()] == [person(n)["name"] for n in range(20)]
    assert steps_publishing == [8, 8, 4]


def test_a_failing_step_is_logged_and_waits_for_its_interval(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A step that raises must not run again in every loop turn (the loop would spin): its next deadline is set
    whatever happened, and the node goes on."""
    node = mesh.node("solo")
    service = node.replication
    assert service is not None
    failures: list[float] = []
    # The service's first step is due at once when the node starts; wait for it, or it could run broken as well
    # as the step the wake-up below asks for (two legitimate steps, not a spin).
    wait_until(lambda: service.deadline > 0, timeout=5)

    def broken(self: ReplicationService) -> None:
        failures.append(time.monotonic())
        raise RuntimeError("boom")

    monkeypatch.setattr(ReplicationService, "_step", broken)
    service.wake()
    wait_until(lambda: failures, timeout=5)
    assert service.deadline > failures[0]  # the next step waits for the interval (1 s with nothing held)
    turns = node.status()["counters"]["loop_turns"]
    assert node.call("PING")["pong"]  # the loop turns (and answers) meanwhile
    assert node.status()["counters"]["loop_turns"] > turns
    # Within its interval nothing steps it again, however many turns the loop made.
    early = [moment for moment in failures[1:] if moment - failures[0] < 0.5]
    assert early == [], f"a failing step ran again {len(early)} times within 0.5 s"
    assert "replication step failed" in caplog.text


def test_a_node_coming_up_hurries_the_hosted_replicas_on_the_loop_thread(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Peer changes arrive on a callback thread; the replicas' request state belongs to the loop thread, so the
    next step (not the callback) tells them a link came up."""
    threads: list[str] = []
    link_restored = Hosted.link_restored

    def recorded(hosted: Hosted) -> None:
        threads.append(threading.current_thread().name)
        link_restored(hosted)

    monkeypatch.setattr(Hosted, "link_restored", recorded)
    node = mesh.node("solo")
    source = manager.database("s", str(tmp_path / "s"), config={"replication": True})
    replica = manager.database("r", str(tmp_path / "r"), config={"replication": True})
    cmd = mesh.plugin(node)
    cmd.call("REGISTER", {"path": source.path})
    cmd.call("REPLICATE", {"path": replica.path, "uuid": source.replication.uuid})
    assert threads == []
    node.connect(mesh.node("newcomer"))  # a node joins: 'up'
    wait_until(lambda: threads, timeout=10)
    assert set(threads) == {"pynndb-solo-loop"}


def test_a_link_coming_up_is_taken_exactly_once_whatever_the_interleaving() -> None:
    """The peer-callback thread reports a link coming up while the loop thread takes reports in a loop: each report
    is taken exactly once, never lost (the replicas would wait out their request timeout) nor taken twice. The
    report and the take hold the holdings' lock, so this holds on any interpreter, free-threaded ones included."""
    waker = Waker()
    holdings = Holdings(waker)
    assert holdings.take_link_up() is False
    holdings.link_up()
    assert holdings.take_link_up() is True
    assert holdings.take_link_up() is False
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can: interleavings everywhere
    try:
        for _ in range(300):
            taken = []
            stop = threading.Event()

            def step(taken: list[bool] = taken, stop: threading.Event = stop) -> None:
                while not stop.is_set():
                    if holdings.take_link_up():
                        taken.append(True)

            stepper = threading.Thread(target=step)
            stepper.start()
            holdings.link_up()  # this thread plays the peer callback
            stop.set()
            stepper.join(10)
            if holdings.take_link_up():
                taken.append(True)
            assert taken == [True]
    finally:
        sys.setswitchinterval(interval)
        waker.close()
