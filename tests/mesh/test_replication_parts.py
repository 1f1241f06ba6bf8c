"""The replication service's loop-free parts with plain values: the directory view of replication info, the
request outbox and its stall policy, and how arrivals are coalesced."""

from __future__ import annotations

from typing import Any

from pynndb.mesh.replication_inbox import Arrival, coalesce
from pynndb.mesh.replication_info import (
    ReplicaInfo,
    ReplicaSourceInfo,
    ReplicationInfo,
    SourceInfo,
    holders,
    replica_holder,
    source_owners,
    source_progress,
)
from pynndb.mesh.replication_outbox import GIVE_UP_AFTER, SOURCE_MISSING_AFTER, RequestOutbox
from pynndb.replication.messages import Entries, Message, Request
from tests.mesh.test_directory import Clock

S1, S2, R1 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", "r" * 36


def node_entry(info: ReplicationInfo | None, alive: bool = True, last_seen: float = 1.0) -> dict[str, Any]:
    services = {"replication": info.to_wire()} if info is not None else {}
    return {"services": services, "alive": alive, "last_seen": last_seen}


def test_replication_info_round_trips_and_tolerates_damage() -> None:
    info = ReplicationInfo(
        {S1: SourceInfo("/db/one", 7, 99)}, {R1: ReplicaInfo("/db/copy", {S1: ReplicaSourceInfo("one-way", 5)})}
    )
    assert ReplicationInfo.from_wire(info.to_wire()) == info
    assert ReplicationInfo.of_entry(node_entry(info)) == info
    assert ReplicationInfo.of_entry({"services": {}}) == ReplicationInfo()
    damaged = {"sources": {S1: "not an object", S2: {"path": "/two", "seq": "x"}}, "replicas": []}
    assert ReplicationInfo.from_wire(damaged) == ReplicationInfo({S2: SourceInfo("/two", 0, 0)})


def test_owners_progress_and_holders_come_from_the_directory() -> None:
    old = ReplicationInfo({S1: SourceInfo("/db/one", 3, 30)})
    new = ReplicationInfo({S1: SourceInfo("/db/one", 9, 90)})
    copy = ReplicationInfo(replicas={R1: ReplicaInfo("/db/copy", {S1: ReplicaSourceInfo("one-way", 2)})})
    nodes = {
        "restarted-old": node_entry(old, last_seen=1.0),
        "restarted-new": node_entry(new, last_seen=2.0),
        "gone": node_entry(ReplicationInfo({S2: SourceInfo("/db/two")}), alive=False),
        "replica": node_entry(copy, last_seen=3.0),
        "bare": node_entry(None),
    }
    assert source_owners(nodes) == {S1: "restarted-new"}  # the one heard from last; gone nodes own nothing
    assert source_progress(nodes) == ({S1: 9, S2: 0}, {S1: 90, S2: 0})
    assert replica_holder(nodes, R1, S1) == ("replica", "/db/copy") and replica_holder(nodes, R1, S2) is None
    assert holders(nodes, S1) == ["restarted-new", "restarted-old"] and holders(nodes, R1) == ["replica"]


def test_a_request_waits_for_its_source_then_is_sent_to_its_owner() -> None:
    clock = Clock()
    outbox = RequestOutbox(clock)
    request = Request(S1, R1, 5)
    asked: list[int] = []

    def owners(known: dict[str, str]) -> Any:
        return lambda: asked.append(1) or known

    assert not outbox.route(owners({})).send and asked == []  # nothing waits: the directory is not read
    outbox.add([request])
    assert outbox.route(owners({})).send == [] and outbox  # its source is not known yet: it keeps waiting
    clock.now += SOURCE_MISSING_AFTER + 0.1
    routed = outbox.route(owners({}))
    assert routed.missing == [request] and outbox  # the replica shows as stalled, the request still waits
    routed = outbox.route(owners({S1: "node-a"}))
    assert routed.send == [("node-a", request)] and routed.found == [request] and not outbox


def test_a_request_whose_source_never_appears_is_dropped() -> None:
    clock = Clock()
    outbox = RequestOutbox(clock)
    outbox.add([Request(S1, R1, 1)])
    clock.now += GIVE_UP_AFTER + 1
    routed = outbox.route(dict)
    assert routed.missing and not routed.send and not outbox  # the replica asks again on its own


def test_live_entries_of_one_source_that_arrived_together_are_delivered_as_one() -> None:
    one = {b"a": Entries(S1, [(1, 0, b"{}")], 1), b"b": Entries(S1, [(2, 0, b"{}")], 3)}
    other = {b"c": Entries(S2, [(1, 0, b"{}")], 1), b"d": Entries(S1, [(3, 0, b"{}")], 3)}
    frames = {**one, **other}
    delivered: list[Message] = []
    handled: list[bytes] = []
    arrived: list[Arrival] = [
        ("topic", b"a", "n"),
        ("topic", b"b", "n"),
        ("topic", b"bad", "n"),  # undecodable: dropped
        ("topic", b"c", "n"),
        ("targeted", b"answer", "n"),
        ("topic", b"d", "n"),
    ]
    coalesce(arrived, lambda payload, origin: frames.get(payload), delivered.append, lambda p, o: handled.append(p))
    assert delivered == [Entries(S1, [(1, 0, b"{}"), (2, 0, b"{}")], 3), other[b"c"], other[b"d"]]
    assert handled == [b"answer"]
