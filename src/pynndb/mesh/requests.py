"""Command requests, loop-free: from Plugins on the command port and from other nodes, run here or routed on.

Keeps the table of requests in flight (each gets exactly one reply: the result, an error, or a timeout). No
sockets, threads or engine: it reads the directory, and sends, answers and runs handlers through the callables it
is given; the engine wires them to its loop and calls it on the loop thread; tests call it with plain values.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson

from pynndb.errors import MalformedMessage
from pynndb.mesh import commands, wire
from pynndb.mesh.directory import Directory
from pynndb.mesh.local import Endpoints

MAX_PENDING = 10_000
Reply = dict[str, Any]
OnReply = Callable[[Reply], None]
Job = Callable[[], None]
Send = Callable[[int, bytes, "str | None"], None]  # (message type, body, target node id): a routed frame from here
Answer = Callable[[bytes, bytes], None]  # (client identity, RESPONSE frame): to a Plugin on the command port


class Requests:
    """Command dispatch for one node; every method runs on the loop thread.

    ``send`` and ``answer`` put a frame on a socket (loop thread only); ``submit`` queues a handler off the loop
    (False when its queue is full); ``call_soon`` runs a job on the loop thread (at once when already on it), so a
    reply made on a worker goes out from the loop; ``clock`` sets deadlines."""

    def __init__(
        self,
        self_id: str,
        label: str,
        directory: Directory,
        endpoints: Endpoints,
        send: Send,
        answer: Answer,
        submit: Callable[[Job], bool],
        call_soon: Callable[[Job], None],
        lock: threading.RLock | None = None,
        counters: dict[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.self_id, self.label = self_id, label
        self.directory, self.endpoints = directory, endpoints
        self.send, self.answer, self.submit, self.call_soon = send, answer, submit, call_soon
        self.lock = lock if lock is not None else threading.RLock()  # the directory's, for lookups
        self.counters = counters if counters is not None else {"requests": 0, "commands": 0}
        self.clock, self.wall_clock = clock, wall_clock
        self.pending: dict[int, tuple[OnReply, float, str]] = {}  # reply callback, deadline, target node id
        self.request_ids = itertools.count(1)
        self.results: defaultdict[tuple[str, str], int] = defaultdict(int)  # (command, 'ok' or error code) -> count

    def on_client_request(self, identity: bytes, frame: bytes) -> None:
        if frame[:2] != wire.REQUEST_HEAD:
            wire.decode_control(frame)  # raises on a bad preamble or body
            raise MalformedMessage("command port only takes REQUEST")
        body = wire.require_dict(wire.decode_json_body(frame, 2), "request")
        request_id = body.get("req")
        if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
            raise MalformedMessage("request without a valid 'req'")
        self.counters["requests"] += 1
        answer = self.answer

        def respond(reply: Reply) -> None:  # (on the loop thread: see `run_command`)
            answer(identity, wire.RESPONSE_HEAD + orjson.dumps(dict(reply, req=request_id)))

        self.start_request(body.get("cmd"), body.get("params"), body.get("target"), body.get("timeout"), respond)

    def start_request(self, name: Any, params: Any, target: Any, timeout: Any, on_reply: OnReply) -> None:
        """Run a command here or route it to its target; ``on_reply`` gets exactly one reply."""
        if not isinstance(name, str) or not name:
            on_reply(commands.error_reply(commands.BAD_PARAMS, "'cmd' must be a non-empty string"))
            return
        if target is not None and not isinstance(target, str):
            on_reply(commands.error_reply(commands.BAD_PARAMS, "'target' must be a node id or label"))
            return
        if timeout is None:
            timeout = 5.0
        elif not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
            on_reply(commands.error_reply(commands.BAD_PARAMS, "'timeout' must be a positive number"))
            return
        if target is None or target == self.self_id or target == self.label:
            self.run_command(name, params, self.self_id, on_reply)
            return
        entry = self.directory.entries.get(target)  # by id (on the loop thread, which alone adds entries)...
        if entry is None:
            with self.lock:
                entry = self.directory.lookup(target)  # ...or by label
        if entry is None:
            on_reply(commands.error_reply(commands.UNKNOWN_TARGET, f"no node {target!r} in the mesh"))
            return
        node_id = entry["id"]
        if node_id == self.self_id:
            self.run_command(name, params, node_id, on_reply)
            return
        if not self.directory.is_alive(node_id):
            on_reply(commands.error_reply(commands.NODE_GONE, self.gone_message(node_id)))
            return
        if len(self.pending) >= MAX_PENDING:
            on_reply(commands.error_reply(commands.BUSY, "too many requests in flight"))
            return
        request_id = next(self.request_ids)
        self.pending[request_id] = (on_reply, self.clock() + timeout, node_id)
        self.send(wire.COMMAND, orjson.dumps({"req": request_id, "cmd": name, "params": params}), node_id)

    def run_command(self, name: str, params: Any, origin: str, on_reply: OnReply) -> None:
        """Run a command here; ``on_reply`` gets its reply on the loop thread (from a worker, through ``call_soon``)."""
        command = self.endpoints.commands.get(name.upper())
        if command is not None and command.inline:
            on_reply(self.run_inline(command, name, params, origin))
            return
        self.counters["commands"] += 1
        context = {"origin": origin, "node": self.endpoints.node}
        label = command.name if command is not None else "unknown"
        call_soon = self.call_soon

        def work() -> None:
            reply = commands.run(command, name, params, context)
            call_soon(lambda: self.finish(label, reply, on_reply))

        if not self.submit(work):
            self.finish(label, commands.error_reply(commands.BUSY, "command queue full"), on_reply)

    def run_inline(self, command: commands.Command, name: str, params: Any, origin: str) -> Reply:
        """Run a command made to run on the loop (a fast, non-blocking built-in) and count its outcome."""
        self.counters["commands"] += 1
        reply = commands.run(command, name, params, {"origin": origin, "node": self.endpoints.node})
        self.count(command.name, reply)
        return reply

    def finish(self, name: str, reply: Reply, on_reply: OnReply) -> None:
        self.count(name, reply)
        on_reply(reply)

    def results_by_command(self) -> dict[str, dict[str, int]]:
        """Commands run here: {command: {'ok' or error code: count}}."""
        table: dict[str, dict[str, int]] = {}
        for (command, code), count in list(self.results.items()):
            table.setdefault(command, {})[code] = count
        return table

    def count(self, name: str, reply: Reply) -> None:
        """Count a command's outcome: 'ok' or its error code."""
        if reply.get("ok"):
            self.results[name, "ok"] += 1
        else:
            error = reply.get("error")
            self.results[name, str(error.get("code", "error") if isinstance(error, dict) else "error")] += 1

    def on_command(self, origin: str, body: Any) -> None:
        body = wire.require_dict(body, "command")
        request_id = wire.require_field(body, "req", int)
        send = self.send

        def reply(result: Reply) -> None:  # (on the loop thread: see `run_command`)
            send(wire.REPLY, orjson.dumps(dict(result, req=request_id)), origin)

        name = body.get("cmd")
        if not isinstance(name, str):
            reply(commands.error_reply(commands.BAD_PARAMS, "'cmd' must be a string"))
            return
        self.run_command(name, body.get("params"), origin, reply)

    def on_reply(self, body: Any) -> None:
        body = wire.require_dict(body, "reply")
        waiting = self.pending.pop(wire.require_field(body, "req", int), None)
        if waiting is not None:
            body.pop("req", None)
            waiting[0](body)

    def gone_message(self, node_id: str) -> str:
        directory = self.directory
        entry = directory.entries.get(node_id)
        label = f" ({entry['label']})" if entry else ""
        heard = directory.last_seen.get(node_id)
        ago = f", last heard {self.wall_clock() - heard:.1f}s ago" if heard else ""
        return f"node {node_id}{label} is gone{ago}"

    def node_gone(self, node_id: str) -> None:
        """Answer every request in flight to a node the mesh has just marked gone: no point waiting for it."""
        for request_id, (on_reply, _deadline, target) in list(self.pending.items()):
            if target == node_id:
                del self.pending[request_id]
                on_reply(commands.error_reply(commands.NODE_GONE, self.gone_message(node_id)))

    def expire(self, now: float) -> None:
        """Answer every request whose deadline has passed with a timeout error."""
        for request_id, (on_reply, deadline, _target) in list(self.pending.items()):
            if now >= deadline:
                del self.pending[request_id]
                on_reply(commands.error_reply(commands.TIMEOUT, "no reply before the deadline"))

    def cancel_all(self) -> None:
        """Answer every request in flight: the node is stopping."""
        for on_reply, _deadline, _target in self.pending.values():
            on_reply(commands.error_reply(commands.SHUTTING_DOWN, "node is stopping"))
        self.pending.clear()
