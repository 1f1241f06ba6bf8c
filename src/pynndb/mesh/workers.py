"""Worker threads that run user callbacks and command handlers off the socket loop, and a reply future.

A slow callback therefore delays only other callbacks, never the loop that moves messages.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from pynndb.errors import MalformedMessage
from pynndb.mesh import wire

log = logging.getLogger("pynndb.mesh.workers")

_STOP = object()


class WorkerPool:
    """``size`` daemon threads taking jobs from one bounded queue, in order when ``size`` is 1."""

    def __init__(self, name: str, size: int = 1, capacity: int = 100_000) -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{index}", daemon=True) for index in range(size)
        ]
        self.dropped = 0
        self.failed = 0

    def start(self) -> WorkerPool:
        for thread in self._threads:
            thread.start()
        return self

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue a job; return False (and count it) if the queue is full."""
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                job()
            except Exception:
                self.failed += 1
                log.exception("%s: a callback raised", self.name)

    def stop(self, timeout: float = 2.0) -> None:
        """Ask every thread to finish its current job and exit; wait a bounded time."""
        for _ in self._threads:
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                break
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)

    def backlog(self) -> int:
        return self._queue.qsize()


class ReplyFuture:
    """A one-shot slot for a command reply, filled by the loop and awaited by the caller."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reply: dict[str, Any] | None = None

    def set(self, reply: dict[str, Any]) -> None:
        if not self._event.is_set():
            self.reply = reply
            self._event.set()

    def wait(self, timeout: float) -> dict[str, Any] | None:
        self._event.wait(timeout)
        return self.reply


def deliver_batch(
    counters: dict[str, int], callback: Callable[[str, bytes, str], None], frame: bytes, offset: int, origin: str
) -> None:
    """Decode a PUBLISH body and hand each payload to the subscriber (runs on the callback worker)."""
    try:
        batch = wire.decode_topic_body(frame, offset)
    except MalformedMessage:
        counters["malformed"] += 1
        return
    counters["delivered"] += len(batch.payloads)
    for payload in batch.payloads:
        callback(batch.topic, payload, origin)
