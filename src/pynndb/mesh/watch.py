"""Wake the replication service the moment another process commits to a database it serves.

LMDB (without writemap) writes a commit's pages with pwrite, so Linux inotify reports IN_MODIFY on ``data.mdb``
for every commit: the node learns of an application's write in microseconds without polling the journal.
Where inotify is unavailable (not Linux, or writemap databases) the service falls back to polling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import sys

IN_MODIFY = 0x00000002
_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1  # noqa: B018  (probe that the symbol exists)
        return libc
    except (OSError, AttributeError):
        return None


class Waker:
    """A select()-able event: `set()` from any thread wakes `wait()`; commits to watched files wake it too."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(_NONBLOCK_CLOEXEC) if hasattr(os, "pipe2") else os.pipe()
        self._libc = _libc()
        self._inotify = -1
        self._watches: dict[str, int] = {}
        if self._libc is not None:
            self._inotify = self._libc.inotify_init1(_NONBLOCK_CLOEXEC)

    @property
    def watching(self) -> bool:
        """True when at least one file is watched by inotify."""
        return bool(self._watches)

    def watch(self, path: str) -> bool:
        """Wake on modifications of `path`; False if inotify is not available for it."""
        if self._inotify < 0 or path in self._watches:
            return path in self._watches
        assert self._libc is not None
        descriptor = self._libc.inotify_add_watch(self._inotify, os.fsencode(path), IN_MODIFY)
        if descriptor < 0:
            return False
        self._watches[path] = descriptor
        return True

    def unwatch(self, path: str) -> None:
        descriptor = self._watches.pop(path, None)
        if descriptor is not None and self._libc is not None:
            self._libc.inotify_rm_watch(self._inotify, descriptor)

    def set(self) -> None:
        try:
            os.write(self._write, b"\x01")
        except BlockingIOError:
            pass  # the pipe is full: a wake-up is already pending
        except OSError as error:
            if error.errno != errno.EBADF:
                raise

    def wait(self, timeout: float) -> bool:
        """Block until set(), a watched file changes, or `timeout` passes; True if woken."""
        sources = [self._read] + ([self._inotify] if self._watches else [])
        ready, _, _ = select.select(sources, [], [], timeout)
        for descriptor in ready:
            self._drain(descriptor)
        return bool(ready)

    @staticmethod
    def _drain(descriptor: int) -> None:
        for _ in range(64):  # bounded: each read empties up to 64 KiB of events or wake bytes
            try:
                if not os.read(descriptor, 65536):
                    return
            except (BlockingIOError, InterruptedError):
                return

    def close(self) -> None:
        for descriptor in (self._read, self._write, self._inotify):
            if descriptor >= 0:
                try:
                    os.close(descriptor)
                except OSError:
                    pass
        self._read = self._write = self._inotify = -1
        self._watches.clear()
