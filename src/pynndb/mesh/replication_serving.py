"""Answers to replicas' requests for a source served by this node (gap repair, snapshots), off the node loop.

A snapshot can take long: answers run on a small pool, each streamed frame by frame to the requester's node. A
request that offers a `window` gets flow control: after sending chunk n the answer waits until the replica has
acknowledged chunk n - window (`SnapshotAck`, handed over by `acknowledge`), so a snapshot of any size holds at most
`window` chunks (each at most 1 MiB) in the queues between the two nodes, and the serving thread reads the database
at the pace the replica writes it instead of racing ahead. An answer ends early, and the replica asks again, when
it is superseded (the same replica asked again for the same source), when the requester's node goes down, when no
acknowledgement comes for STALL seconds, or when the node stops. Flow-controlled snapshots run on threads of their
own (SNAPSHOT_WORKERS), so that gap repairs (WORKERS) never wait behind a long one.

An answer's thread hands each frame to the node's loop (``send``), which carries every other message of the node
and needs the GIL for it. Reading and framing a chunk holds the GIL all along but for py-lmdb's cursor steps, too
brief for a waiting thread to take it: the loop waited for it up to the interpreter's switch interval (5 ms) or until
the answer's window was full, and a live entry of another database with it (writes made during a full sync of 200k
documents took up to 10-15 ms, benchmarks/long_run.py). So ``send`` returns a marker the loop sets when it has run
the frame's hand-off, and the thread waits for the previous frame's marker before it sends the next: it reads
chunk n + 1 while the loop sends chunk n, and the loop gets the GIL at least once a chunk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pynndb.errors import MeshError
from pynndb.replication.messages import Request, SnapshotAck, SnapshotChunk, encode
from pynndb.replication.source import Publisher

log = logging.getLogger("pynndb.replication")
WORKERS = 2  # answers of entries (gap repairs) under way at once
# Flow-controlled snapshots under way at once: each holds its thread while its replica writes it (minutes for a large
# database), so they have threads of their own and never keep a gap repair waiting behind them.
SNAPSHOT_WORKERS = 32
STALL = 30.0  # seconds an answer waits for an acknowledgement that moves it on before it gives up
HAND_OFF = 1.0  # seconds an answer waits for the loop to take its previous frame (a stopping node may never)


@dataclass
class Answer:
    """One answer under way: the request's stream and window, the last chunk acknowledged, whether it must end."""

    origin: str
    stream: int
    window: int
    acked: int = 0
    progress_at: float = field(default_factory=time.monotonic)
    cancelled: bool = False


class SourceServer:
    """Serves requests with the source's `Publisher`; ``send(origin, frame)`` carries each answer frame and returns
    the loop's marker for it, or None (see the module's docstring). `counters`
    (the service's) gets 'requests_served', 'snapshot_acks', 'snapshot_waits' (times an answer waited for its
    window) and 'answers_ended' (answers given up: superseded, requester gone, stalled)."""

    def __init__(
        self, label: str, send: Callable[[str, bytes], threading.Event | None], counters: dict[str, int]
    ) -> None:
        self._send = send
        self.counters = counters
        for name in ("requests_served", "snapshot_acks", "snapshot_waits", "answers_ended"):
            counters.setdefault(name, 0)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix=f"pynndb-{label}-serve")
        self._snapshots = ThreadPoolExecutor(SNAPSHOT_WORKERS, thread_name_prefix=f"pynndb-{label}-snapshot")
        self._answers: dict[tuple[str, str], Answer] = {}  # (replica, source) -> its latest answer
        self._changed = threading.Condition()
        self._stopping = False

    def submit(
        self, publisher: Publisher, request: Request, origin: str, done: Callable[[], None] | None = None
    ) -> None:
        """Answer ``request`` (from node ``origin``) on a serving thread; an earlier answer to the same replica for
        the same source ends (the replica takes only the answer to its latest request). ``done`` runs when the
        answer no longer reads the database: it ended or failed, or the server had stopped before it was queued (one
        still queued when the server stops never runs ``done``: the node releases every database then)."""
        key = (request.replica, request.source)
        answer = Answer(origin, request.stream, request.window)
        with self._changed:
            previous = self._answers.get(key)
            if previous is not None:
                previous.cancelled = True
            self._answers[key] = answer
            self._changed.notify_all()

        def run() -> None:
            prefix = request.replica.encode()
            handed: threading.Event | None = None  # the loop's marker for the previous frame
            try:
                for message in publisher.serve(request):
                    if answer.window and isinstance(message, SnapshotChunk) and not self._room(answer, message.number):
                        return self._ended(origin, request)
                    frame = encode(message, prefix)
                    if handed is not None:
                        handed.wait(HAND_OFF)
                    if answer.cancelled or self._stopping:  # (a window's answer also learns it in _room)
                        return self._ended(origin, request)
                    handed = self._send(origin, frame)
                self.counters["requests_served"] += 1
            except MeshError as error:
                # The requester went away (killed, restarted with a new id): it will ask again when back.
                log.info("answer to %s for %s dropped: %s", origin, request.source, error)
            except Exception:
                log.exception("serving a replication request failed")
            finally:
                with self._changed:
                    if self._answers.get(key) is answer:
                        del self._answers[key]
                if done is not None:
                    done()

        long = request.window and publisher.needs_snapshot(request)  # (else a snapshot after a trim: the rare case)
        try:
            (self._snapshots if long else self._pool).submit(run)
        except RuntimeError:  # the server stopped (its pools shut down): no answer
            if done is not None:
                done()

    def _ended(self, origin: str, request: Request) -> None:
        self.counters["answers_ended"] += 1
        log.info("answer to %s for %s ended before its end", origin, request.source)

    def _room(self, answer: Answer, number: int) -> bool:
        """Wait until chunk `number` may be sent (the replica acknowledged `number - window`); False if the answer
        must end instead."""
        with self._changed:
            if number - answer.acked > answer.window:
                self.counters["snapshot_waits"] += 1
            while number - answer.acked > answer.window:
                if answer.cancelled or self._stopping:
                    return False
                left = answer.progress_at + STALL - time.monotonic()
                if left <= 0:
                    log.warning("no acknowledgement from %s for %.0f s: the snapshot answer ends", answer.origin, STALL)
                    return False
                self._changed.wait(left)
            return not (answer.cancelled or self._stopping)

    def acknowledge(self, ack: SnapshotAck) -> None:
        """A replica took the chunks of snapshot `ack.stream` up to `ack.number` (from any thread)."""
        with self._changed:
            self.counters["snapshot_acks"] += 1
            answer = self._answers.get((ack.replica, ack.source))
            if answer is not None and answer.stream == ack.stream and ack.number > answer.acked:
                answer.acked = ack.number
                answer.progress_at = time.monotonic()
                self._changed.notify_all()

    def forget(self, origin: str) -> None:
        """The node ``origin`` went down: answers to it end (its replicas ask again when it is back)."""
        with self._changed:
            for answer in self._answers.values():
                if answer.origin == origin:
                    answer.cancelled = True
            self._changed.notify_all()

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        for pool in (self._pool, self._snapshots):
            pool.shutdown(wait=True, cancel_futures=True)
