"""Regressions found by the chaos harness (tests/chaos), each named after the fault that exposed it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import pytest

from pynndb import Database
from pynndb.replication import Publisher, Replica, Request
from pynndb.replication.source import snapshot
from tests.helpers import wait_until
from tests.mesh.conftest import Mesh
from tests.replication.conftest import deliver, serve


def test_node_restart_with_an_idle_source_leaves_the_replica_live(open_db: Callable[..., Database]) -> None:
    """A replica's node restarted while its source is idle and already applied: the source's answer is "nothing
    new", which must settle the replica as live (it stayed `syncing` for ever, and the divergence check with it)."""
    source, target = open_db("source"), open_db("target")
    docs = source.table("docs")
    for number in range(10):
        docs.append({"n": number})
    publisher = Publisher(source)
    replica = Replica(target, source.replication.uuid).register()
    serve(publisher, replica, replica.start())
    assert replica.state == "live" and replica.hwm == source.replication.sequence

    restarted = Replica(target, source.replication.uuid).register()  # the node's new process: same database, same mark
    assert restarted.state == "syncing"
    requests = restarted.start()
    serve(publisher, restarted, requests)
    assert restarted.state == "live"
    assert restarted.tick() == []  # and it asks for nothing more
    assert restarted.counters["full_resyncs"] == 0


def test_node_kill_while_a_request_from_it_is_served(
    mesh: Mesh, open_db: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    """A replica's node killed (and forgotten by the mesh) while its source's node answers its request: the answer
    is dropped quietly, not logged as a failure with a traceback (the requester asks again when it is back)."""
    source = open_db("source")
    source.table("docs").append({"n": 1})
    node = mesh.node("a")
    node.call("REGISTER", {"path": source.path})
    assert node.replication is not None
    gone = "0" * 32  # a node id the mesh does not know (any more)
    with caplog.at_level(logging.INFO, logger="pynndb.replication"):
        node.replication.serve(Request(source.replication.uuid, str(uuid.uuid4()), 1), gone)
        wait_until(lambda: any("dropped" in record.getMessage() for record in caplog.records), timeout=10)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_link_delay_during_snapshot_does_not_restart_it(open_db: Callable[..., Database]) -> None:
    """A snapshot whose chunks arrive slowly (a delayed link, a loaded machine) but steadily must complete: the
    request timeout measures silence, not the snapshot's length. It used to drop the snapshot after 2 s and ask for
    another, which took as long: a loop of full resyncs that never finished."""
    source, target = open_db("source", max_entries=5), open_db("target")
    docs = source.table("docs")
    for number in range(200):
        docs.append({"n": number, "text": "x" * 50})
    now = [0.0]
    replica = Replica(target, source.replication.uuid, clock=lambda: now[0], request_timeout=2.0).register()
    assert replica.start()[0].start == 1  # the journal no longer holds it: a snapshot follows
    messages = list(snapshot(source, chunk_bytes=2000))
    assert len(messages) > 4
    for message in messages:
        now[0] += 1.0  # each part a second after the previous one: the whole takes longer than the timeout
        assert deliver(replica, [message]) == []
        assert replica.tick() == [], f"gave up on the snapshot at {now[0]}s"
    assert replica.state == "live" and replica.hwm == source.replication.sequence
    assert replica.counters["full_resyncs"] == 1


def test_seed_2026_a_stale_snapshot_at_the_same_sequence_cannot_complete_the_one_asked_for(
    open_db: Callable[..., Database],
) -> None:
    """Chaos seed 2026 (20 minutes): a replica whose node was killed and restarted while an idle source answered
    its snapshot requests got two snapshot streams at the same sequence; the older stream's end completed the newer
    one right after its begin had emptied the table, so the replica was live, at the source's mark, and empty."""
    source, target = open_db("source"), open_db("target")
    source.table("docs").append_many([{"n": number, "pad": "x" * 100} for number in range(3000)])
    publisher = Publisher(source, chunk_bytes=16 << 10)  # many chunks per snapshot
    replica = Replica(target, source.replication.uuid).register()
    first = replica.request(snapshot=True)
    older = list(publisher.serve(first))
    second = replica.request(snapshot=True)  # asked again (a silence, a restart): the first answer is stale
    newer = list(publisher.serve(second))
    assert len(older) == len(newer) > 4 and older[0].seq == newer[0].seq  # same sequence: the idle source
    # The streams interleave: the older one's begin and first chunks, the newer one's begin, the older one's rest
    # (its end included), then the newer one's chunks and end.
    deliver(replica, older[:2])
    deliver(replica, newer[:1])
    deliver(replica, older[2:])
    assert replica.hwm == 0, "the stale stream's end must not complete the snapshot under way"
    deliver(replica, newer[1:])
    assert replica.hwm == source.replication.sequence
    assert target.table("docs").records() == 3000
    assert replica.state == "live"
