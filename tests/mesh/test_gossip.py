"""Heartbeats and the directory without sockets: announcing on change, probes and their answers, suspicion,
refutation, death and SYNC, with plain values and a clock under the test's control."""

from __future__ import annotations

from typing import Any, cast

import orjson

from pynndb.mesh import wire
from pynndb.mesh.directory import Change, Directory
from pynndb.mesh.gossip import Gossip
from pynndb.mesh.handshake import Links
from pynndb.mesh.links import Channel
from pynndb.mesh.local import Endpoints, NodeConfig
from pynndb.mesh.routing import Routes
from tests.mesh.test_directory import Clock, entry

SELF, A, B = "0" * 32, "a" * 32, "b" * 32


class Node:
    """One node's gossip with a neighbor A, and what it sends and notifies."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.config = NodeConfig(SELF, bytes(16), "self", "127.0.0.1", 1, 2, 3, None, 1.0, 1 << 20, 1)
        self.endpoints = Endpoints()
        self.directory = Directory(SELF, self.clock)
        self.links = Links()
        self.sent: list[tuple[int, Any, str | None]] = []
        self.changes: list[Change] = []
        routes = Routes(SELF)
        self.gossip = Gossip(
            self.config,
            self.endpoints,
            self.directory,
            self.links,
            routes,
            self.send,
            self.changes.extend,
            clock=self.clock,
        )
        self.directory.merge(entry(A, "a", seq=3))
        socket = cast(Any, object())
        channel = Channel(key=("out", socket), address="tcp://127.0.0.1:7000", socket=socket)
        self.links.add_outbound(channel)
        self.links.welcomed(channel, entry(A, "a", seq=3), self.clock.now)

    def send(self, kind: int, body: bytes, target: str | None) -> None:
        self.sent.append((kind, orjson.loads(body) if body else None, target))

    def take(self, kind: int) -> list[tuple[Any, str | None]]:
        """What was sent of one type since the last call, and forget it."""
        found = [(body, target) for sent_kind, body, target in self.sent if sent_kind == kind]
        self.sent = [sent for sent in self.sent if sent[0] != kind]
        return found

    def fact(self, kind: int, body: dict[str, Any], origin: str = A) -> bool:
        frame = wire.encode_routed(kind, wire.node_id_to_bytes(origin), 1, orjson.dumps(body))
        return self.gossip.on_fact(kind, origin, frame, wire.ROUTED_HEADER_SIZE)


def test_the_entry_is_announced_only_when_it_changes() -> None:
    node = Node()
    node.gossip.announce()
    [(first, target)] = node.take(wire.HEARTBEAT)
    assert target is None and first["seq"] == 1 and first["links"] == [A]
    node.gossip.announce()
    assert node.take(wire.HEARTBEAT) == []  # nothing new: no announcement
    node.endpoints.service_info["replication"] = {"sources": {}}
    node.gossip.announce()
    [(second, _)] = node.take(wire.HEARTBEAT)
    assert second["seq"] == 2 and second["services"] == {"replication": {"sources": {}}}


def test_a_probe_is_answered_with_the_directory_digest() -> None:
    node = Node()
    node.gossip.on_message(wire.PROBE, A, {"n": 7})
    [(answer, target)] = node.take(wire.ACK)
    assert target == A and answer == {"n": 7, "digest": node.directory.digest(), "doubted": False}


def test_a_silent_neighbor_is_probed_suspected_and_declared_dead() -> None:
    node = Node()
    node.clock.now += 10  # A was heard from long ago
    node.gossip.tick()
    [(probe, target)] = node.take(wire.PROBE)
    assert target == A
    node.clock.now += 0.5
    node.gossip.tick()  # no answer: others are asked to probe A (there are none here)
    node.clock.now += 0.5
    node.gossip.tick()
    [(suspicion, _)] = node.take(wire.SUSPECT)
    assert suspicion == {"id": A, "seq": 3} and node.directory.is_suspect(A) and node.gossip.busy()
    assert node.gossip.counters["suspicions"] == 1
    node.clock.now += 2.5  # A does not refute within its time
    node.gossip.settle()
    assert node.take(wire.DEAD) == [({"id": A, "seq": 3}, None)]
    assert node.changes == [(A, "down")] and not node.directory.is_alive(A)


def test_an_answer_or_any_message_from_the_neighbor_clears_its_probe() -> None:
    node = Node()
    node.clock.now += 10
    node.gossip.tick()
    [(probe, _)] = node.take(wire.PROBE)
    node.gossip.on_message(wire.ACK, A, {"n": probe["n"], "digest": node.directory.digest()})
    node.clock.now += 5
    node.gossip.tick()
    assert node.take(wire.SUSPECT) == [] and node.directory.is_alive(A)


def test_a_suspicion_of_this_node_is_refuted_with_a_newer_incarnation() -> None:
    node = Node()
    assert not node.fact(wire.SUSPECT, {"id": SELF, "seq": 5})  # not passed on: the refutation is the news
    [(refutation, _)] = node.take(wire.HEARTBEAT)
    assert refutation["id"] == SELF and refutation["seq"] == 6


def test_news_is_passed_on_once_and_a_death_marks_the_node_gone() -> None:
    node = Node()
    news = entry(B, "b", address="tcp://127.0.0.1:7100", seq=1)
    frame = wire.encode_routed(wire.HEARTBEAT, wire.node_id_to_bytes(B), 1, orjson.dumps(news))
    assert node.gossip.on_fact(wire.HEARTBEAT, B, frame, wire.ROUTED_HEADER_SIZE)
    assert not node.gossip.on_fact(wire.HEARTBEAT, B, frame, wire.ROUTED_HEADER_SIZE)  # heard already
    assert node.changes == [(B, "up")]
    assert node.fact(wire.DEAD, {"id": B, "seq": 1})
    assert node.changes == [(B, "up"), (B, "down")] and not node.directory.is_alive(B)


def test_a_sync_merges_the_neighbors_directory_and_answers_with_ours() -> None:
    node = Node()
    body = {"entries": [entry(B, "b", address="tcp://127.0.0.1:7100")], "gone": [], "reply": True}
    node.gossip.on_message(wire.SYNC, A, body)
    assert node.directory.is_alive(B) and node.changes == [(B, "up")]
    [(answer, target)] = node.take(wire.SYNC)
    assert target == A and answer["reply"] is False and {e["id"] for e in answer["entries"]} >= {A, B}
