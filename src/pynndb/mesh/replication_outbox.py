"""Requests of hosted replicas waiting to be sent to their source's node, and the policy for sources not found.

Loop-free and clock-injected: the service adds what replicas ask for, and ``route`` (given who serves which source)
says where each request goes, which replicas wait for a source nobody serves (stalled after a while), and which
found theirs again. A request whose source stays unknown is dropped after ``GIVE_UP_AFTER``: the replica asks again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pynndb.replication.messages import Reply
from pynndb.replication.replica import Replica

SOURCE_MISSING_AFTER = 3.0  # seconds without a node serving the source before the replica shows as stalled
GIVE_UP_AFTER = 30.0  # seconds a request waits for its source to be found


@dataclass
class Routed:
    """The outcome of one ``route``: requests to send (owner node id, request), and sources missing or found."""

    send: list[tuple[str, Reply]] = field(default_factory=list)
    missing: list[Reply] = field(default_factory=list)
    found: list[Reply] = field(default_factory=list)


class RequestOutbox:
    """Thread-safe: replicas' requests are added by the service's steps (on the node loop) and by command handlers."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._waiting: list[tuple[Reply, float]] = []

    def add(self, requests: list[Reply]) -> None:
        if requests:
            now = self.clock()
            with self._lock:
                self._waiting.extend((request, now) for request in requests)

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def route(self, owners: Callable[[], Mapping[str, str]]) -> Routed:
        """Take every waiting request; ``owners()`` (asked only when some wait) maps a source uuid to its node."""
        with self._lock:
            waiting, self._waiting = self._waiting, []
        routed = Routed()
        if not waiting:
            return routed
        known = owners()
        now = self.clock()
        kept = []
        for request, since in waiting:
            owner = known.get(request.source)
            if owner is None:
                waited = now - since
                if waited > SOURCE_MISSING_AFTER:
                    routed.missing.append(request)
                if waited < GIVE_UP_AFTER:
                    kept.append((request, since))  # its source is not known yet: keep asking
                continue
            routed.found.append(request)
            routed.send.append((owner, request))
        if kept:
            with self._lock:
                self._waiting.extend(kept)
        return routed


MISSING = "source {source} is not registered on any node of the mesh (yet)"


def stall_for_missing_source(replica: Replica) -> None:
    """Show a replica whose source no node serves as stalled, with the reason."""
    if replica.state != "stalled":
        replica.state = "stalled"
        replica.reason = MISSING.format(source=replica.source)


def clear_missing_source(replica: Replica) -> None:
    """The replica's source is served again: undo ``stall_for_missing_source`` (not other stalls)."""
    if replica.reason and replica.reason.startswith("source "):
        replica.reason = None
        replica.state = "live" if replica.hwm >= replica.source_last else "syncing"
