"""``Plugin``: a command-channel client that connects to a node's command port (port3).

``call`` sends a REQUEST, waits (bounded) for the RESPONSE with the same request id, and returns the result or
raises ``CommandError`` / ``CommandTimeout``. One Plugin may be shared between threads (calls are serialised).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
import weakref
from os import PathLike
from typing import TYPE_CHECKING, Any

import orjson
import zmq

from pynndb.errors import CommandTimeout, InvalidArgument, InvalidKeys, MeshError, NodeUnreachable
from pynndb.mesh import commands, security, wire
from pynndb.mesh.links import configure, split_address
from pynndb.mesh.loop import send
from pynndb.mesh.security import KeyPair
from pynndb.mesh.verbs import CommandVerbs

RCVTIMEO = int(zmq.RCVTIMEO)  # (a plain int: pyzmq's enum costs on every setsockopt)

if TYPE_CHECKING:
    from pynndb.mesh.controller import Controller


_context_lock = threading.Lock()
_shared_context: zmq.Context | None = None
_shared_pid = 0


def _context() -> zmq.Context:
    """The one zmq context of this process's Plugins (a new one after fork: a context must not cross a fork).

    Plugins never own a context: a context dropped with its sockets in a reference cycle is terminated by the
    cyclic collector before the socket is closed, and ``term()`` then waits for ever."""
    global _shared_context, _shared_pid
    with _context_lock:
        if _shared_context is None or _shared_context.closed or _shared_pid != os.getpid():
            _shared_context = zmq.Context()
            _shared_pid = os.getpid()
        return _shared_context


class Plugin(CommandVerbs):
    """A client of one node's command port; ``target`` in ``call`` (and every verb) reaches any node of the mesh."""

    def __init__(
        self,
        node_or_address: Controller | str,
        keys: KeyPair | str | PathLike[str] | None = None,
        server_key: bytes | str | PathLike[str] | None = None,
    ) -> None:
        node = node_or_address
        if isinstance(node, str):
            # A plain address names the command port (port3) directly.
            split_address(node)
            self.address = node
            self.server_key = security.as_public_key(server_key)
            self.keys = security.as_key_pair(keys)
        else:
            self.address = f"tcp://{node.host}:{node.port3}"
            self.server_key = security.as_public_key(server_key) or node.public_key
            # In the same process as the node, its own key pair is a natural (and always allowed) identity.
            self.keys = security.as_key_pair(keys) or node.keys
        if (self.server_key is None) != (self.keys is None):
            raise InvalidKeys("a secure node needs both keys and server_key; a plaintext node needs neither")
        self._socket: zmq.Socket | None = None
        self._finalizer: weakref.finalize | None = None
        self._lock = threading.Lock()
        self._request_ids = itertools.count(1)
        self._rcvtimeo = -1  # the receive timeout last set on the socket (pyzmq's setsockopt costs a few µs)

    def connect(self) -> Plugin:
        """Open the connection to the node's command port; returns self."""
        with self._lock:
            if self._socket is not None:
                return self
            socket = _context().socket(zmq.DEALER)
            socket.linger = 0  # a reply nobody waits for is not worth blocking a close or the process exit
            configure(socket, 64 << 20, hwm=1000)
            if self.keys is not None and self.server_key is not None:
                security.make_client(socket, self.keys, self.server_key)
            socket.connect(self.address)
            self._socket = socket
            self._rcvtimeo = -1
            # A Plugin dropped without close() (the seed snippet never calls it) still closes its socket.
            self._finalizer = weakref.finalize(self, socket.close, 0)
        return self

    def check(self, timeout: float = 1.0) -> Plugin:
        """Make sure a node answers (a PING within `timeout` seconds), else raise NodeUnreachable; returns self.

        ZeroMQ connects in the background, so without this a call to an address where no node runs only fails at
        its own (longer) deadline."""
        try:
            self.call("PING", timeout=timeout)
        except CommandTimeout:
            secure = "" if self.keys is not None else "; a secure node also needs keys and its server key"
            raise NodeUnreachable(
                f"no node answers at {self.address} within {timeout:g}s (is `pynndb node` running there{secure}?)"
            ) from None
        return self

    def close(self) -> None:
        """Close the connection; calling it again does nothing."""
        with self._lock:
            self._socket = None
            finalizer, self._finalizer = self._finalizer, None
            if finalizer is not None:
                finalizer()  # closes the socket, once

    def __enter__(self) -> Plugin:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(
        self, command: str, params: dict[str, Any] | None = None, target: str | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Run ``command`` on ``target`` (a node id or label; default: the connected node) and return its result."""
        if not timeout > 0:
            raise InvalidArgument("timeout must be positive")
        with self._lock:
            socket = self._socket
            if socket is None:
                raise MeshError("plugin is not connected (call connect() first)")
            request_id = next(self._request_ids)
            # The node gets a slightly shorter deadline, so a routed timeout comes back as a reply.
            body = {"req": request_id, "cmd": command, "params": params, "target": target, "timeout": timeout * 0.9}
            send(socket, wire.REQUEST_HEAD + orjson.dumps(body), 0)
            deadline = time.monotonic() + timeout
            # Bounded: each turn either returns or consumes a stale reply, and the deadline ends the loop.
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(f"{command} got no reply within {timeout}s")
                # A blocking recv with a timeout: one libzmq call, where poll() then recv() costs two and a Poller.
                # Set only when it changed: a call answered within a millisecond of its start keeps the last one.
                rcvtimeo = math.ceil(remaining * 1000)
                if rcvtimeo != self._rcvtimeo:
                    socket.setsockopt(RCVTIMEO, rcvtimeo)
                    self._rcvtimeo = rcvtimeo
                try:
                    reply = _response(socket.recv(0))  # blocking, up to the socket's receive timeout
                except zmq.Again:
                    raise CommandTimeout(f"{command} got no reply within {timeout}s") from None
                if reply is not None and reply.get("req") == request_id:
                    return commands.unwrap(reply)

    def diff(self, uuids: list[str], timeout: float = 30.0, tables: list[str] | None = None) -> dict[str, Any]:
        """Compare two databases wherever they are in the mesh (only `tables`, when given): {} when identical, a
        deepdiff report otherwise."""
        from pynndb.mesh.dbdiff import remote_diff

        return remote_diff(self.call, uuids, timeout, tables)


def _response(data: bytes) -> dict[str, Any] | None:
    """The body of a RESPONSE; None for anything else. (A node answers in one part; a reply is read as bytes,
    without asking whether more parts follow: any other part is taken as a message of its own, and dropped.)"""
    if data[:2] != wire.RESPONSE_HEAD:
        return None
    try:
        body = orjson.loads(data[2:])
    except orjson.JSONDecodeError:
        return None
    return body if type(body) is dict else None
