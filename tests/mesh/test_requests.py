"""Command requests without sockets: where a request goes (here, a live node, a gone one, nowhere), replies,
deadlines on a fake clock, node_gone, cancel_all and the per-command result counters, with plain values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from pynndb.errors import MalformedMessage
from pynndb.mesh import commands, requests, wire
from pynndb.mesh.commands import Command
from pynndb.mesh.directory import Directory
from pynndb.mesh.local import Endpoints
from pynndb.mesh.requests import Requests
from tests.mesh.test_directory import Clock, entry

SELF, A, B, C = "0" * 32, "a" * 32, "b" * 32, "c" * 32


def echo(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    return {"params": params, "origin": context["origin"], "node": context["node"]}


def fail(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("no good")


class Node:
    """One node's requests, a directory with A and C alive and B gone, and what it sends, answers and queues."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.directory = Directory(SELF, self.clock)
        for node_id, label in ((A, "a"), (B, "b"), (C, "c")):
            self.directory.merge(entry(node_id, label))
        self.directory.mark_gone(B)
        self.directory.last_seen[B] = 997.5
        self.endpoints = Endpoints(node="the node")
        for command in (
            Command("ECHO", echo, "echo", inline=True),
            Command("SLOW", echo, "echo off the loop"),
            Command("FAIL", fail, "fails", inline=True),
        ):
            self.endpoints.commands[command.name] = command
        self.sent: list[tuple[int, Any, str | None]] = []
        self.answered: list[tuple[bytes, int, Any]] = []
        self.workers: list[Callable[[], None]] = []  # handlers queued off the loop
        self.loop: list[Callable[[], None]] = []  # jobs handed to the loop thread
        self.accepting = True
        self.requests = Requests(
            SELF,
            "self",
            self.directory,
            self.endpoints,
            self.send,
            self.answer,
            self.submit,
            self.loop.append,
            clock=self.clock,
            wall_clock=lambda: 1000.0,
        )

    def send(self, kind: int, body: bytes, target: str | None) -> None:
        self.sent.append((kind, orjson.loads(body), target))

    def answer(self, identity: bytes, frame: bytes) -> None:
        self.answered.append((identity, *wire.decode_control(frame)))

    def submit(self, job: Callable[[], None]) -> bool:
        if self.accepting:
            self.workers.append(job)
        return self.accepting

    def run(self, jobs: list[Callable[[], None]]) -> None:
        while jobs:
            jobs.pop(0)()

    def ask(self, name: Any, params: Any = None, target: Any = None, timeout: Any = None) -> list[dict[str, Any]]:
        """Start a request; the list its replies go to."""
        replies: list[dict[str, Any]] = []
        self.requests.start_request(name, params, target, timeout, replies.append)
        return replies


def code(reply: dict[str, Any]) -> str:
    assert reply["ok"] is False, reply
    return str(reply["error"]["code"])


@pytest.mark.parametrize("target", [None, SELF, "self", "alias"])
def test_a_request_without_a_target_or_to_this_node_runs_here(target: str | None) -> None:
    node = Node()
    node.directory.merge(entry(SELF, "alias"))  # this node's own entry, found by another label
    replies = node.ask("echo", {"x": 1}, target)
    assert replies == [{"ok": True, "result": {"params": {"x": 1}, "origin": SELF, "node": "the node"}}]
    assert node.sent == [] and node.requests.pending == {}
    assert node.requests.counters["commands"] == 1


def test_a_handler_that_is_not_inline_runs_off_the_loop_and_a_full_queue_answers_busy() -> None:
    node = Node()
    replies = node.ask("slow", {"x": 1})
    assert replies == [] and len(node.workers) == 1  # queued for a worker, not run on the loop
    node.run(node.workers)
    assert replies == [] and len(node.loop) == 1  # its reply is handed back to the loop thread
    node.run(node.loop)
    assert replies[0]["ok"] and replies[0]["result"]["params"] == {"x": 1}
    node.accepting = False
    replies = node.ask("slow")
    assert code(replies[0]) == commands.BUSY and replies[0]["error"]["message"] == "command queue full"
    assert node.requests.results_by_command() == {"SLOW": {"ok": 1, "busy": 1}}


@pytest.mark.parametrize("target", ["a", A])
def test_a_request_to_a_live_node_is_sent_as_a_command_and_waits(target: str) -> None:
    node = Node()
    replies = node.ask("echo", {"x": 1}, target, 2.0)
    node.ask("ping", None, "c")
    assert node.sent == [
        (wire.COMMAND, {"req": 1, "cmd": "echo", "params": {"x": 1}}, A),
        (wire.COMMAND, {"req": 2, "cmd": "ping", "params": None}, C),
    ]
    assert replies == [] and node.requests.counters["commands"] == 0  # run there, not here
    assert [(deadline, to) for _, deadline, to in node.requests.pending.values()] == [(102.0, A), (105.0, C)]


def test_a_request_to_a_gone_node_fails_at_once() -> None:
    node = Node()
    replies = node.ask("echo", None, "b")
    assert code(replies[0]) == commands.NODE_GONE
    assert replies[0]["error"]["message"] == f"node {B} (b) is gone, last heard 2.5s ago"
    assert node.sent == [] and node.requests.pending == {}


def test_a_request_to_an_unknown_node_fails_with_unknown_target() -> None:
    node = Node()
    replies = node.ask("echo", None, "nobody")
    assert replies == [commands.error_reply(commands.UNKNOWN_TARGET, "no node 'nobody' in the mesh")]
    assert node.sent == [] and node.requests.pending == {}


@pytest.mark.parametrize(
    ("name", "target", "timeout"),
    [("", None, None), (5, None, None), ("echo", 7, None)] + [("echo", "a", bad) for bad in (0, -1, 3601, True, "5")],
)
def test_a_bad_request_gets_bad_params_and_goes_nowhere(name: Any, target: Any, timeout: Any) -> None:
    node = Node()
    replies = node.ask(name, None, target, timeout)
    assert len(replies) == 1 and code(replies[0]) == commands.BAD_PARAMS
    assert node.sent == [] and node.requests.pending == {} and node.requests.counters["commands"] == 0


def test_requests_in_flight_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requests, "MAX_PENDING", 2)
    node = Node()
    node.ask("echo", None, "a")
    node.ask("echo", None, "a")
    replies = node.ask("echo", None, "a")
    assert code(replies[0]) == commands.BUSY and len(node.sent) == 2 and len(node.requests.pending) == 2


def test_a_reply_completes_its_own_request_once_and_unknown_replies_are_ignored() -> None:
    node = Node()
    first, second = node.ask("echo", None, "a"), node.ask("echo", None, "c")
    answer = {"req": 2, "ok": True, "result": {"from": "c"}}
    node.requests.on_reply(dict(answer))
    assert second == [{"ok": True, "result": {"from": "c"}}] and first == []
    node.requests.on_reply(dict(answer))  # a duplicate
    node.requests.on_reply({"req": 99, "ok": True, "result": {}})  # never asked
    assert len(second) == 1 and first == [] and list(node.requests.pending) == [1]
    for bad in ({"ok": True}, {"req": "1"}, {"req": True}, ["req", 1]):
        with pytest.raises(MalformedMessage):
            node.requests.on_reply(bad)
    assert first == [] and list(node.requests.pending) == [1]


def test_a_request_with_no_reply_by_its_deadline_gets_a_timeout() -> None:
    node = Node()
    early, late = node.ask("echo", None, "a", 2.0), node.ask("echo", None, "a", 5.0)
    node.requests.expire(101.999)
    assert early == [] and late == []
    node.requests.expire(102.0)
    assert early == [commands.error_reply(commands.TIMEOUT, "no reply before the deadline")] and late == []
    node.requests.on_reply({"req": 1, "ok": True, "result": {}})  # too late: already answered
    node.requests.expire(200.0)
    assert len(early) == 1 and code(late[0]) == commands.TIMEOUT and node.requests.pending == {}


def test_a_node_marked_gone_fails_every_request_in_flight_to_it() -> None:
    node = Node()
    to_a, to_c, again_a = node.ask("echo", None, "a"), node.ask("echo", None, "c"), node.ask("echo", None, A)
    node.directory.last_seen[A] = 999.0
    node.requests.node_gone(A)
    expected = commands.error_reply(commands.NODE_GONE, f"node {A} (a) is gone, last heard 1.0s ago")
    assert to_a == [expected] and again_a == [expected] and to_c == []
    assert [to for _, _, to in node.requests.pending.values()] == [C]


def test_a_stopping_node_answers_every_request_in_flight() -> None:
    node = Node()
    to_a, to_c = node.ask("echo", None, "a"), node.ask("echo", None, "c")
    node.requests.cancel_all()
    assert [code(reply) for reply in to_a + to_c] == [commands.SHUTTING_DOWN] * 2
    assert node.requests.pending == {}
    node.requests.expire(1e9)
    assert len(to_a) == len(to_c) == 1


def test_a_plugin_request_is_answered_on_the_command_port() -> None:
    node = Node()
    frame = wire.encode_control(wire.REQUEST, {"req": "r1", "cmd": "echo", "params": {"x": 1}})
    node.requests.on_client_request(b"client", frame)  # (on the loop thread: an inline command is answered at once)
    result = {"params": {"x": 1}, "origin": SELF, "node": "the node"}
    assert node.answered == [(b"client", wire.RESPONSE, {"ok": True, "result": result, "req": "r1"})]
    routed = wire.encode_control(wire.REQUEST, {"req": 7, "cmd": "echo", "target": "a", "timeout": 1})
    node.requests.on_client_request(b"other", routed)
    assert node.sent == [(wire.COMMAND, {"req": 1, "cmd": "echo", "params": None}, A)]
    node.requests.on_reply({"req": 1, "ok": True, "result": {"there": True}})
    assert node.answered[1] == (b"other", wire.RESPONSE, {"ok": True, "result": {"there": True}, "req": 7})
    assert node.requests.counters == {"requests": 2, "commands": 1}


@pytest.mark.parametrize(
    "frame",
    [
        wire.encode_control(wire.RESPONSE, {"req": 1, "cmd": "echo"}),
        wire.encode_control(wire.REQUEST, {"cmd": "echo"}),
        wire.encode_control(wire.REQUEST, {"req": True, "cmd": "echo"}),
        wire.encode_control(wire.REQUEST, ["echo"]),
    ],
)
def test_a_malformed_plugin_request_is_refused(frame: bytes) -> None:
    node = Node()
    with pytest.raises(MalformedMessage):
        node.requests.on_client_request(b"client", frame)
    node.run(node.loop)
    assert node.answered == [] and node.requests.counters == {"requests": 0, "commands": 0}


def test_a_command_from_another_node_runs_here_and_its_reply_is_routed_back() -> None:
    node = Node()
    node.requests.on_command(A, {"req": 5, "cmd": "echo", "params": {"y": 2}})
    node.requests.on_command(C, {"req": 6, "cmd": 3})
    node.requests.on_command(C, {"req": 7, "cmd": "nope"})
    # On the loop thread, an inline command's reply and a refusal go out at once; an unknown command is answered
    # by a worker (as every command not inline), and its reply goes out from the loop thread.
    assert [body["req"] for _, body, _ in node.sent] == [5, 6]
    node.run(node.workers)
    assert len(node.sent) == 2
    node.run(node.loop)
    result = {"params": {"y": 2}, "origin": A, "node": "the node"}
    assert node.sent[0] == (wire.REPLY, {"ok": True, "result": result, "req": 5}, A)
    assert [(code(body), body["req"], to) for _, body, to in node.sent[1:]] == [
        (commands.BAD_PARAMS, 6, C),
        (commands.UNKNOWN_COMMAND, 7, C),
    ]
    with pytest.raises(MalformedMessage):
        node.requests.on_command(A, {"cmd": "echo"})


def test_results_are_counted_per_command_and_outcome() -> None:
    node = Node()
    node.ask("echo")
    node.ask("ECHO", None, "self")
    node.ask("fail")
    node.ask("nope")
    node.run(node.workers)
    node.run(node.loop)  # a command run by a worker is counted on the loop thread, with its reply
    node.ask("echo", None, "a")  # runs elsewhere: counted there
    node.requests.on_command(A, {"req": 1, "cmd": "fail"})
    assert node.requests.results_by_command() == {
        "ECHO": {"ok": 2},
        "FAIL": {"bad_params": 2},
        "unknown": {"unknown_command": 1},
    }
