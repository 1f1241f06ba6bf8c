"""What arrived for the replication service, in arrival order: live entries of one source that arrived together
are merged, so a replica behind a burst of small commits catches up in one transaction, not one per message.

Loop-free: ``coalesce`` gets the arrivals and three functions (decode, deliver, handle) and calls them in order.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

from pynndb.replication.messages import Entries, Message

Arrival = tuple[str, bytes, str]  # ('topic' | 'targeted', payload, origin node id)
TOPIC = "topic"
TARGETED = "targeted"


def coalesce(
    arrived: list[Arrival],
    decode: Callable[[bytes, str], Message | None],
    deliver: Callable[[Message], None],
    handle: Callable[[bytes, str], None],
) -> None:
    """Decode topic frames and ``deliver`` them (runs of one source's live entries as one), ``handle`` targeted
    frames; order is kept (a targeted frame is handled after the entries that came before it)."""
    merged: Entries | None = None
    for kind, payload, origin in arrived:
        if kind == TOPIC:
            message = decode(payload, origin)
            if isinstance(message, Entries):
                if merged is not None and merged.source == message.source:
                    merged = Entries(message.source, merged.entries + message.entries, max(merged.last, message.last))
                else:
                    if merged is not None:
                        deliver(merged)
                    merged = message
                continue
            if merged is not None:
                deliver(merged)
                merged = None
            if message is not None:
                deliver(message)
            continue
        if merged is not None:
            deliver(merged)
            merged = None
        handle(payload, origin)
    if merged is not None:
        deliver(merged)


def take_slice(inbox: queue.SimpleQueue[Arrival], frames: int, size: int) -> tuple[list[Arrival], bool]:
    """What one step handles: arrivals in order, up to ``frames`` of them or until ``size`` payload bytes are taken;
    and whether the limit was reached (more may wait)."""
    arrived: list[Arrival] = []
    taken = 0
    while len(arrived) < frames and taken < size:
        if inbox.empty():  # (cheaper than the exception of a get: most steps find nothing or end here)
            return arrived, False
        arrival = inbox.get_nowait()  # (the service's step is the only taker: what is there stays there)
        arrived.append(arrival)
        taken += len(arrival[1])
    return arrived, True
