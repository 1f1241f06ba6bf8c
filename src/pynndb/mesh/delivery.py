"""Delivery to what services registered: topic payloads, targeted messages and peer changes, each either inline on
the socket loop (callbacks that only queue work) or in order on the node's callback thread.

A failing inline callback is counted and logged, never fatal to the loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pynndb.mesh.directory import Change
from pynndb.mesh.local import Endpoints
from pynndb.mesh.workers import WorkerPool, deliver_batch

log = logging.getLogger("pynndb.mesh.engine")


class Delivery:
    """Hands arrivals to the endpoints' callbacks; ``counters`` are the engine's."""

    def __init__(self, label: str, endpoints: Endpoints, counters: dict[str, int]) -> None:
        self.endpoints = endpoints
        self.counters = counters
        self.pool = WorkerPool(f"pynndb-{label}-callbacks", 1)

    def topic(self, topic: str, frame: bytes, offset: int, origin: str) -> None:
        """A PUBLISH frame for ``topic``: its payloads go to the subscriber, if this node has one."""
        subscribed = self.endpoints.topics.get(topic)
        if subscribed is None:
            return
        callback, inline = subscribed
        if inline:
            self.inline(deliver_batch, self.counters, callback, frame, offset, origin)
        else:
            self.pool.submit(lambda: deliver_batch(self.counters, callback, frame, offset, origin))

    def message(self, kind: str, payload: bytes, origin: str) -> None:
        """A targeted message of ``kind``; dropped (and counted) when nobody handles that kind here."""
        handler = self.endpoints.kinds.get(kind)
        if handler is None:
            self.counters["dropped"] += 1
            return
        self.counters["sent"] += 1
        callback, inline = handler
        if inline:
            self.inline(callback, payload, origin)
        else:
            self.pool.submit(lambda: callback(payload, origin))

    def peers(self, changes: list[Change]) -> None:
        """Nodes that came up or went down, to every peer-change callback (on the callback thread)."""
        for node_id, state in changes:
            for callback in list(self.endpoints.peer_callbacks):
                self.pool.submit(lambda cb=callback, n=node_id, s=state: cb(n, s))  # type: ignore[misc]

    def inline(self, function: Callable[..., None], *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            self.counters["callbacks_failed"] = self.counters.get("callbacks_failed", 0) + 1
            log.exception("inline callback failed")
