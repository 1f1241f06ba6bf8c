"""Wake the replication service the moment any process commits to a database it serves.

A `Waker` is one descriptor (an epoll set) that becomes readable when `set()` is called from another thread or any
process commits to a watched database (its doorbell, see core/doorbell.py). The node's socket loop waits on it with
its sockets, so the service's work runs on the loop thread without a hand-off: commits by other processes wake it
within microseconds, for every LMDB setting.
"""

from __future__ import annotations

import select
import threading

from pynndb.core.doorbell import Doorbell
from pynndb.errors import DatabaseError
from pynndb.mesh.wakepipe import WakePipe


class Waker:
    """A pollable event for one service: ``set()`` from any thread, or a commit to a watched database, makes
    ``fileno()`` readable and ``pending`` true; the owning thread (the one that runs the service's steps) sets
    ``pending`` without a system call.

    The owner clears ``pending`` *before* it runs a step and ``collect()``s the descriptor when it is readable: a
    ``set()`` racing with a step either finds the step still ahead or makes the descriptor readable again, so a
    wake-up is never lost."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._pipe = WakePipe()  # what set() rings
        self._epoll.register(self._pipe.read_fd, select.EPOLLIN)
        self._bells: dict[str, Doorbell] = {}
        self._by_fd: dict[int, Doorbell] = {}
        self.pending = False  # a step is wanted
        self.owner: int | None = None  # thread ident of the stepping thread (its set() needs no system call)

    def fileno(self) -> int:
        """Readable while a wake-up or a ring waits to be collected."""
        return self._epoll.fileno()

    @property
    def watching(self) -> bool:
        """True when at least one database is watched."""
        return bool(self._bells)

    def watch(self, path: str) -> bool:
        """Wake on commits to the database directory `path`; False if its doorbell cannot be used."""
        if path not in self._bells:
            try:
                bell = Doorbell(path)
            except DatabaseError:
                return False
            self._epoll.register(bell.fileno(), select.EPOLLIN)  # epoll_ctl is safe while another thread waits
            self._by_fd = {**self._by_fd, bell.fileno(): bell}  # replaced whole: collect() may be reading it
            self._bells = {**self._bells, path: bell}
            self.set()  # commits made before the doorbell existed rang nobody
        return True

    def unwatch(self, path: str) -> None:
        bell = self._bells.get(path)
        if bell is not None:
            self._bells = {other: kept for other, kept in self._bells.items() if other != path}
            self._by_fd = {fd: kept for fd, kept in self._by_fd.items() if kept is not bell}
            try:
                self._epoll.unregister(bell.fileno())
            except (OSError, ValueError):
                pass
            bell.close()

    def set(self) -> None:
        """Ask for a step (from any thread)."""
        self.pending = True
        if threading.get_ident() == self.owner:
            return  # the owner looks at `pending` before it sleeps
        self._pipe.ring()  # (closed: the service stopped, and this writes nowhere)

    def collect(self) -> bool:
        """Consume what made the descriptor readable (wake-ups and rings); True (and ``pending``) if anything was."""
        try:
            ready = self._epoll.poll(0)
        except (OSError, ValueError):
            return False  # closed meanwhile (stopping)
        if not ready:
            return False
        by_fd = self._by_fd
        for fd, _events in ready:
            if fd == self._pipe.read_fd:
                self._pipe.drain()
            else:
                bell = by_fd.get(fd)
                if bell is not None and not bell.closed:
                    bell.drain()
        self.pending = True
        return True

    def drain_bells(self) -> None:
        """Consume the pending rings of the watched databases (not `set()`'s wake-ups): a caller about to read
        every watched journal anyway, whose own commits rang them."""
        for bell in list(self._bells.values()):
            if not bell.closed:
                bell.drain()

    def close(self) -> None:
        """Close everything (a commit in another thread that wakes a stopped service then writes nowhere: see
        wakepipe.py)."""
        self._pipe.close()
        for bell in self._bells.values():
            bell.close()
        self._bells = {}
        self._by_fd = {}
        self._epoll.close()


class CommitWake:
    """The commit listener of a service's databases: wakes its `Waker` after commits this process makes, except
    those its own thread makes in a step before the step polls the served journals (its applies: that step
    publishes them anyway, so a wake-up would only run one more, idle step). The step calls `begin()`, then
    `polling()` just before it polls; `end()` when the step is over, whatever happened."""

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self._ahead = False
        self._committed = False

    def __call__(self) -> None:
        if self._ahead and threading.get_ident() == self.waker.owner:
            self._committed = True
            return
        self.waker.set()

    def begin(self) -> None:
        self._committed = False
        self._ahead = True

    def polling(self) -> None:
        if self._committed:
            self.waker.drain_bells()  # our own commits rang our doorbells: the poll that follows reads them
        self._ahead = False

    def end(self) -> None:
        self._ahead = False
