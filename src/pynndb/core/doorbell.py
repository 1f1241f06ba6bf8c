"""The commit doorbell: a process that commits to a journaled database wakes every process waiting on it.

Each listener owns a FIFO under ``<database>/.bell/``; after a commit the writer writes one byte to each
(non-blocking: a full pipe means a wake-up is already pending). Works for every LMDB setting (writemap or not) and
every process on the machine, with no polling and no file-change events; a ring costs about a microsecond.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import select
import threading
import time
import weakref
from types import TracebackType

from pynndb.errors import DatabaseError

BELL_DIRECTORY = ".bell"
SUFFIX = ".fifo"
GENERATION = "generation"
_WRITE_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC


def bell_directory(path: str) -> str:
    """The directory holding the listeners of the database at `path`."""
    return os.path.join(path, BELL_DIRECTORY)


class Bell:
    """The ringing side, one per open database: `ring()` after a commit wakes every listener (cheap without any).

    Listeners announce themselves by writing a new random value into ``.bell/generation``; ringers map that file
    and list the directory again only when the value changed, so a ring without listeners reads 8 bytes of memory.
    """

    __slots__ = ("_directory", "_map", "_generation", "_targets", "_fds", "_retry_at", "_lock")

    def __init__(self, path: str) -> None:
        self._directory = bell_directory(path)
        self._map: mmap.mmap | None = None
        self._generation = b""
        self._targets: dict[str, int] = {}  # listener file name -> our write end of its FIFO
        self._fds: tuple[int, ...] = ()
        self._retry_at = 0.0
        # Threads of one process commit one after the other but ring at the same time: one of them may close a dead
        # listener's descriptor (or the database's close() every one) while another writes to it, and a write must
        # never go into whatever file reuses the number. The writes and closes run under this lock.
        self._lock = threading.Lock()

    def ring(self) -> None:
        """Wake every listener of this database; never blocks, never raises for a missing or dead listener."""
        shared = self._map
        if shared is not None and not self._fds and shared[:8] == self._generation:
            return  # nobody listens, and nobody announced itself since: 8 bytes of memory read, no lock
        with self._lock:
            shared = self._map
            if shared is None:
                shared = self._open()
                if shared is None:
                    return
            if shared[:8] != self._generation:
                self._scan(shared)
            for fd in self._fds:
                try:
                    os.write(fd, b"\x01")
                except BlockingIOError:
                    pass  # its pipe is full: a wake-up is already pending
                except OSError:
                    self._forget(fd)  # EPIPE: its process died without removing its FIFO

    def _open(self) -> mmap.mmap | None:
        now = time.monotonic()
        if now < self._retry_at:
            return None
        try:
            self._map = open_generation(self._directory, mmap.ACCESS_READ)
        except OSError:
            self._retry_at = now + 1.0  # a read-only location (no listener can exist there): look again later
        return self._map

    def _scan(self, shared: mmap.mmap) -> None:
        # Read the generation before listing: a listener that writes it after making its FIFO is then either
        # in this listing or makes the next ring list again.
        self._generation = shared[:8]
        try:
            names = {name for name in os.listdir(self._directory) if name.endswith(SUFFIX)}
        except OSError:
            names = set()
        for name in [name for name in self._targets if name not in names]:
            os.close(self._targets.pop(name))
        for name in names - self._targets.keys():
            file = os.path.join(self._directory, name)
            try:
                self._targets[name] = os.open(file, _WRITE_FLAGS)
            except OSError as error:
                if error.errno == errno.ENXIO:
                    _unlink(file)  # a FIFO nobody reads: its listener died without removing it
        self._fds = tuple(self._targets.values())

    def _forget(self, fd: int) -> None:
        for name, known in list(self._targets.items()):
            if known == fd:
                del self._targets[name]
                _unlink(os.path.join(self._directory, name))
        os.close(fd)
        self._fds = tuple(self._targets.values())

    def close(self) -> None:
        with self._lock:
            for fd in self._targets.values():
                os.close(fd)
            self._targets.clear()
            self._fds = ()
            self._generation = b""
            if self._map is not None:
                self._map.close()
                self._map = None


def open_generation(directory: str, access: int) -> mmap.mmap:
    """Map ``<directory>/generation`` (8 bytes, created if missing)."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, GENERATION), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        if os.fstat(fd).st_size < 8:
            os.ftruncate(fd, 8)
        return mmap.mmap(fd, 8, access=access)
    finally:
        os.close(fd)


def announce(directory: str) -> None:
    """Tell every ringer that the listeners of `directory` changed."""
    shared = open_generation(directory, mmap.ACCESS_WRITE)
    try:
        shared[:8] = secrets.token_bytes(8)
    finally:
        shared.close()


class Doorbell:
    """A listener woken by every commit to the database at `path`, from any process (select-able by `fileno()`).

    ``with Doorbell(db.path) as bell: bell.wait(1.0)``; `drain()` after waking, before reading what changed.
    """

    def __init__(self, path: str) -> None:
        if not os.path.isdir(path):
            raise DatabaseError(f"cannot listen for commits: no database directory at {path}")
        directory = bell_directory(path)
        self.path = path
        self.name = f"{os.getpid()}-{secrets.token_hex(6)}{SUFFIX}"
        self.file = os.path.join(directory, self.name)
        try:
            os.makedirs(directory, exist_ok=True)
            remove_stale(directory)
            os.mkfifo(self.file, 0o666)
            self._read = os.open(self.file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            _unlink(self.file)
            raise DatabaseError(f"cannot listen for commits in {directory}: {error.strerror}") from None
        # Our own write end keeps the FIFO from reporting end-of-file (readable for ever) once a ringer closes it.
        self._keep = os.open(self.file, _WRITE_FLAGS)
        try:
            announce(directory)
        except OSError as error:
            _release(self._read, self._keep, self.file, os.getpid())
            raise DatabaseError(f"cannot listen for commits in {directory}: {error.strerror}") from None
        # Remove the FIFO when this object goes away or the interpreter exits, whichever comes first.
        self._finalizer = weakref.finalize(self, _release, self._read, self._keep, self.file, os.getpid())

    def fileno(self) -> int:
        return self._read

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a commit rings (True) or `timeout` seconds pass (False; None waits for ever)."""
        if self.closed:
            raise DatabaseError("this doorbell is closed")
        ready, _, _ = select.select([self._read], [], [], timeout)
        return bool(ready)

    def drain(self) -> int:
        """Consume pending rings (call before reading what changed); returns how many there were."""
        count = 0
        for _ in range(64):  # bounded: a pipe holds at most 64 KiB of rings
            try:
                chunk = os.read(self._read, 65536)
            except (BlockingIOError, InterruptedError):
                break
            count += len(chunk)
            if len(chunk) < 65536:
                break  # a short read emptied the FIFO (a later ring makes it readable again): no EAGAIN read
        return count

    def close(self) -> None:
        """Stop listening and remove this listener's FIFO."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> Doorbell:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Doorbell {self.file}>"


def _release(read: int, keep: int, file: str, pid: int) -> None:
    os.close(read)
    os.close(keep)
    if os.getpid() == pid:  # a forked child must not remove its parent's listener
        _unlink(file)
        try:
            announce(os.path.dirname(file))  # ringers close their end of it at their next ring
        except OSError:
            pass


def _unlink(file: str) -> None:
    try:
        os.unlink(file)
    except OSError:
        pass


def remove_stale(directory: str) -> int:
    """Remove the FIFOs of listeners whose process is gone; returns how many were removed."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        pid_text = name.split("-", 1)[0]
        if not name.endswith(SUFFIX) or not pid_text.isdigit():
            continue
        if not _alive(int(pid_text)):
            _unlink(os.path.join(directory, name))
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
