"""SWIM membership without sockets: the probe schedule, indirect probes, suspicion, refutation and digests."""

from __future__ import annotations

import random

from pynndb.mesh.directory import Directory
from pynndb.mesh.membership import RANDOM_EVERY, Membership
from tests.mesh.test_directory import Clock, entry

SELF, A, B, C, D = "0" * 32, "a" * 32, "b" * 32, "c" * 32, "d" * 32


def no_links(_node: str) -> list[str]:
    return []


def test_each_period_probes_every_neighbor_and_every_other_period_one_other_member_in_turn() -> None:
    clock = Clock()
    membership = Membership(SELF, 1.0, clock, random.Random(1))
    members = {A, B, C, D}
    probed = []
    for round_number in range(6):
        clock.now += 1.0 if round_number else 0.0
        actions = membership.tick([A], members, no_links)
        assert [a.peer for a in actions if a.peer == A] == [A] and all(a.kind == "probe" for a in actions)
        for action in actions:
            membership.answered(action.number)
        probed += [a.peer for a in actions if a.peer != A]
    assert len(probed) == -(-6 // RANDOM_EVERY)  # one every RANDOM_EVERY periods
    assert len(set(probed[:3])) == len(probed[:3])  # round-robin: no member twice in one pass
    assert membership.tick([A], members, no_links) == []  # nothing until the next period


def test_a_neighbor_heard_from_a_moment_ago_is_not_probed_back() -> None:
    clock = Clock()
    membership = Membership(SELF, 1.0, clock, random.Random(1))
    actions = membership.tick([A, B], {A, B}, no_links, heard={A: clock.now - 0.1, B: clock.now - 5})
    assert [a.peer for a in actions] == [B]


def test_a_silent_member_gets_indirect_probes_through_its_neighbors_then_is_suspected() -> None:
    clock = Clock()
    membership = Membership(SELF, 1.0, clock, random.Random(2))
    links = {B: [C, D], C: [B], D: [B]}
    probe = next(a for a in membership.tick([B], {B, C, D}, lambda n: links.get(n, [])) if a.peer == B)
    clock.now += 0.6
    actions = membership.tick([B], {B, C, D}, lambda n: links.get(n, []))
    asks = [a for a in actions if a.kind == "probe_req" and a.target == B]
    assert {a.peer for a in asks} == {C, D} and all(a.number == probe.number for a in asks)
    clock.now += 0.5
    assert any(a.kind == "suspect" and a.peer == B for a in membership.tick([B], {B, C, D}, no_links))


def test_any_message_from_the_target_answers_its_probe_and_helpers_pass_acks_back() -> None:
    clock = Clock()
    membership = Membership(SELF, 1.0, clock, random.Random(3))
    membership.tick([A], {A}, no_links)
    assert membership.busy()
    membership.heard(A)
    assert not membership.busy()
    relay = membership.probe_for(B, 7, C)
    assert relay.kind == "probe" and relay.peer == C
    back = membership.answered(relay.number)
    assert back is not None and (back.kind, back.peer, back.number) == ("ack", B, 7)


def test_a_suspect_refutes_with_a_newer_seq_and_a_death_outranks_a_stale_copy() -> None:
    clock = Clock()
    directory = Directory(SELF, clock)
    directory.merge(entry(A, "pa", seq=3))
    assert directory.suspect(A, 3, period=1.0)
    assert not directory.suspect(A, 3, period=1.0)  # not news twice: relays stop passing it on
    assert directory.accept(entry(A, "pa", seq=4))[0]  # the refutation
    assert not directory.is_suspect(A)
    assert directory.confirm(A, 3) == (False, [])  # a death at an older incarnation changes nothing
    assert directory.confirm(A, 4) == (True, [(A, "down")])
    assert directory.gone_facts() == [[A, 4]]
    assert directory.merge(entry(A, "pa", seq=4)) == []  # a handshake's stale copy does not revive it
    assert directory.merge(entry(A, "pa", seq=5)) == [(A, "up")]  # it came back by itself


def test_digest_is_equal_for_equal_views_and_changes_with_any_seq() -> None:
    one, two = Directory(SELF, Clock()), Directory(B, Clock())
    for directory in (one, two):
        directory.merge(entry(A, "pa", seq=2))
        directory.merge(entry(C, "pc", address="tcp://127.0.0.1:7001", seq=1))
    assert one.digest() == two.digest()
    one.merge(entry(A, "pa", seq=3))
    assert one.digest() != two.digest()
    two.merge(entry(A, "pa", seq=3))
    two.mark_gone(C)
    assert one.digest() != two.digest()
