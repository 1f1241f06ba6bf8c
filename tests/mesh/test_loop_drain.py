"""How the socket loop reads a socket (mesh/drain.py): the first read of a drain is tried at once (a signalled socket
nearly always holds a message), a ROUTER's identity part is read as bytes, and a message of the wrong number of parts
is read whole, counted as malformed and never shifts the parts of the messages after it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import zmq

from pynndb.errors import MalformedMessage
from pynndb.mesh.loop import SocketLoop


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket, zmq.Socket]]:
    """A ROUTER bound on 127.0.0.1 and a DEALER connected to it."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer
    dealer.close(0)
    router.close(0)
    context.term()


def counters() -> dict[str, int]:
    return {"loop_turns": 0, "frames_in": 0, "bytes_in": 0, "malformed": 0}


def test_a_router_message_of_the_wrong_shape_is_dropped_whole(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    router, dealer = pair
    loop = SocketLoop("test-drain", counters())
    handled: list[tuple[bytes, bytes]] = []
    loop.watch_router(router, lambda identity, frame: handled.append((identity, frame)))
    dealer.send(b"first")
    dealer.send_multipart([b"two", b"parts"])  # three at the ROUTER: not a link or command message
    dealer.send_multipart([b"three", b"more", b"parts"])
    dealer.send(b"last")
    assert router.poll(5000)
    deadline = time.monotonic() + 5
    while len(handled) < 2 and time.monotonic() < deadline:
        loop.readers[router](router)
        router.poll(50)
    loop.close()
    identity = handled[0][0]
    assert handled == [(identity, b"first"), (identity, b"last")]
    assert isinstance(identity, bytes) and identity
    assert loop.counters["malformed"] == 2
    assert loop.counters["frames_in"] == 4


def test_draining_a_socket_that_holds_nothing_reads_nothing(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    # A socket's descriptor also fires for ZeroMQ's own signals: the first read then fails (zmq.Again), which the
    # drain takes as "empty", forgets the socket among those to re-check, and reads on normally afterwards.
    router, dealer = pair
    loop = SocketLoop("test-drain", counters())
    handled: list[bytes] = []
    loop.watch_router(router, lambda _identity, frame: handled.append(frame))
    loop.touched.add(router)
    loop.readers[router](router)
    assert handled == []
    assert router not in loop.touched
    assert loop.counters["frames_in"] == 0
    dealer.send(b"after")
    assert router.poll(5000)
    loop.readers[router](router)
    loop.close()
    assert handled == [b"after"]


def test_the_parts_of_a_dealer_message_are_taken_one_by_one(pair: tuple[zmq.Socket, zmq.Socket]) -> None:
    # A DEALER's messages carry no identity, so nothing shifts: each part of a message the mesh never sends (it
    # sends one part a message) is checked like any frame, and a part the handler refuses is counted as malformed.
    router, dealer = pair
    dealer.send(b"hello")
    assert router.poll(5000)
    identity = router.recv_multipart()[0]
    loop = SocketLoop("test-drain", counters())
    handled: list[tuple[str, bytes]] = []

    def handle(owner: str, frame: bytes) -> None:
        if frame == b"bad":
            raise MalformedMessage("refused")
        handled.append((owner, frame))

    loop.watch_dealer(dealer, "owner", handle)
    router.send_multipart([identity, b"first"])
    router.send_multipart([identity, b"bad", b"part"])
    router.send_multipart([identity, b"last"])
    deadline = time.monotonic() + 5
    while len(handled) < 3 and time.monotonic() < deadline:
        dealer.poll(50)
        loop.readers[dealer](dealer)
    loop.close()
    assert handled == [("owner", b"first"), ("owner", b"part"), ("owner", b"last")]
    assert loop.counters["malformed"] == 1 and loop.counters["frames_in"] == 4


def test_call_soon_runs_inline_only_on_the_running_loop_thread() -> None:
    loop = SocketLoop("test-drain", counters())
    ran: list[str] = []
    loop.call_soon(lambda: ran.append("before start"))
    assert ran == [] and len(loop.ops) == 1  # no loop thread yet: posted
    loop.ops.clear()
    loop.thread.start()
    try:
        assert loop.on_loop(lambda: loop.call_soon(lambda: ran.append(threading.current_thread().name)) or True)
        assert ran == ["test-drain"]  # on the loop thread: at once
    finally:
        loop.stopping = True
        loop.wake()
        loop.thread.join(5)
    assert not loop.thread.is_alive()
    assert loop.ident is None  # a thread created later may reuse the ident: it is no longer the loop's
    loop.call_soon(lambda: ran.append("after stop"))
    assert ran == ["test-drain"] and len(loop.ops) == 1
    loop.close()
