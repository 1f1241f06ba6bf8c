"""The directory without sockets: merging entries, liveness, and a restarted node superseding its old entry."""

from __future__ import annotations

from typing import Any

from pynndb.mesh.directory import Directory, Entry


def entry(node_id: str, label: str, address: str = "tcp://127.0.0.1:7000", **fields: Any) -> Entry:
    values: dict[str, Any] = dict(links=[], services={}, topics=[], public_key=None, heartbeat=1.0, seq=1, started=1.0)
    values.update(fields)
    return Entry(id=node_id, label=label, address=address, **values)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_restarted_node_supersedes_its_old_entry_on_first_hello() -> None:
    directory = Directory("0" * 32, Clock())
    old, new = "a" * 32, "b" * 32
    assert directory.merge(entry(old, "pb", started=1.0)) == [(old, "up")]
    changes = directory.merge(entry(new, "pb", started=2.0))
    assert (old, "down") in changes and (new, "up") in changes
    assert not directory.is_alive(old) and directory.is_alive(new)
    assert directory.lookup("pb")["id"] == new
    # A late heartbeat of the old node (an older seq or the same) does not bring it back.
    assert directory.merge(entry(old, "pb", started=1.0)) == []
    assert directory.merge(entry(old, "pb", started=1.0, seq=9)) == []
    assert not directory.is_alive(old)


def test_same_label_elsewhere_or_an_older_start_does_not_supersede() -> None:
    directory = Directory("0" * 32, Clock())
    first, other_address, older = "a" * 32, "b" * 32, "c" * 32
    directory.merge(entry(first, "pb", started=5.0))
    directory.merge(entry(other_address, "pb", address="tcp://127.0.0.1:7100", started=6.0))
    directory.merge(entry(older, "pb", started=4.0))  # a stale entry relayed late must not kill the live node
    assert directory.is_alive(first) and directory.is_alive(other_address)


def test_a_silent_node_is_suspected_first_and_gone_only_if_it_does_not_refute() -> None:
    clock = Clock()
    directory = Directory("0" * 32, clock)
    node = "a" * 32
    directory.merge(entry(node, "pa", heartbeat=1.0))
    assert directory.suspect(node, 1, period=1.0)
    clock.now += 1.5
    assert directory.expire(1.0) == [] and directory.is_alive(node)
    clock.now += 1.0
    assert directory.expire(1.0) == [(node, "down")]
    assert not directory.is_alive(node)
