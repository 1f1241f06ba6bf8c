"""A wake-up pipe: the descriptor a poller waits on, made readable from any thread.

The socket loop (`loop.SocketLoop.wake`) and the replication service's `watch.Waker` each own one. `ring()` writes
one byte without blocking (a full pipe already holds a wake-up); `drain()` empties it; `close()` drops both
descriptors under the lock `ring()` writes under, so a `ring()` from another thread after the close writes nowhere,
never into whatever file or socket reuses the number.
"""

from __future__ import annotations

import os
import threading


class WakePipe:
    __slots__ = ("read_fd", "write_fd", "_lock")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()

    def ring(self) -> None:
        """Make the read end readable (from any thread); does nothing once closed."""
        with self._lock:
            if self.write_fd < 0:
                return  # closed
            try:
                os.write(self.write_fd, b"\x01")
            except OSError:
                pass  # the pipe is full: a wake-up is already pending

    def drain(self) -> None:
        """Read every pending wake-up byte (on the waiting thread)."""
        for _ in range(64):  # bounded: each read empties up to 64 KiB of wake bytes
            try:
                if len(os.read(self.read_fd, 65536)) < 65536:
                    return  # a short read emptied the pipe: no read just to see EAGAIN
            except OSError:
                return  # empty (EAGAIN), or closed meanwhile

    def close(self) -> None:
        with self._lock:
            descriptors = (self.read_fd, self.write_fd)
            self.read_fd = self.write_fd = -1
        for descriptor in descriptors:
            if descriptor >= 0:
                try:
                    os.close(descriptor)
                except OSError:
                    pass
