"""The socket loop's wake-up pipe: a `wake()` from another thread can never be lost, however it interleaves with
the loop emptying the pipe (a lost one left a node's publishes waiting for its next timer, ~0.5 s, for good)."""

from __future__ import annotations

import os
import select
import threading

import pytest

from pynndb.mesh import wakepipe as wakepipe_module
from pynndb.mesh.loop import SocketLoop


def pipe_has_a_byte(loop: SocketLoop) -> bool:
    return bool(select.select([loop.wake_pipe.read_fd], [], [], 0)[0])


@pytest.fixture
def socket_loop() -> SocketLoop:
    created = SocketLoop("test-loop", {"loop_turns": 0})
    yield created
    created.close()


def test_a_wake_during_the_read_is_never_lost(socket_loop: SocketLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread wakes the loop while the loop empties the pipe: afterwards either the flag is clear (the next
    wake writes) or a byte waits in the pipe (the next poll turns). A set flag over an empty pipe is the lost wake."""
    real_read = os.read

    def read_while_another_thread_wakes(descriptor: int, size: int) -> bytes:
        socket_loop.wake()  # what a publishing thread may do at this very moment
        return real_read(descriptor, size)

    socket_loop.wake()
    assert pipe_has_a_byte(socket_loop)
    monkeypatch.setattr(wakepipe_module.os, "read", read_while_another_thread_wakes)
    socket_loop.consume_wake()
    monkeypatch.setattr(wakepipe_module.os, "read", real_read)
    assert not socket_loop.wake_pending or pipe_has_a_byte(socket_loop)
    socket_loop.wake()  # a later wake-up must reach the pipe
    assert pipe_has_a_byte(socket_loop)


def test_wakes_from_many_threads_keep_the_flag_and_the_pipe_in_step(socket_loop: SocketLoop) -> None:
    """Real threads: after every round of concurrent wakes and one consume, a new wake always reaches the pipe."""
    for _ in range(200):
        threads = [threading.Thread(target=socket_loop.wake) for _ in range(4)]
        for thread in threads:
            thread.start()
        socket_loop.consume_wake()
        for thread in threads:
            thread.join(5)
        if pipe_has_a_byte(socket_loop):
            socket_loop.consume_wake()  # the loop's next turn
        assert not socket_loop.wake_pending
        socket_loop.wake()
        assert pipe_has_a_byte(socket_loop)
        socket_loop.consume_wake()


def a_pipe_at(number: int) -> int:
    """A new pipe whose write end takes descriptor `number` (as a file or socket opened later may): its read end."""
    read, write = os.pipe()
    if write != number:
        os.dup2(write, number)
        os.close(write)
    os.set_blocking(read, False)
    return read


@pytest.mark.parametrize("which", ["socket loop", "service waker"])
def test_a_wake_after_close_writes_into_no_reused_descriptor(which: str) -> None:
    """A thread that wakes a stopped loop (or a committing thread that wakes a stopped replication service) must not
    write into whatever now holds the closed pipe's number: that may be a database file or a socket."""
    from pynndb.mesh.watch import Waker

    if which == "socket loop":
        target = SocketLoop("test-loop", {"loop_turns": 0})
        number = target.wake_pipe.write_fd
        target.close()
        wake = target.wake
    else:
        waker = Waker()
        number = waker._pipe.write_fd
        waker.close()
        wake = waker.set
    reused = a_pipe_at(number)
    try:
        thread = threading.Thread(target=wake)  # (another thread than the loop's: it writes if it can)
        thread.start()
        thread.join(5)
        with pytest.raises(BlockingIOError):
            os.read(reused, 16)
    finally:
        os.close(reused)
        os.close(number)
