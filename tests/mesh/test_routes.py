"""Routing decisions without sockets: next hops per topic and target, cached per (directory, links) version."""

from __future__ import annotations

from pynndb.mesh.routing import Routes

SELF, A, B, C, D = "s", "a", "b", "c", "d"


def chain() -> dict[str, set[str]]:
    """c - a - SELF - b - d (SELF's own links are added by Routes)."""
    return {A: {C}, C: {A}, B: {D}, D: {B}}


def test_topics_go_only_towards_their_subscribers() -> None:
    routes = Routes(SELF)
    assert routes.refresh((1, 1), chain, [A, B])
    subscribers = {"t": {D}, "both": {C, D}, "mine": {SELF}}
    assert routes.topic_hops("t", subscribers.__getitem__, [A, B]) == {B}
    assert routes.topic_hops("both", subscribers.__getitem__, [A, B]) == {A, B}
    assert routes.topic_hops("mine", subscribers.__getitem__, [A, B]) == set()  # a node never sends to itself


def test_targets_go_to_the_closer_neighbor_and_unknown_ones_everywhere() -> None:
    routes = Routes(SELF)
    routes.refresh((1, 1), chain, [A, B])
    assert routes.target_hops(D, [A, B]) == {B}
    assert routes.target_hops(A, [A, B]) == {A}
    assert routes.target_hops("unknown", [A, B]) == {A, B}  # flooded; the seen-cache stops duplicates
    assert routes.reachable() == {SELF, A, B, C, D}


def test_answers_are_cached_until_the_directory_or_the_links_change() -> None:
    routes = Routes(SELF)
    asked: list[str] = []

    def subscribers(topic: str) -> set[str]:
        asked.append(topic)
        return {D}

    routes.refresh((1, 1), chain, [A, B])
    routes.topic_hops("t", subscribers, [A, B])
    routes.topic_hops("t", subscribers, [A, B])
    assert asked == ["t"]
    assert not routes.refresh((1, 1), chain, [A, B])  # same versions: nothing recomputed
    assert routes.refresh((2, 1), lambda: {A: {C}, C: {A}}, [A])  # b's link went down
    assert routes.topic_hops("t", subscribers, [A]) == set() and asked == ["t", "t"]
    assert routes.target_hops(D, [A]) == {A}  # d is unreachable now: flood what is left


def test_the_target_cache_is_bounded() -> None:
    routes = Routes(SELF, max_targets=2)
    routes.refresh((1, 1), chain, [A, B])
    for target in ("x", "y", "z"):
        routes.target_hops(target, [A, B])
    assert len(routes.targets) == 2
