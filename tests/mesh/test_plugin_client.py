"""The command client against a hand-driven ROUTER on 127.0.0.1 (a real socket, no node): whatever arrives that is
not the answer to the call in progress (a multipart message, a malformed frame, a stale reply) is dropped, and each
call waits for its own timeout, whatever the timeout of the call before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from pynndb.errors import CommandTimeout
from pynndb.mesh import wire
from pynndb.mesh.plugin import Plugin

Script = Callable[[dict], list[list[bytes]]]


class FakeNode:
    """A ROUTER that answers each request with what `script` returns: a list of messages (each a list of frames)."""

    def __init__(self, script: Script) -> None:
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.linger = 0
        self.port = self.router.bind_to_random_port("tcp://127.0.0.1")
        self.script = script
        self.requests: list[dict] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stopping.is_set():
            if not self.router.poll(20):
                continue
            identity, frame = self.router.recv_multipart()
            _kind, body = wire.decode_control(frame)
            self.requests.append(body)
            for message in self.script(body):
                self.router.send_multipart([identity, *message])

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.router.close(0)
        self.context.term()


def reply(request: dict, result: dict, req: int | None = None) -> list[bytes]:
    body = {"req": request["req"] if req is None else req, "ok": True, "result": result}
    return [wire.encode_control(wire.RESPONSE, body)]


@pytest.fixture
def node_factory() -> Iterator[Callable[[Script], FakeNode]]:
    made: list[FakeNode] = []

    def make(script: Script) -> FakeNode:
        made.append(FakeNode(script))
        return made[-1]

    yield make
    for node in made:
        node.close()


def test_what_is_not_the_answer_is_dropped_and_the_answer_returned(node_factory: Callable[[Script], FakeNode]) -> None:
    def script(request: dict) -> list[list[bytes]]:
        return [
            [b"part one", b"part two", b"part three"],  # multipart: not a reply of ours
            [b"\xff not a wire frame"],  # malformed
            [wire.encode_control(wire.RESPONSE, [1, 2])],  # a body that is no dict
            reply(request, {"stale": True}, req=request["req"] + 1000),  # another call's answer
            reply(request, {"pong": request["cmd"]}),
        ]

    node = node_factory(script)
    with Plugin(f"tcp://127.0.0.1:{node.port}") as plugin:
        assert plugin.call("PING", timeout=5) == {"pong": "PING"}
        assert plugin.call("STATUS", timeout=5) == {"pong": "STATUS"}  # nothing left over from the first call
    assert [request["cmd"] for request in node.requests] == ["PING", "STATUS"]


def test_each_call_waits_for_its_own_timeout(node_factory: Callable[[Script], FakeNode]) -> None:
    """The receive timeout is set on the socket only when it changes: a short call after a long one must still end
    at its own deadline, and a long call after a short one must not end at the short one's."""
    delays = {"FAST": 0.0, "SILENT": None, "SLOW": 0.6}

    def script(request: dict) -> list[list[bytes]]:
        delay = delays[request["cmd"]]
        if delay is None:
            return []
        time.sleep(delay)
        return [reply(request, {"done": request["cmd"]})]

    node = node_factory(script)
    with Plugin(f"tcp://127.0.0.1:{node.port}") as plugin:
        assert plugin.call("FAST", timeout=5) == {"done": "FAST"}
        started = time.monotonic()
        with pytest.raises(CommandTimeout):
            plugin.call("SILENT", timeout=0.3)
        assert time.monotonic() - started < 2.0  # its own 0.3 s, not the 5 s of the call before
        # After a 0.3 s call the socket's timeout was short; this call waits 0.6 s for its answer.
        assert plugin.call("SLOW", timeout=5) == {"done": "SLOW"}
