"""The interface between a `Controller` (a node's thread-safe facade) and its `Engine` (the socket loop's logic).

The engine sees the node only as plain settings (`NodeConfig`) and what services registered (`Endpoints`); the
controller drives the engine only through `NodeLoop`. Nothing else crosses between the two.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import zmq

from pynndb.mesh.commands import Command
from pynndb.mesh.loop import LoopTask
from pynndb.mesh.security import KeyPair

TopicCallback = Callable[[str, bytes, str], None]  # (topic, payload, origin node id)
MessageCallback = Callable[[bytes, str], None]  # (payload, origin node id)
PeerCallback = Callable[[str, str], None]  # (node id, 'up' | 'down')
OnReply = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class NodeConfig:
    """A running node's settings, fixed for the life of its engine (a restart makes a new id and engine)."""

    id: str
    id_bytes: bytes
    label: str
    host: str
    port1: int
    port2: int
    port3: int
    keys: KeyPair | None
    heartbeat: float
    max_message_size: int
    command_workers: int

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port1}"

    @property
    def public_key(self) -> str | None:
        return self.keys.public.decode() if self.keys is not None else None


@dataclass
class Endpoints:
    """What this node's services registered; the controller writes it, the loop reads it.

    ``topics`` and ``kinds`` map to ``(callback, inline)``: inline callbacks run on the socket loop itself (they
    must only queue work). ``node`` is what command handlers get as ``context['node']``."""

    node: Any = None
    commands: dict[str, Command] = field(default_factory=dict)
    topics: dict[str, tuple[TopicCallback, bool]] = field(default_factory=dict)
    kinds: dict[str, tuple[MessageCallback, bool]] = field(default_factory=dict)
    peer_callbacks: list[PeerCallback] = field(default_factory=list)
    service_info: dict[str, Any] = field(default_factory=dict)  # announced as ``services`` in the directory entry


class NodeLoop(Protocol):
    """What the controller may ask of its engine; every method is safe from any thread unless it says otherwise."""

    def bind(self, context: zmq.Context) -> None:
        """Create and bind the node's three ports (before ``start``)."""

    def start(self) -> None:
        """Start the loop thread and the callback and command workers."""

    def stop(self) -> None:
        """Say goodbye to the mesh, stop the loop and workers, close every socket."""

    def link(self, context: zmq.Context, link_address: str, address: str, key: bytes | None, timeout: float) -> str:
        """Open a link and wait for its handshake; the peer's id."""

    def unlink(self, name: str) -> bool:
        """Remove the links to an address, node id or label; False if there was none."""

    def links_listing(self) -> list[dict[str, Any]]:
        """The links: peer, label, address, direction, up."""

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue a payload for the topic's subscribers elsewhere in the mesh."""

    def send(self, target: str, kind: str, payload: bytes) -> None:
        """Route a payload to one node by id (this node's own id delivers locally)."""

    def turn_marker(self) -> threading.Event:
        """An Event the loop sets when it runs what was posted to it so far (what this thread sent is then queued on
        the sockets)."""

    def request(self, command: str, params: Any, target: str | None, timeout: float, on_reply: OnReply) -> None:
        """Run a command here or on ``target``; ``on_reply`` gets exactly one reply."""

    def change_entry(self, change: Callable[[], None]) -> None:
        """Apply a change to the endpoints under the directory lock, then announce the new entry."""

    def directory_snapshot(self) -> dict[str, dict[str, Any]]:
        """A copy of the directory with liveness fields."""

    def lookup(self, name: str) -> dict[str, Any] | None:
        """A node's directory entry by id or label, its id under 'peer'."""

    def status(self) -> dict[str, Any]:
        """Health, links and counters."""

    def add_task(self, task: LoopTask) -> None:
        """Run a service's task on the socket loop (see loop.LoopTask)."""

    def remove_task(self, task: LoopTask) -> None:
        """Stop running a task; when this returns no step of it runs."""
