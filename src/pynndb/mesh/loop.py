"""The thin socket loop of a node: waits on its sockets and a wake-up pipe, reads what arrived, and hands every
frame to the engine; other threads hand it work through ``post``.

The loop waits on the sockets' ZMQ_FD descriptors with one ``select.poll`` call instead of ``zmq_poll``, which
probes every socket (a syscall each) twice per wait. Those descriptors are edge-triggered: a socket is drained until
EAGAIN, and any socket sent on during a turn is re-checked with ZMQ_EVENTS before the loop sleeps again, because a
send can consume the signal of a message that arrived meanwhile.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from pynndb.errors import MalformedMessage, MeshError

log = logging.getLogger("pynndb.mesh.engine")

DRAIN_LIMIT = 2000  # frames taken from one socket per loop turn, so no socket starves the others
DECODE_ERRORS = (MalformedMessage, ValueError, KeyError, TypeError, UnicodeDecodeError)
RouterHandler = Callable[[bytes, bytes], None]  # (identity, frame)
DealerHandler = Callable[[Any, bytes], None]  # (the socket's owner, frame)


class SocketLoop:
    """Owns the poller; after each wake-up ``turn()`` (the engine's timers and queued sends) runs and returns
    the next deadline, and ``farewell()`` runs once the loop stops."""

    def __init__(self, name: str, counters: dict[str, int]) -> None:
        self.counters = counters
        self.ops: deque[Callable[[], None]] = deque()
        self.wake_pending = False
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.stopping = False
        self.poller = select.poll()
        self.poller.register(self.wake_read, select.POLLIN)
        self.fd_sockets: dict[int, zmq.Socket] = {}
        self.socket_fds: dict[zmq.Socket, int] = {}  # every socket the loop reads, and its ZMQ_FD
        self.readers: dict[zmq.Socket, Callable[[zmq.Socket], None]] = {}
        self.ready: set[zmq.Socket] = set()  # sockets that may hold input: drain them without sleeping
        self.touched: set[zmq.Socket] = set()  # sockets sent on this turn: check ZMQ_EVENTS before sleeping
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.turn: Callable[[], float] = lambda: time.monotonic() + 1.0
        self.farewell: Callable[[], None] = lambda: None  # runs on the loop thread once it stops

    # --- sockets -------------------------------------------------------------------------------------------
    def watch_router(self, socket: zmq.Socket, handle: RouterHandler) -> None:
        """Read a ROUTER in the loop: ``handle(identity, frame)`` per message."""
        self._watch(socket, lambda s: self._drain(s, 2, lambda frames: handle(frames[0], frames[1])))

    def watch_dealer(self, socket: zmq.Socket, owner: Any, handle: DealerHandler) -> None:
        """Read a DEALER in the loop: ``handle(owner, frame)`` per message."""
        self._watch(socket, lambda s: self._drain(s, 1, lambda frames: handle(owner, frames[0])))

    def _watch(self, socket: zmq.Socket, reader: Callable[[zmq.Socket], None]) -> None:
        fd = int(socket.getsockopt(zmq.FD))
        self.socket_fds[socket] = fd
        self.fd_sockets[fd] = socket
        self.readers[socket] = reader
        self.poller.register(fd, select.POLLIN)
        self.ready.add(socket)  # it may have signalled before it was watched

    def unwatch(self, socket: zmq.Socket) -> None:
        """Stop reading a socket (before it is closed)."""
        fd = self.socket_fds.pop(socket, None)
        if fd is not None:
            self.fd_sockets.pop(fd, None)
            self.poller.unregister(fd)
        self.readers.pop(socket, None)
        self.ready.discard(socket)
        self.touched.discard(socket)

    def close(self) -> None:
        for fd in (self.wake_read, self.wake_write):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- hand-over from other threads --------------------------------------------------------------------
    def wake(self) -> None:
        """Make the loop turn soon (from any thread); one byte in the pipe stands for every wake-up until read."""
        if not self.wake_pending:
            self.wake_pending = True
            try:
                os.write(self.wake_write, b"!")
            except (BlockingIOError, OSError):
                pass  # the pipe is full (a wake-up is already pending) or closed (stopping)

    def consume_wake(self) -> None:
        """Empty the wake-up pipe, then allow the next wake-up to write again (on the loop thread, before the turn
        that runs what was posted). In this order a `wake()` racing with it either finds the flag still set (what it
        posted runs in this turn) or writes a new byte: the flag is never set over an empty pipe, which would make
        every later `wake()` skip its write and leave the loop to its timers (a publish waiting for the next
        heartbeat, ~0.5 s)."""
        try:
            os.read(self.wake_read, 4096)
        except (BlockingIOError, OSError):
            pass
        self.wake_pending = False

    def post(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` on the loop thread soon."""
        self.ops.append(operation)
        self.wake()

    def call_soon(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` now if on the loop thread (saves a wake-up turn), else post it."""
        if threading.current_thread() is self.thread:
            operation()
        else:
            self.post(operation)

    def on_loop(self, operation: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``operation`` on the loop thread and wait (bounded) for its result or exception."""
        if threading.current_thread() is self.thread:
            return operation()
        done = threading.Event()
        outcome: list[Any] = []

        def run() -> None:
            try:
                outcome.append((True, operation()))
            except Exception as error:
                outcome.append((False, error))
            done.set()

        self.post(run)
        if not done.wait(timeout):
            raise MeshError("the node loop did not answer in time")
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> None:
        deadline = 0.0
        ready = self.ready
        fd_sockets = self.fd_sockets
        wake_read = self.wake_read
        readers = self.readers
        while not self.stopping:
            # In milliseconds; select.poll rounds a fraction up, so the loop never spins on a timer.
            timeout = 0.0 if ready else max(0.0, (deadline - time.monotonic()) * 1000)
            for fd, _ in self.poller.poll(timeout):
                if fd == wake_read:
                    self.consume_wake()
                else:
                    socket = fd_sockets.get(fd)
                    if socket is not None:
                        ready.add(socket)
            self.counters["loop_turns"] += 1
            batch = list(ready)
            ready.clear()
            for socket in batch:
                reader = readers.get(socket)
                if reader is not None and not socket.closed:
                    reader(socket)
            self.run_ops()
            deadline = self.turn()
            if self.touched:
                self.recheck_touched()
        self.farewell()

    def recheck_touched(self) -> None:
        """A send may have taken the edge signal of arrived input; look at ZMQ_EVENTS of what was sent on."""
        touched = self.touched
        while touched:
            socket = touched.pop()
            if socket in self.socket_fds and not socket.closed and int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                self.ready.add(socket)

    def run_ops(self) -> None:
        for _ in range(10_000):
            if not self.ops:
                return
            operation = self.ops.popleft()
            try:
                operation()
            except Exception:
                log.exception("loop operation failed")

    def _drain(self, socket: zmq.Socket, parts: int, handle: Callable[[list[bytes]], None]) -> None:
        """Read what ``socket`` holds (at most DRAIN_LIMIT messages) and hand each message of ``parts`` frames on."""
        counters = self.counters
        for _ in range(DRAIN_LIMIT):
            if socket.closed:
                return  # a BYE just removed this link
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                self.touched.discard(socket)  # EAGAIN processed its signals: its ZMQ_FD will fire again
                return
            counters["frames_in"] += 1
            counters["bytes_in"] += len(frames[-1])
            if len(frames) != parts:
                counters["malformed"] += 1
                continue
            try:
                handle(frames)
            except DECODE_ERRORS:
                counters["malformed"] += 1
        self.ready.add(socket)  # more may be waiting: read on in the next turn, after the others
