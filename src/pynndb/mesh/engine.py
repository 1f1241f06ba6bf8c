"""The logic of one node's socket loop: its ports, links, routed traffic and timers, behind the `NodeLoop` interface
the `Controller` uses.

The decisions live in loop-free parts (`handshake.Links`, `routing.Routes`, `directory.Directory`,
`membership.Membership`, `requests.Requests`); this class reads frames into them and sends what they decide. Only
the loop thread (`loop.SocketLoop`) touches sockets; other threads go through ``post`` and read shared state under
``lock``.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import zmq

from pynndb.mesh import wire
from pynndb.mesh.delivery import Delivery
from pynndb.mesh.directory import Change, Directory
from pynndb.mesh.drain import NOBLOCK
from pynndb.mesh.gossip import Gossip
from pynndb.mesh.handshake import Links
from pynndb.mesh.linking import Linking
from pynndb.mesh.links import Channel, make_ports
from pynndb.mesh.local import Endpoints, NodeConfig, OnReply
from pynndb.mesh.loop import NOBLOCK_MORE, LoopTask, SocketLoop, send
from pynndb.mesh.requests import Requests
from pynndb.mesh.routing import Routes, SeenCache
from pynndb.mesh.sending import Sending
from pynndb.mesh.status import node_status
from pynndb.mesh.wire import COMMAND, PUBLISH, REPLY, ROUTED_HEADER_SIZE, SEND
from pynndb.mesh.workers import WorkerPool

BATCH_BYTES = 1 << 20  # a PUBLISH frame closes at about 1 MB...
BATCH_ITEMS = 20_000  # ...or at this many payloads
# After publishing, a node hands its CPU to whatever else is runnable on it (returns at once when nothing is;
# POSIX, elsewhere a no-op). A node publishing a stream of small commits (a writer's burst) otherwise keeps its core
# busy from one commit's doorbell to the next; on a machine it shares with the subscribers, their nodes get no CPU
# until the burst ends, then take it all at once with cold caches (a traced burst on 2 cores: the replica node
# received nothing for the whole burst, then applied its 100 entries in one 1.2 ms step).
_yield: Callable[[], None] = getattr(os, "sched_yield", lambda: None)
FINE_TIMER = 0.02
COUNTERS = (  # noqa: SIM905  (one line per name would double this module's counters block)
    "frames_in frames_out bytes_in bytes_out relayed duplicates malformed dropped published publish_frames_in "
    "delivered sent commands requests peers_up peers_down suspicions syncs loop_turns"
).split()


class Engine(Sending):
    """One node's loop logic and the state it owns (a `NodeLoop`: the Controller's only door to it)."""

    def __init__(self, config: NodeConfig, endpoints: Endpoints) -> None:
        self.config = config
        self.self_id = config.id
        self.endpoints = endpoints
        self.lock = threading.RLock()
        self.directory = Directory(config.id)
        self.seen = SeenCache()
        self.links = Links()
        self.routes = Routes(config.id)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.message_ids = itertools.count(1)
        self.channel_ids = itertools.count(1)
        self.wire_ids: dict[str, bytes] = {}  # node id -> its 16 wire bytes, for the targets messages went to
        self.outbox: deque[tuple[str, bytes]] = deque()
        self.heartbeat_due = True
        self.next_tick = 0.0
        self.next_fine = 0.0
        self.loop = SocketLoop(f"pynndb-{config.label}-loop", self.counters)
        self.loop.turn = self.turn
        self.loop.farewell = self.farewell
        self.delivery = Delivery(config.label, endpoints, self.counters)
        self.handlers = WorkerPool(f"pynndb-{config.label}-commands", config.command_workers)
        self.requests = command_requests(self)
        self.gossip = Gossip(
            config,
            endpoints,
            self.directory,
            self.links,
            self.routes,
            send=self.originate,
            notify=self.notify,
            refresh_routes=self.refresh_routes,
            lock=self.lock,
            counters=self.counters,
            stopping=lambda: self.loop.stopping,
        )
        self.linking = Linking(self)
        self.post = self.loop.post

    # --- NodeLoop: lifecycle -------------------------------------------------------------------------------
    def bind(self, context: zmq.Context) -> None:
        config = self.config
        self.front, self.link_router, self.command_router = make_ports(context, config)
        try:
            self.front.bind(f"tcp://{config.host}:{config.port1}")
            self.link_router.bind(f"tcp://{config.host}:{config.port2}")
            self.command_router.bind(f"tcp://{config.host}:{config.port3}")
        except zmq.ZMQError:
            self.close_sockets()
            raise
        self.loop.watch_router(self.link_router, self.linking.on_link_router)
        self.requests.answer = partial(self.send_router, self.command_router)
        self.loop.watch_router(self.command_router, self.requests.on_client_request)
        self.loop.watch_router(self.front, self.linking.on_discover)

    def start(self) -> None:
        self.delivery.pool.start()
        self.handlers.start()
        self.loop.thread.start()

    def stop(self) -> None:
        self.loop.stopping = True
        self.loop.wake()
        self.loop.thread.join(timeout=5.0)
        self.close_sockets()
        self.delivery.pool.stop()
        self.handlers.stop()

    def close_sockets(self) -> None:
        # A short linger on link sockets lets the LEAVE notice reach the neighbors; context.term() waits for it.
        for channel in self.links:
            if channel.socket is not None and not channel.socket.closed:
                channel.socket.close(linger=100)
        for name, linger in (("front", 0), ("link_router", 100), ("command_router", 0)):
            socket = getattr(self, name, None)
            if socket is not None:
                socket.close(linger=linger)
        self.loop.close()

    # --- NodeLoop: requests from other threads -------------------------------------------------------------
    def publish(self, topic: str, payload: bytes) -> None:
        self.outbox.append((topic, payload))
        self.loop.wake()

    def send(self, target: str, kind: str, payload: bytes) -> None:
        if target == self.config.id:
            self.post(lambda: self.delivery.message(kind, payload, target))
        else:
            body = wire.encode_send_body(kind, payload)
            self.post(lambda: self.originate(wire.SEND, body, target=target))

    def turn_marker(self) -> threading.Event:
        marker = threading.Event()
        self.post(marker.set)
        return marker

    def request(self, command: str, params: Any, target: str | None, timeout: float, on_reply: OnReply) -> None:
        self.post(lambda: self.requests.start_request(command, params, target, timeout, on_reply))

    def change_entry(self, change: Callable[[], None]) -> None:
        with self.lock:
            change()
        self.post(self.entry_changed)

    def entry_changed(self) -> None:
        self.heartbeat_due = True

    def directory_snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return self.directory.snapshot()

    def lookup(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            entry = self.directory.lookup(name)
            if entry is None:
                return None
            return dict(self.directory.snapshot()[entry["id"]], peer=entry["id"])

    def status(self) -> dict[str, Any]:
        return node_status(self)

    # --- NodeLoop: links (see linking.py) -------------------------------------------------------------------
    def link(self, context: zmq.Context, link_address: str, address: str, key: bytes | None, timeout: float) -> str:
        return self.linking.link(context, link_address, address, key, timeout)

    def unlink(self, name: str) -> bool:
        return self.linking.unlink(name)

    def links_listing(self) -> list[dict[str, Any]]:
        return self.linking.listing()

    # --- NodeLoop: services' tasks (see loop.LoopTask) -----------------------------------------------------
    def add_task(self, task: LoopTask) -> None:
        self.loop.add_task(task)

    def remove_task(self, task: LoopTask) -> None:
        self.loop.remove_task(task)

    # --- frames in (loop thread) ---------------------------------------------------------------------------
    def on_routed(self, channel: Channel, kind: int, frame: bytes) -> None:
        if not self.seen.check_and_add(frame[2:ROUTED_HEADER_SIZE]):  # (wire.seen_key, inlined: every frame)
            self.counters["duplicates"] += 1
            return
        origin, target, offset = wire.routed_header(frame, kind)
        came_from = channel.peer
        self.directory.touch(origin)
        if self.gossip.membership.targets:
            self.gossip.act(self.gossip.membership.heard(origin))
        if kind == PUBLISH:
            self.counters["publish_frames_in"] += 1
            topic = wire.decode_topic_name(frame, offset)
            self.delivery.topic(topic, frame, offset, origin)
            self.forward(frame, self.topic_hops(topic), came_from)
        elif target is not None:
            if target != self.self_id:
                self.forward(frame, self.target_hops(target), came_from)
            elif kind == COMMAND:
                self.requests.on_command(origin, wire.decode_json_body(frame, offset))
            elif kind == REPLY:
                self.requests.on_reply(wire.decode_json_body(frame, offset))
            elif kind == SEND:
                message = wire.decode_send_body(frame, offset)
                self.delivery.message(message.kind, message.payload, origin)
            else:
                body = wire.require_dict(wire.decode_json_body(frame, offset), "membership message")
                self.gossip.on_message(kind, origin, body)
        elif kind in (wire.HEARTBEAT, wire.SUSPECT, wire.DEAD):
            if self.gossip.on_fact(kind, origin, frame, offset):
                self.forward(frame, self.neighbors(), came_from)  # news only: the neighbors heard the rest already
        elif kind == wire.LEAVE:
            with self.lock:
                changes = self.directory.mark_gone(origin)
            self.notify(changes)
            self.forward(frame, self.neighbors(), came_from)

    def notify(self, changes: list[Change]) -> None:
        for node_id, state in changes:
            self.counters["peers_" + state] += 1
            if state == "down":
                self.requests.node_gone(node_id)
        self.delivery.peers(changes)

    # --- frames out (loop thread) --------------------------------------------------------------------------
    def send_link(self, channel: Channel, frame: bytes) -> bool:
        """Send one frame over a link (either direction); False if it could not be queued."""
        self.loop.touched.add(channel.socket if channel.socket is not None else self.link_router)
        self.counters["bytes_out"] += len(frame)
        return channel.send(self.link_router, frame)

    def send_router(self, socket: zmq.Socket, identity: bytes, frame: bytes) -> None:
        self.loop.touched.add(socket)
        try:
            send(socket, identity, NOBLOCK_MORE)
            send(socket, frame, NOBLOCK)
            self.counters["frames_out"] += 1
        except zmq.ZMQError:
            self.counters["dropped"] += 1

    def flush_outbox(self) -> None:
        """Turn queued publishes into PUBLISH frames: one per topic run, bounded in bytes and count; then yield."""
        if self.outbox:
            for topic, payloads in wire.topic_batches(self.outbox, BATCH_BYTES, BATCH_ITEMS):
                self.send_batch(topic, payloads)
            _yield()

    def send_batch(self, topic: str, payloads: list[bytes]) -> None:
        self.counters["published"] += len(payloads)
        self.originate(wire.PUBLISH, wire.encode_topic_body(topic, payloads))

    # --- timers (loop thread) ------------------------------------------------------------------------------
    def turn(self) -> float:
        """After each wake-up: send queued publishes, run due timers; the time the loop must wake up next. (After
        every turn: an idle node's fine timer stays at its period until something is in flight, checked only while
        it is coarse, and goes back to the period at the first fine tick that finds nothing.)"""
        if self.outbox:
            self.flush_outbox()
        now = time.monotonic()
        fine_due = now >= self.next_fine
        if fine_due:
            self.fine_tick(now)
        if self.heartbeat_due:
            self.heartbeat_due = False
            self.gossip.announce()
        if now >= self.next_tick:
            self.next_tick = now + self.config.heartbeat
            self.heartbeat(now)
        if fine_due:
            self.next_fine = now + FINE_TIMER if self.busy() else self.next_tick  # idle nodes wake once a period...
        elif self.next_fine > now + FINE_TIMER and self.busy():
            self.next_fine = now + FINE_TIMER  # ...hellos, requests and probes in flight need finer deadlines
        return now if self.outbox else min(self.next_tick, self.next_fine)  # (a publish from the loop thread)

    def busy(self) -> bool:
        """Requests, probes, suspicions or handshakes in flight: their deadlines need the fine timer. (Asked in
        every turn of an idle node: `gossip.busy` written out.)"""
        return bool(self.requests.pending or self.gossip.membership.pending or self.directory.suspects) or (
            self.links.connecting()
        )

    def heartbeat(self, now: float) -> None:
        """Once a probe period: settle suspicions, probe, forget long-gone nodes, and drop links gone silent."""
        self.gossip.settle()
        self.gossip.tick()
        self.linking.drop_silent(now)

    def fine_tick(self, now: float) -> None:
        self.linking.say_hello(now)
        self.requests.expire(now)
        if self.gossip.busy():
            self.gossip.tick()

    def farewell(self) -> None:
        """Tell the mesh this node is leaving, so it is marked gone at once rather than after a timeout."""
        try:
            self.originate(wire.LEAVE, b"")
        except zmq.ZMQError:
            pass
        self.requests.cancel_all()


def command_requests(engine: Engine) -> Requests:
    """The engine's loop-free `Requests`, wired to its directory, routed sends, command port and command workers."""

    return Requests(
        engine.config.id,
        engine.config.label,
        engine.directory,
        engine.endpoints,
        send=engine.originate,
        answer=lambda identity, frame: None,  # (no command port before bind(), which sets the real one)
        submit=engine.handlers.submit,
        call_soon=engine.loop.call_soon,
        lock=engine.lock,
        counters=engine.counters,
    )
