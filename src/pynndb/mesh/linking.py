"""The engine's side of links: the front door (DISCOVER), opening and closing links, their handshake (HELLO,
WELCOME, RESET, BYE), and the timers that say HELLO again or drop a silent link. Decisions are `handshake.Links`'s;
this class does the sends.

Runs on the loop thread, except ``link``, ``unlink`` and ``listing``, which hand their work to it and wait.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import zmq

from pynndb.errors import MalformedMessage, MeshError
from pynndb.mesh import wire
from pynndb.mesh.directory import Entry
from pynndb.mesh.handshake import handshake_body, take_handshake
from pynndb.mesh.links import Channel, configure
from pynndb.mesh.wire import ROUTED_TYPES, VERSION

if TYPE_CHECKING:
    from pynndb.mesh.engine import Engine

LINK_SILENT_PERIODS = 3.5  # a link that carried nothing (not even probes) for this many periods is down


class Linking:
    """Link management for one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def link(self, context: zmq.Context, link_address: str, address: str, key: bytes | None, timeout: float) -> str:
        up = threading.Event()

        def open_on_loop() -> Channel:
            channel = self.open_link(context, link_address, address, key)
            if channel.up:
                up.set()
            else:
                channel.waiters.append(up)
            return channel

        channel = self.engine.loop.on_loop(open_on_loop)
        if not up.wait(timeout):
            self.engine.loop.on_loop(lambda: self.close_link(address))
            raise MeshError(f"link handshake with {address} did not complete within {timeout}s")
        return str(channel.peer)

    def unlink(self, name: str) -> bool:
        return bool(self.engine.loop.on_loop(lambda: self.close_link(name)))

    def listing(self) -> list[dict[str, Any]]:
        def label_of(peer: str | None) -> str | None:
            entry = self.engine.directory.entries.get(peer or "")
            return entry["label"] if entry else None

        return list(self.engine.loop.on_loop(lambda: self.engine.links.describe(label_of)))

    def open_link(self, context: zmq.Context, link_address: str, address: str, key: bytes | None) -> Channel:
        """Create the DEALER of an outbound link (loop thread only); the handshake follows on its own."""
        existing = self.engine.links.by_address(address)
        if existing is not None:
            return existing
        socket = context.socket(zmq.DEALER)
        configure(socket, self.engine.config.max_message_size)
        # Identity = node id + a counter, so two links to one peer never collide in its ROUTER.
        socket.routing_id = self.engine.config.id_bytes + next(self.engine.channel_ids).to_bytes(4, "big")
        # IMMEDIATE: refuse to queue while the connection (and CURVE handshake) is not up, so nothing is
        # buffered for a dead peer; HELLO is retried until it gets through.
        socket.immediate = True
        if self.engine.config.keys is not None and key is not None:
            from pynndb.mesh.security import make_client

            make_client(socket, self.engine.config.keys, key)
        socket.connect(link_address)
        channel = Channel(key=("out", socket), address=address, socket=socket)
        self.engine.links.add_outbound(channel)
        self.engine.loop.watch_dealer(socket, channel, self.on_link_frame)
        return channel

    def close_link(self, name: str) -> bool:
        """Remove the link(s) matching an address, peer id or label; tell the peer so it does the same."""
        with self.engine.lock:
            entry = self.engine.directory.lookup(name)
        found = False
        for channel in self.engine.links.matching(name, entry["id"] if entry else name):
            found = True
            self.engine.send_link(channel, wire.encode_control(wire.BYE))
            self.remove_channel(channel)
        return found

    def remove_channel(self, channel: Channel) -> None:
        if self.engine.links.remove(channel):
            self.engine.heartbeat_due = True
        if channel.socket is not None:
            self.engine.loop.unwatch(channel.socket)
            channel.socket.close(linger=0)

    def channel_down(self, channel: Channel) -> None:
        if self.engine.links.down(channel):
            self.engine.heartbeat_due = True

    def on_discover(self, identity: bytes, frame: bytes) -> None:
        if wire.message_type(frame) != wire.DISCOVER:
            raise MalformedMessage("front door only answers DISCOVER")
        config = self.engine.config
        body = {
            "id": config.id,
            "label": config.label,
            "link_port": config.port2,
            "command_port": config.port3,
            "public_key": config.public_key,
            "version": wire.VERSION,
        }
        self.engine.send_router(self.engine.front, identity, wire.encode_control(wire.DISCOVERED, body))

    def on_link_router(self, identity: bytes, frame: bytes) -> None:
        channel = self.engine.links.inbound.get(identity)
        if channel is not None:
            self.on_link_frame(channel, frame)
            return
        kind = wire.message_type(frame)
        if kind not in wire.LINK_TYPES:
            raise MalformedMessage(f"type {kind:#x} not valid on a link")
        if kind != wire.HELLO:
            # A peer we do not know (we restarted, or timed it out): ask it to introduce itself again.
            self.reset(identity)
            return
        self.on_hello(self.engine.links.new_inbound(identity), frame)

    def on_link_frame(self, channel: Channel, frame: bytes) -> None:
        # (wire.message_type, inlined for the usual frame: every frame on a link passes here)
        kind = frame[1] if len(frame) > 1 and frame[0] == VERSION else wire.message_type(frame)
        if kind in ROUTED_TYPES:
            if not channel.up:
                if not channel.outbound:
                    self.reset(channel.identity or b"")
                return
            channel.last_rx = time.monotonic()
            self.engine.on_routed(channel, kind, frame)
        elif kind == wire.HELLO and not channel.outbound:
            self.on_hello(channel, frame)
        elif kind == wire.WELCOME and channel.outbound:
            entry = self.take(frame)
            for waiter in self.engine.links.welcomed(channel, entry, time.monotonic()):
                waiter.set()
            self.engine.heartbeat_due = True
        elif kind == wire.RESET and channel.outbound:
            self.channel_down(channel)
            channel.next_hello = 0.0
        elif kind == wire.BYE:
            self.remove_channel(channel)
        else:
            raise MalformedMessage(f"type {kind:#x} not valid here")

    def on_hello(self, channel: Channel, frame: bytes) -> None:
        entry = self.take(frame)
        self.engine.links.accepted(channel, entry, time.monotonic())
        self.engine.heartbeat_due = True
        body = wire.encode_control(wire.WELCOME, self.handshake_body())
        self.engine.send_router(self.engine.link_router, channel.identity or b"", body)

    def take(self, frame: bytes) -> Entry:
        _, body = wire.decode_control(frame)
        with self.engine.lock:
            entry, changes = take_handshake(body, self.engine.config.id, self.engine.directory)
        self.engine.notify(changes)
        return entry

    def handshake_body(self) -> dict[str, Any]:
        self.engine.gossip.announce()  # the entry handed over must be the one announced under its seq
        with self.engine.lock:
            return handshake_body(self.engine.gossip.own_entry(), self.engine.directory)

    def reset(self, identity: bytes) -> None:
        """Ask a peer we do not know (we restarted, or timed it out) to introduce itself again."""
        self.engine.send_router(self.engine.link_router, identity, wire.encode_control(wire.RESET))

    def say_hello(self, now: float) -> None:
        """HELLO again on every outbound link whose handshake is due for another try."""
        for channel in self.engine.links.hellos_due(now, self.engine.config.heartbeat):
            self.engine.send_link(channel, wire.encode_control(wire.HELLO, self.handshake_body()))

    def drop_silent(self, now: float) -> None:
        """Links that carried nothing for a while: outbound ones go down (and say HELLO again), inbound ones go."""
        for channel in self.engine.links.silent(now, LINK_SILENT_PERIODS * self.engine.config.heartbeat):
            if channel.outbound:
                self.channel_down(channel)
            else:
                self.remove_channel(channel)
