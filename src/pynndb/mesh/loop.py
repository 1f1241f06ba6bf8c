"""The thin socket loop of a node: waits on its sockets and a wake-up pipe, reads what arrived, and hands every
frame to the engine; other threads hand it work through ``post``.

Services run their work on the loop too, as tasks (`LoopTask`): a task is stepped when its descriptor turns
readable, when it asks to be (``pending``), or at its deadline, after the sockets were read and before queued
publishes are flushed, so neither what arrived nor what it publishes waits for a thread hand-off.

The loop waits on the sockets' ZMQ_FD descriptors with one ``select.poll`` call instead of ``zmq_poll``, which
probes every socket (a syscall each) twice per wait. Those descriptors are edge-triggered: a socket is drained until
its ZMQ_EVENTS shows no input, and any socket sent on during a turn is re-checked with ZMQ_EVENTS before the loop
sleeps again, because a send can consume the signal of a message that arrived meanwhile.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import zmq

from pynndb.errors import MeshError
from pynndb.mesh.drain import EVENTS, POLLIN, RouterHandler, drain_dealer, drain_router
from pynndb.mesh.wakepipe import WakePipe

log = logging.getLogger("pynndb.mesh.engine")

NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)  # (a plain int, as drain.py's constants)
# `zmq.Socket.send` is a Python wrapper (for DRAFT sockets' routing_id and group) around the compiled backend's
# send, which the hot paths call directly: ~0.4 µs a send less. Called as send(socket, data, flags, copy).
send: Callable[..., Any] = zmq.backend.Socket.send
DealerHandler = Callable[[Any, bytes], None]  # (the socket's owner, frame)


class LoopTask(Protocol):
    """Work that runs on a node's socket loop instead of a thread of its own (a service's steps).

    The loop waits on ``fileno()`` with its sockets and calls ``collect()`` when it is readable; it calls ``step()``
    in each turn in which ``pending`` is true or ``deadline`` (time.monotonic) has passed, and never sleeps while
    ``pending`` is true. A step must be short (it holds up every socket of the node): long work is cut in slices,
    leaving ``pending`` set for the next turn."""

    @property
    def pending(self) -> bool: ...

    @property
    def deadline(self) -> float: ...

    def fileno(self) -> int: ...

    def collect(self) -> bool: ...

    def step(self) -> None: ...


class SocketLoop:
    """Owns the poller; after each wake-up ``turn()`` (the engine's timers and queued sends) runs and returns
    the next deadline, and ``farewell()`` runs once the loop stops."""

    def __init__(self, name: str, counters: dict[str, int]) -> None:
        self.counters = counters
        self.ops: deque[Callable[[], None]] = deque()
        self.wake_pending = False
        self.ident: int | None = None  # the loop thread's ident, once it runs
        self.tasks: list[LoopTask] = []
        self.fd_tasks: dict[int, LoopTask] = {}
        self.wake_pipe = WakePipe()
        self.stopping = False
        self.poller = select.poll()
        self.poller.register(self.wake_pipe.read_fd, select.POLLIN)
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
        self._watch(socket, partial(drain_router, self, handle))

    def watch_dealer(self, socket: zmq.Socket, owner: Any, handle: DealerHandler) -> None:
        """Read a DEALER in the loop: ``handle(owner, frame)`` per message."""
        self._watch(socket, partial(drain_dealer, self, partial(handle, owner)))

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
        """Close the wake-up pipe (a late `wake()` from another thread then writes nowhere: see wakepipe.py)."""
        self.wake_pipe.close()

    # --- hand-over from other threads --------------------------------------------------------------------
    def wake(self) -> None:
        """Make the loop turn soon (from any thread); one byte in the pipe stands for every wake-up until read."""
        if threading.get_ident() == self.ident:
            return  # on the loop thread: it runs posted operations before it sleeps, and turn() sends what is queued
        if not self.wake_pending:
            self.wake_pending = True
            self.wake_pipe.ring()

    def consume_wake(self) -> None:
        """Empty the wake-up pipe, then allow the next wake-up to write again (on the loop thread, before the turn
        that runs what was posted). In this order a `wake()` racing with it either finds the flag still set (what it
        posted runs in this turn) or writes a new byte: the flag is never set over an empty pipe, which would make
        every later `wake()` skip its write and leave the loop to its timers (a publish waiting for the next
        heartbeat, ~0.5 s)."""
        self.wake_pipe.drain()
        self.wake_pending = False

    def post(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` on the loop thread soon."""
        self.ops.append(operation)
        self.wake()

    def call_soon(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` now if on the loop thread (saves a wake-up turn), else post it."""
        if threading.get_ident() == self.ident:
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

    # --- tasks -------------------------------------------------------------------------------------------
    def add_task(self, task: LoopTask) -> None:
        """Run ``task`` on the loop from its next turn (from any thread)."""
        self.call_soon(lambda: self._add_task(task))

    def remove_task(self, task: LoopTask) -> None:
        """Stop running ``task``; when this returns no step of it runs or will run (its descriptor may be closed)."""
        if self.thread.is_alive() and threading.get_ident() != self.ident:
            try:
                self.on_loop(lambda: self._remove_task(task))
                return
            except MeshError:
                pass  # the loop is stuck or stopping: it reads the task list afresh each turn
        self._remove_task(task)

    def _add_task(self, task: LoopTask) -> None:
        if task not in self.tasks:
            self.tasks = [*self.tasks, task]
            self.fd_tasks[task.fileno()] = task
            self.poller.register(task.fileno(), select.POLLIN)

    def _remove_task(self, task: LoopTask) -> None:
        if task in self.tasks:
            self.tasks = [other for other in self.tasks if other is not task]
            fd = task.fileno()
            if self.fd_tasks.pop(fd, None) is not None:
                self.poller.unregister(fd)

    def run_tasks(self) -> float:
        """Step the tasks that are due; the earliest deadline among them afterwards."""
        now = time.monotonic()
        earliest = now + 1.0
        for task in self.tasks:
            if task.pending or now >= task.deadline:
                try:
                    task.step()
                except Exception:
                    log.exception("a loop task failed")
            deadline = task.deadline
            if deadline < earliest:
                earliest = deadline
        return earliest

    def collect(self, fd: int, events: int) -> None:
        task = self.fd_tasks[fd]
        if events & select.POLLNVAL:
            log.error("a loop task's descriptor was closed while the task ran: the task is dropped")
            self._remove_task(task)
            return
        try:
            task.collect()
        except Exception:
            log.exception("a loop task failed")

    def tasks_pending(self) -> bool:
        for task in self.tasks:  # noqa: SIM110  (run every loop turn: no generator)
            if task.pending:
                return True
        return False

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> None:
        self.ident = threading.get_ident()
        try:
            self._run()
        finally:
            self.ident = None  # (a later thread may get the same ident: `call_soon` must not take it for the loop)

    def _run(self) -> None:
        deadline = 0.0
        ready = self.ready
        fd_sockets = self.fd_sockets
        fd_tasks = self.fd_tasks
        wake_read = self.wake_pipe.read_fd
        readers = self.readers
        counters = self.counters
        touched = self.touched
        socket_fds = self.socket_fds
        poll = self.poller.poll
        monotonic = time.monotonic
        while not self.stopping:
            # In milliseconds; select.poll rounds a fraction up, so the loop never spins on a timer.
            if ready or self.ops or (self.tasks and self.tasks_pending()):
                timeout = 0.0
            else:
                timeout = (deadline - monotonic()) * 1000
                if timeout < 0.0:
                    timeout = 0.0  # (a negative timeout would wait for ever)
            for fd, events in poll(timeout):
                socket = fd_sockets.get(fd)
                if socket is not None:
                    ready.add(socket)
                elif fd == wake_read:
                    self.consume_wake()
                elif fd in fd_tasks:
                    self.collect(fd, events)
            counters["loop_turns"] += 1
            if ready:
                batch = list(ready)
                ready.clear()
                for socket in batch:
                    reader = readers.get(socket)
                    if reader is not None and not socket.closed:
                        reader(socket)
            if self.ops:
                self.run_ops()
            if self.tasks:
                task_deadline = self.run_tasks()  # before turn(): what the tasks publish is flushed in this turn
                deadline = self.turn()
                if task_deadline < deadline:
                    deadline = task_deadline
            else:
                deadline = self.turn()
            while touched:  # a send may have taken the edge signal of arrived input
                socket = touched.pop()
                if socket in socket_fds and not socket.closed and socket.getsockopt(EVENTS) & POLLIN:  # type: ignore[operator]
                    ready.add(socket)
        self.farewell()

    def run_ops(self) -> None:
        for _ in range(10_000):
            if not self.ops:
                return
            operation = self.ops.popleft()
            try:
                operation()
            except Exception:
                log.exception("loop operation failed")
