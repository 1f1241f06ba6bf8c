"""How a node's socket loop reads a socket it was told holds input: every message, up to a limit, handed on whole.

A socket is drained because it was signalled, and nearly always a message waits (in a 1-hop command round trip, all
but ~0.1 % of drains): the first read is tried at once, and a failed one processes the socket's pending signals as
ZMQ_EVENTS would. After a message, ZMQ_EVENTS says whether another waits, which costs less than a failed read
(raising zmq.Again). A `zmq.Frame` says whether more parts follow, where `recv_multipart` asks getsockopt(RCVMORE)
after every part (pyzmq builds an enum member for each). Every message a node takes in passes here, so both drains
are written out flat: a node's round trip is mostly the interpreter running this layer and the next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from pynndb.errors import MalformedMessage

if TYPE_CHECKING:
    from pynndb.mesh.loop import SocketLoop

# pyzmq's constants are enums: `&` on them runs Python code (~1 us each); the hot paths use plain ints.
EVENTS, POLLIN, NOBLOCK = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.NOBLOCK)
DRAIN_LIMIT = 2000  # frames taken from one socket per loop turn, so no socket starves the others
DECODE_ERRORS = (MalformedMessage, ValueError, KeyError, TypeError, UnicodeDecodeError)
RouterHandler = Callable[[bytes, bytes], None]  # (identity, frame)


def drain_router(loop: SocketLoop, handle: RouterHandler, socket: zmq.Socket) -> None:
    """Read what a ROUTER holds (at most DRAIN_LIMIT messages), handing each (identity, frame) on. The identity part
    is read as bytes (it always has a part after it), the second as a `zmq.Frame`, which says whether more follow:
    a message of another shape is read whole and counted as malformed, never shifting the messages after it."""
    counters = loop.counters
    recv = socket.recv
    try:
        identity = recv(NOBLOCK)
    except zmq.Again:
        loop.touched.discard(socket)
        return
    for _ in range(DRAIN_LIMIT):
        frame = recv(NOBLOCK, copy=False)  # (ZeroMQ delivers a message's parts together: this cannot fail)
        counters["frames_in"] += 1
        if frame.more:
            counters["bytes_in"] += len(_rest(recv, frame))
            counters["malformed"] += 1
        else:
            data = frame.bytes
            counters["bytes_in"] += len(data)
            try:
                handle(identity, data)
            except DECODE_ERRORS:
                counters["malformed"] += 1
        if socket.closed:
            return  # a BYE just removed this link
        more = socket.getsockopt(EVENTS) & POLLIN  # type: ignore[operator]
        if more:
            try:
                identity = recv(NOBLOCK)
            except zmq.Again:  # (not expected once ZMQ_EVENTS said so; never let the loop thread die of it)
                more = 0
        if not more:
            loop.touched.discard(socket)
            return
    loop.ready.add(socket)  # more may be waiting: read on in the next turn, after the others


def drain_dealer(loop: SocketLoop, handle: Callable[[bytes], None], socket: zmq.Socket) -> None:
    """Read what a DEALER holds, handing each part on (see `drain_router`).

    Read as bytes, without asking whether more parts follow: a `zmq.Frame` costs ~1.2 µs a message more, and a
    DEALER's messages carry no identity that parts could shift against. The mesh sends one part a message; the parts
    of any other message are taken as messages of their own, each checked like any frame (a malformed one counted)."""
    counters = loop.counters
    recv = socket.recv
    try:
        data = recv(NOBLOCK)
    except zmq.Again:
        loop.touched.discard(socket)
        return
    for _ in range(DRAIN_LIMIT):
        counters["frames_in"] += 1
        counters["bytes_in"] += len(data)
        try:
            handle(data)
        except DECODE_ERRORS:
            counters["malformed"] += 1
        if socket.closed:
            return
        more = socket.getsockopt(EVENTS) & POLLIN  # type: ignore[operator]
        if more:
            try:
                data = recv(NOBLOCK)
            except zmq.Again:  # (not expected once ZMQ_EVENTS said so; never let the loop thread die of it)
                more = 0
        if not more:
            loop.touched.discard(socket)
            return
    loop.ready.add(socket)


def _rest(recv: Callable[..., Any], frame: zmq.Frame) -> bytes:
    """Read the parts left of a message whose ``frame`` says more follow; the last part."""
    while frame.more:  # (bounded: the parts of one message, which ZeroMQ delivers whole)
        frame = recv(NOBLOCK, copy=False)
    return frame.bytes
