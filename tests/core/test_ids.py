"""Record ids: 24 hex digits (seconds, this process's random part, a counter), and the ids of one process ascend
in creation order, always. Before, the counter ran on across seconds from a random start and wrapped every 16.7M
ids: ids made after a wrap sorted before those made just before it, and a bulk append after a wrap took the
record-by-record path for the rest of that second (columns.ascending refused the batch)."""

from __future__ import annotations

import itertools
import re
import sys
import threading
import time

import pytest

from pynndb.core import ids


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    made = Clock(1_700_000_000.25)
    monkeypatch.setattr(ids, "_clock", made)
    monkeypatch.setattr(ids, "_random", ids._random)  # (restored after the test)
    monkeypatch.setattr(ids, "_state", (-1, b"", iter(())))  # as in a new process (ids made earlier: real time)
    return made


def second_of(oid: bytes) -> int:
    return int(oid[:8], 16)


def test_ids_ascend_across_seconds_one_by_one_and_in_bulk(clock: Clock) -> None:
    made: list[bytes] = []
    for step in range(50):
        clock.now += 0.37
        made += ids.new_oids(100) if step % 2 else [ids.new_oid() for _ in range(10)]
    assert all(re.fullmatch(rb"[0-9a-f]{24}", oid) for oid in made)
    assert made == sorted(made) and len(set(made)) == len(made)
    assert {second_of(oid) for oid in made} == set(range(second_of(made[0]), int(clock.now) + 1))


def test_a_clock_that_goes_back_keeps_the_last_second(clock: Clock) -> None:
    before = [ids.new_oid(), *ids.new_oids(5)]
    clock.now -= 3600  # the system clock was set back
    after = [ids.new_oid(), *ids.new_oids(5)]
    assert before + after == sorted(before + after) and len(set(before + after)) == 12
    assert {second_of(oid) for oid in after} == {second_of(before[0])}


@pytest.mark.parametrize("bulk", [False, True])
def test_a_full_counter_takes_the_next_second_early(clock: Clock, bulk: bool) -> None:
    first = ids.new_oid()
    ids._state = (*ids._state[:2], itertools.count(ids.LIMIT - 4))  # 5 ids left in this second
    made = ids.new_oids(20) if bulk else [ids.new_oid() for _ in range(20)]
    assert [second_of(oid) for oid in made] == [second_of(first)] * 5 + [second_of(first) + 1] * 15
    clock.now += 1  # the clock reaches the second taken early: its counter goes on
    later = ids.new_oids(3)
    every = [first, *made, *later]
    assert every == sorted(every) and len(set(every)) == len(every)


def test_each_second_starts_its_counter_below_half_its_range(clock: Clock) -> None:
    starts = []
    for _ in range(200):
        clock.now += 1
        starts.append(int(ids.new_oid()[18:], 16))
    assert max(starts) < (ids.LIMIT + 1) // 2 and len(set(starts)) > 150  # random, with room for 8.3M ids


def test_threads_making_ids_across_seconds_never_make_the_same_one(clock: Clock) -> None:
    """Several threads of one process make ids while the second changes under them (thread switches forced as often
    as the interpreter allows): every id is unique, and each thread's own ids ascend."""
    made: list[list[bytes]] = [[] for _ in range(4)]
    started = threading.Barrier(len(made) + 1)

    def work(mine: list[bytes]) -> None:
        started.wait()
        for step in range(4000):
            if step % 3:
                mine.append(ids.new_oid())
            else:
                mine.extend(ids.new_oids(3))

    threads = [threading.Thread(target=work, args=(mine,)) for mine in made]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        started.wait()
        for _ in range(400):  # the clock moves on while they work
            clock.now += 1
            time.sleep(0)
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    every = [oid for mine in made for oid in mine]
    assert len(set(every)) == len(every), "two ids alike"
    assert all(mine == sorted(mine) for mine in made)
