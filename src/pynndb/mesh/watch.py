"""Wake the replication service the moment any process commits to a database it serves.

A `Waker` waits on its own pipe (`set()` from any thread) and on the commit doorbell of every watched database
(see core/doorbell.py): commits by other processes wake it within microseconds, for every LMDB setting.
"""

from __future__ import annotations

import errno
import os
import select
import threading

from pynndb.core.doorbell import Doorbell
from pynndb.errors import DatabaseError

_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC


class Waker:
    """A select()-able event: `set()` from any thread wakes `wait()`; commits to watched databases wake it too."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(_NONBLOCK_CLOEXEC) if hasattr(os, "pipe2") else os.pipe()
        self._bells: dict[str, Doorbell] = {}

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
            self._bells = {**self._bells, path: bell}  # replaced whole: wait() may be iterating the old one
            self.set()  # a wait in progress selects again, now with this doorbell
        return True

    def unwatch(self, path: str) -> None:
        bell = self._bells.get(path)
        if bell is not None:
            self._bells = {other: kept for other, kept in self._bells.items() if other != path}
            bell.close()

    def set(self) -> None:
        try:
            os.write(self._write, b"\x01")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending
        except OSError as error:
            if error.errno != errno.EBADF:
                raise

    def wait(self, timeout: float) -> bool:
        """Block until set(), a commit to a watched database, or `timeout` passes; True if woken.

        Rings are consumed before returning, so a commit made after this returns wakes the next wait."""
        bells = list(self._bells.values())
        try:
            ready, _, _ = select.select([self._read, *(bell.fileno() for bell in bells)], [], [], timeout)
        except (OSError, ValueError):
            return True  # a doorbell was closed by unwatch() meanwhile: the caller loops and waits again
        if not ready:
            return False
        self._drain(self._read)
        for bell in bells:
            if not bell.closed:
                bell.drain()
        return True

    def drain_bells(self) -> None:
        """Consume the pending rings of the watched databases (not `set()`'s wake-ups): a caller about to read
        every watched journal anyway, whose own commits rang them."""
        for bell in list(self._bells.values()):
            if not bell.closed:
                bell.drain()

    @staticmethod
    def _drain(descriptor: int) -> None:
        for _ in range(64):  # bounded: each read empties up to 64 KiB of wake bytes
            try:
                if not os.read(descriptor, 65536):
                    return
            except (BlockingIOError, InterruptedError):
                return

    def close(self) -> None:
        for bell in self._bells.values():
            bell.close()
        self._bells.clear()
        for descriptor in (self._read, self._write):
            if descriptor >= 0:
                try:
                    os.close(descriptor)
                except OSError:
                    pass
        self._read = self._write = -1


class CommitWake:
    """The commit listener of a service's databases: wakes its `Waker` after commits this process makes, except
    those its own thread makes in a step before the step polls the served journals (its applies: that step
    publishes them anyway, so a wake-up would only run one more, idle step). The step calls `begin()`, then
    `polling()` just before it polls; `end()` when the step is over, whatever happened."""

    def __init__(self, waker: Waker) -> None:
        self.waker = waker
        self.thread: threading.Thread | None = None  # the service thread
        self._ahead = False
        self._committed = False

    def __call__(self) -> None:
        if self._ahead and threading.current_thread() is self.thread:
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
