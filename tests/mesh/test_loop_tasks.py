"""Services' work runs on the node's socket loop as tasks: stepped on the loop thread when their descriptor turns
readable, when they ask to be, or at their deadline; after `remove_task` returns, never again. A running socket loop
with real descriptors, no mocks."""

from __future__ import annotations

import os
import queue
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynndb import Manager
from pynndb.mesh.loop import SocketLoop
from pynndb.mesh.replication_inbox import take_slice
from pynndb.mesh.watch import Waker
from tests.helpers import wait_until

FAR = 30.0  # the loop's own timers: far enough that any step seen within a test's wait was not timer-driven


class PipeTask:
    """A task woken through a pipe; records the thread of each step."""

    def __init__(self) -> None:
        self.read, self.write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending = False
        self.deadline = time.monotonic() + FAR
        self.steps: list[int] = []
        self.collected = 0
        self.during_step: list[object] = []  # callables a step runs (to act from the loop thread)

    def fileno(self) -> int:
        return self.read

    def collect(self) -> bool:
        self.collected += 1
        try:
            os.read(self.read, 4096)
        except BlockingIOError:
            return False
        self.pending = True
        return True

    def step(self) -> None:
        self.pending = False
        self.deadline = time.monotonic() + FAR
        self.steps.append(threading.get_ident())
        while self.during_step:
            action = self.during_step.pop()
            assert callable(action)
            action()

    def close(self) -> None:
        os.close(self.read)
        os.close(self.write)


@pytest.fixture
def running_loop() -> Iterator[SocketLoop]:
    loop = SocketLoop("test-task-loop", {"loop_turns": 0})
    loop.turn = lambda: time.monotonic() + FAR
    loop.thread.start()
    yield loop
    loop.stopping = True
    loop.wake()
    loop.thread.join(5)
    loop.close()


@pytest.fixture
def task(running_loop: SocketLoop) -> Iterator[PipeTask]:
    created = PipeTask()
    yield created
    running_loop.remove_task(created)  # (a service does the same before it closes its descriptor)
    created.close()


def added(loop: SocketLoop, task: PipeTask) -> PipeTask:
    loop.add_task(task)
    wait_until(lambda: task in loop.tasks, timeout=5)
    return task


def test_a_readable_descriptor_steps_the_task_on_the_loop_thread(running_loop: SocketLoop, task: PipeTask) -> None:
    added(running_loop, task)
    first = len(task.steps)
    os.write(task.write, b"x")
    wait_until(lambda: len(task.steps) > first, timeout=5)
    assert task.collected >= 1
    assert set(task.steps) == {running_loop.ident}


def test_a_pending_task_is_stepped_again_without_waiting(running_loop: SocketLoop, task: PipeTask) -> None:
    """A step that leaves work (``pending``) gets the next turn at once, not at a timer."""
    added(running_loop, task)
    os.write(task.write, b"x")
    wait_until(lambda: task.steps, timeout=5)
    before = len(task.steps)

    def ask_again() -> None:
        task.pending = True

    task.during_step.append(ask_again)
    os.write(task.write, b"x")
    wait_until(lambda: len(task.steps) >= before + 2, timeout=5)  # the woken step, then the one it asked for


def test_a_task_is_stepped_at_its_deadline(running_loop: SocketLoop, task: PipeTask) -> None:
    task.deadline = time.monotonic() + 0.05  # nothing wakes it: only the deadline can
    added(running_loop, task)
    wait_until(lambda: task.steps, timeout=5)
    assert task.collected == 0


def test_a_post_from_a_step_runs_without_a_wake_up_byte(running_loop: SocketLoop, task: PipeTask) -> None:
    """On the loop thread `wake()` writes nothing (no system call); what a step posts still runs at once."""
    added(running_loop, task)
    ran = threading.Event()
    pipe_readable: list[bool] = []

    def post_from_the_loop() -> None:
        running_loop.post(ran.set)
        pipe_readable.append(bool(select.select([running_loop.wake_pipe.read_fd], [], [], 0)[0]))

    task.during_step.append(post_from_the_loop)
    os.write(task.write, b"x")
    assert ran.wait(5), "an operation posted on the loop thread waited for a timer"
    assert pipe_readable == [False]


def test_after_remove_task_returns_no_step_runs(running_loop: SocketLoop, task: PipeTask) -> None:
    added(running_loop, task)
    running_loop.remove_task(task)
    assert task not in running_loop.tasks
    assert task.read not in running_loop.fd_tasks
    count = len(task.steps)
    task.pending = True
    os.write(task.write, b"x")
    for _ in range(2):  # two full turns of the loop: a task still kept would have been stepped in the first
        running_loop.on_loop(lambda: None)
    assert len(task.steps) == count


def test_a_closed_descriptor_drops_its_task_and_the_loop_goes_on(running_loop: SocketLoop) -> None:
    doomed = added(running_loop, PipeTask())
    os.close(doomed.read)  # a service closing its descriptor without removing its task first
    wait_until(lambda: doomed not in running_loop.tasks, timeout=5)
    running_loop.on_loop(lambda: None)  # the loop still turns
    os.close(doomed.write)


def test_a_failing_step_is_logged_and_the_loop_goes_on(running_loop: SocketLoop, task: PipeTask) -> None:
    added(running_loop, task)

    def fail() -> None:
        raise RuntimeError("boom")

    task.during_step.append(fail)
    os.write(task.write, b"x")
    wait_until(lambda: not task.during_step and len(task.steps) >= 1, timeout=5)
    count = len(task.steps)
    os.write(task.write, b"x")
    wait_until(lambda: len(task.steps) > count, timeout=5)
    assert running_loop.thread.is_alive()


# --- Waker -------------------------------------------------------------------------------------------------------
def readable(waker: Waker) -> bool:
    return bool(select.select([waker.fileno()], [], [], 0)[0])


def test_a_set_from_another_thread_makes_the_waker_readable() -> None:
    waker = Waker()
    try:
        waker.owner = threading.get_ident()
        other = threading.Thread(target=waker.set)
        other.start()
        other.join(5)
        assert readable(waker)
        waker.pending = False
        assert waker.collect()
        assert waker.pending
        assert not readable(waker)
    finally:
        waker.close()


def test_a_set_from_the_owner_only_marks_it_pending() -> None:
    waker = Waker()
    try:
        waker.owner = threading.get_ident()
        waker.set()
        assert waker.pending
        assert not readable(waker)  # no byte written: the owner looks at `pending` before it sleeps
    finally:
        waker.close()


def test_a_set_racing_with_a_step_is_never_lost() -> None:
    """The owner clears `pending` before its step; a set() from another thread during the step leaves either a
    readable descriptor or `pending` set, whatever the interleaving."""
    waker = Waker()
    try:
        waker.owner = threading.get_ident()
        for _ in range(200):
            waker.pending = False  # the step begins
            other = threading.Thread(target=waker.set)
            other.start()
            other.join(5)
            assert waker.pending or readable(waker)
            if readable(waker):
                waker.collect()
    finally:
        waker.close()


def test_a_commit_rings_the_waker_of_a_watched_database(tmp_path: Path) -> None:
    with Manager() as manager:
        db = manager.database("d", str(tmp_path / "db"), config={"replication": True})
        waker = Waker()
        try:
            assert waker.watch(db.path)
            waker.collect()  # watch() asks for a step of its own
            waker.pending = False
            assert not readable(waker)
            db.table("t").append({"n": 1})
            wait_until(lambda: readable(waker), timeout=5)
            assert waker.collect() and waker.pending
            assert not readable(waker)
            waker.unwatch(db.path)
            assert not waker.watching
        finally:
            waker.close()


# --- slices of the inbox -----------------------------------------------------------------------------------------
def test_a_step_takes_a_bounded_slice_of_the_inbox() -> None:
    inbox: queue.SimpleQueue[tuple[str, bytes, str]] = queue.SimpleQueue()
    for number in range(5):
        inbox.put(("topic", bytes(100), str(number)))
    taken, more = take_slice(inbox, 3, 1 << 20)
    assert [origin for _, _, origin in taken] == ["0", "1", "2"] and more
    taken, more = take_slice(inbox, 10, 150)  # the bytes bound: stops once 150 bytes are taken
    assert [origin for _, _, origin in taken] == ["3", "4"] and more
    taken, more = take_slice(inbox, 10, 1 << 20)
    assert taken == [] and not more
