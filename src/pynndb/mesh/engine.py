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
from collections.abc import Callable, Collection
from typing import Any

import zmq

from pynndb.mesh import wire
from pynndb.mesh.delivery import Delivery
from pynndb.mesh.directory import Change, Directory
from pynndb.mesh.gossip import Gossip
from pynndb.mesh.handshake import Links
from pynndb.mesh.linking import Linking
from pynndb.mesh.links import Channel, make_ports
from pynndb.mesh.local import Endpoints, NodeConfig, OnReply
from pynndb.mesh.loop import NOBLOCK, NOBLOCK_MORE, LoopTask, SocketLoop, send
from pynndb.mesh.requests import Requests
from pynndb.mesh.routing import Routes, SeenCache
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


class Engine:
    """One node's loop logic and the state it owns (a `NodeLoop`: the Controller's only door to it)."""

    def __init__(self, config: NodeConfig, endpoints: Endpoints) -> None:
        self.config = config
        self.endpoints = endpoints
        self.lock = threading.RLock()
        self.directory = Directory(config.id)
        self.seen = SeenCache()
        self.links = Links()
        self.routes = Routes(config.id)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.message_ids = itertools.count(1)
        self.channel_ids = itertools.count(1)
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

    def neighbors(self) -> dict[str, Channel]:
        return self.links.neighbors()

    # --- frames in (loop thread) ---------------------------------------------------------------------------
    def on_routed(self, channel: Channel, kind: int, frame: bytes) -> None:
        if not self.seen.check_and_add(wire.seen_key(frame)):
            self.counters["duplicates"] += 1
            return
        header = wire.decode_routed(frame, kind)
        origin = header.origin
        came_from = channel.peer
        self.directory.touch(origin)
        if self.gossip.membership.targets:
            self.gossip.act(self.gossip.membership.heard(origin))
        if kind == wire.PUBLISH:
            self.counters["publish_frames_in"] += 1
            topic = wire.decode_topic_name(frame, header.body_offset)
            self.delivery.topic(topic, frame, header.body_offset, origin)
            self.forward(frame, self.topic_hops(topic), came_from)
        elif kind in (wire.HEARTBEAT, wire.SUSPECT, wire.DEAD):
            if self.gossip.on_fact(kind, origin, frame, header.body_offset):
                self.forward(frame, self.neighbors(), came_from)  # news only: the neighbors heard the rest already
        elif kind == wire.LEAVE:
            with self.lock:
                changes = self.directory.mark_gone(origin)
            self.notify(changes)
            self.forward(frame, self.neighbors(), came_from)
        elif header.target != self.config.id:
            self.forward(frame, self.target_hops(header.target or ""), came_from)
        elif kind == wire.COMMAND:
            self.requests.on_command(origin, wire.decode_json_body(frame, header.body_offset))
        elif kind == wire.REPLY:
            self.requests.on_reply(wire.decode_json_body(frame, header.body_offset))
        elif kind == wire.SEND:
            message = wire.decode_send_body(frame, header.body_offset)
            self.delivery.message(message.kind, message.payload, origin)
        else:
            body = wire.require_dict(wire.decode_json_body(frame, header.body_offset), "membership message")
            self.gossip.on_message(kind, origin, body)

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

    def forward(self, frame: bytes, peers: Collection[str], came_from: str | None, relayed: int = 1) -> None:
        """Send a frame to the peers that are neighbors (not back where it came from); ``relayed=0``: our own."""
        neighbors = self.neighbors()
        counters = self.counters
        for peer in peers:
            if peer == came_from:
                continue
            channel = neighbors.get(peer)
            if channel is None:
                continue
            if self.send_link(channel, frame):
                counters["relayed"] += relayed
                counters["frames_out"] += 1
            else:
                counters["dropped"] += 1

    def originate(self, kind: int, body: bytes, target: str | None = None) -> None:
        """Send a new routed message from this node (loop thread only)."""
        raw_target = wire.node_id_to_bytes(target) if target is not None else None
        frame = wire.encode_routed(kind, self.config.id_bytes, next(self.message_ids), body, raw_target)
        self.seen.check_and_add(wire.seen_key(frame))
        if kind == wire.PUBLISH:
            peers: Collection[str] = self.topic_hops(wire.decode_topic_name(frame, wire.ROUTED_HEADER_SIZE))
        elif target is not None:
            peers = self.target_hops(target)
        else:
            peers = self.neighbors()
        self.forward(frame, peers, None, relayed=0)

    def refresh_routes(self) -> None:
        key = (self.directory.version, self.links.version)
        if key != self.routes.key:
            self.routes.refresh(key, self.link_graph, self.neighbors())

    def link_graph(self) -> dict[str, set[str]]:
        with self.lock:
            return self.directory.graph()

    def subscribers(self, topic: str) -> set[str]:
        with self.lock:
            return self.directory.subscribers(topic)

    def topic_hops(self, topic: str) -> set[str]:
        self.refresh_routes()
        hops = self.routes.topics.get(topic)  # the hot path: a cached answer, no call
        return hops if hops is not None else self.routes.topic_hops(topic, self.subscribers, self.neighbors())

    def target_hops(self, target: str) -> set[str]:
        self.refresh_routes()
        hops = self.routes.targets.get(target)
        return hops if hops is not None else self.routes.target_hops(target, self.neighbors())

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
        """After each wake-up: send queued publishes, run due timers; the time the loop must wake up next."""
        self.flush_outbox()
        now = time.monotonic()
        period = self.config.heartbeat
        if now >= self.next_fine:
            self.next_fine = now + period
            self.fine_tick(now)
        if self.heartbeat_due:
            self.heartbeat_due = False
            self.gossip.announce()
        if now >= self.next_tick:
            self.next_tick = now + period
            self.heartbeat(now)
        if not (self.requests.pending or self.gossip.busy() or self.links.connecting()):
            self.next_fine = self.next_tick  # idle nodes wake once a period...
        elif self.next_fine > now + FINE_TIMER:
            self.next_fine = now + FINE_TIMER  # ...hellos, requests and probes in flight need finer deadlines
        return now if self.outbox else min(self.next_tick, self.next_fine)  # (a publish from the loop thread)

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

    def answer(identity: bytes, frame: bytes) -> None:
        engine.send_router(engine.command_router, identity, frame)

    return Requests(
        engine.config.id,
        engine.config.label,
        engine.directory,
        engine.endpoints,
        send=engine.originate,
        answer=answer,
        submit=engine.handlers.submit,
        call_soon=engine.loop.call_soon,
        lock=engine.lock,
        counters=engine.counters,
    )


def node_status(engine: Engine) -> dict[str, Any]:
    """STATUS of a node: health, links, counters, callback and request figures."""
    with engine.lock:
        nodes = engine.directory.snapshot()
    config = engine.config
    return {
        "peer": config.id,
        "label": config.label,
        "address": config.address,
        "health": "ok",
        "secure": config.keys is not None,
        "links": engine.links.describe(),
        "nodes": len(nodes),
        "alive": sum(1 for entry in nodes.values() if entry["alive"]),
        "counters": dict(engine.counters),
        "callback_backlog": engine.delivery.pool.backlog(),
        "callbacks_dropped": engine.delivery.pool.dropped,
        "callbacks_failed": engine.delivery.pool.failed,
        "pending_requests": len(engine.requests.pending),
        "command_results": engine.requests.results_by_command(),
        "seen_cache": len(engine.seen),
    }
