"""The socket loop of one node: owns every socket, the links, the directory and the routing caches.

Only the loop thread touches sockets. Other threads hand it work through ``post`` (a deque plus a wake-up
pipe) and read shared state under ``lock``; user code never runs on this thread.

The loop waits on the sockets' ZMQ_FD descriptors with one ``select.poll`` call instead of ``zmq_poll``, which
probes every socket (a syscall each) twice per wait. Those descriptors are edge-triggered: a socket is drained until
EAGAIN, and any socket sent on during a turn is re-checked with ZMQ_EVENTS before the loop sleeps again, because a
send can consume the signal of a message that arrived meanwhile.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from pynndb.errors import MalformedMessage
from pynndb.mesh import wire
from pynndb.mesh.directory import Directory, Entry, validate_entry
from pynndb.mesh.gossip import Gossip
from pynndb.mesh.links import Channel, configure, make_ports
from pynndb.mesh.requests import Requests
from pynndb.mesh.routing import SeenCache, target_next_hops, topic_next_hops
from pynndb.mesh.workers import WorkerPool, deliver_batch

if TYPE_CHECKING:
    from pynndb.mesh.controller import Controller

log = logging.getLogger("pynndb.mesh.engine")

DRAIN_LIMIT = 2000  # frames taken from one socket per loop turn, so no socket starves the others
BATCH_BYTES = 1 << 20  # a PUBLISH frame closes at about 1 MB...
BATCH_ITEMS = 20_000  # ...or at this many payloads
MAX_INBOUND_LINKS = 1024
FINE_TIMER = 0.02
COUNTERS = (  # noqa: SIM905  (one line per name would double this module's counters block)
    "frames_in frames_out bytes_in bytes_out relayed duplicates malformed dropped published publish_frames_in "
    "delivered sent commands requests peers_up peers_down suspicions syncs loop_turns"
).split()
LINK_SILENT_PERIODS = 3.5  # a link that carried nothing (not even probes) for this many periods is down


class Engine:
    """The loop and all state it owns; the Controller is its thread-safe facade."""

    def __init__(self, node: Controller) -> None:
        self.node = node
        self.lock = threading.RLock()
        self.directory = Directory(node.id)
        self.seen = SeenCache()
        self.channels: dict[tuple[str, Any], Channel] = {}
        self.inbound: dict[bytes, Channel] = {}
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.message_ids = itertools.count(1)
        self.channel_ids = itertools.count(1)
        self.ops: deque[Callable[[], None]] = deque()
        self.outbox: deque[tuple[str, bytes]] = deque()
        self.wake_pending = False
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.seq = 0
        self.started = time.time()
        self.started_monotonic = time.monotonic()
        self.route_key: tuple[int, int] = (-1, -1)
        self.links_version = 0
        self.topic_routes: dict[str, set[str]] = {}
        self.target_routes: dict[str, set[str]] = {}
        self.neighbor_cache: dict[str, Channel] = {}
        self.neighbor_version = -1
        self.graph: dict[str, set[str]] = {}
        self.heartbeat_due = True
        self.stopping = False
        self.poller = select.poll()
        self.socket_fds: dict[zmq.Socket, int] = {}  # every socket the loop reads, and its ZMQ_FD
        self.fd_sockets: dict[int, zmq.Socket] = {}
        self.ready: set[zmq.Socket] = set()  # sockets that may hold input: drain them without sleeping
        self.touched: set[zmq.Socket] = set()  # sockets sent on this turn: check ZMQ_EVENTS before sleeping
        self.delivery = WorkerPool(f"pynndb-{node.label}-callbacks", 1)
        self.handlers = WorkerPool(f"pynndb-{node.label}-commands", node.command_workers)
        self.requests = Requests(self)
        self.gossip = Gossip(self)
        self.thread = threading.Thread(target=self.run, name=f"pynndb-{node.label}-loop", daemon=True)

    # --- sockets -------------------------------------------------------------------------------------------
    def bind(self, context: zmq.Context) -> None:
        """Create and bind the three ports; see docs/mesh.md for what each one carries."""
        node = self.node
        self.front, self.link_router, self.command_router = make_ports(context, node)
        try:
            self.front.bind(f"tcp://{node.host}:{node.port1}")
            self.link_router.bind(f"tcp://{node.host}:{node.port2}")
            self.command_router.bind(f"tcp://{node.host}:{node.port3}")
        except zmq.ZMQError:
            self.close_sockets()
            raise
        for socket in (self.front, self.link_router, self.command_router):
            self.watch(socket)
        self.poller.register(self.wake_read, select.POLLIN)

    def watch(self, socket: zmq.Socket) -> None:
        """Start reading a socket in the loop."""
        fd = int(socket.getsockopt(zmq.FD))
        self.socket_fds[socket] = fd
        self.fd_sockets[fd] = socket
        self.poller.register(fd, select.POLLIN)
        self.ready.add(socket)  # it may have signalled before it was watched

    def unwatch(self, socket: zmq.Socket) -> None:
        """Stop reading a socket (before it is closed)."""
        fd = self.socket_fds.pop(socket, None)
        if fd is not None:
            self.fd_sockets.pop(fd, None)
            self.poller.unregister(fd)
        self.ready.discard(socket)
        self.touched.discard(socket)

    def close_sockets(self) -> None:
        # A short linger on link sockets lets the LEAVE notice reach the neighbors; context.term() waits for it.
        for channel in self.channels.values():
            if channel.socket is not None and not channel.socket.closed:
                channel.socket.close(linger=100)
        for name, linger in (("front", 0), ("link_router", 100), ("command_router", 0)):
            socket = getattr(self, name, None)
            if socket is not None:
                socket.close(linger=linger)
        for fd in (self.wake_read, self.wake_write):
            try:
                os.close(fd)
            except OSError:
                pass

    # --- hand-over from other threads --------------------------------------------------------------------
    def wake(self) -> None:
        if not self.wake_pending:
            self.wake_pending = True
            try:
                os.write(self.wake_write, b"!")
            except (BlockingIOError, OSError):
                pass  # the pipe is full (a wake-up is already pending) or closed (stopping)

    def post(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` on the loop thread soon."""
        self.ops.append(operation)
        self.wake()

    def call_soon(self, operation: Callable[[], None]) -> None:
        """Run ``operation`` now if on the loop thread (saves a wake-up turn), else post it."""
        if threading.current_thread() is self.thread:
            operation()
        else:
            self.post(operation)

    def publish(self, topic: str, payload: bytes) -> None:
        self.outbox.append((topic, payload))
        self.wake()

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self) -> None:
        next_tick = 0.0
        next_fine = 0.0
        ready = self.ready
        fd_sockets = self.fd_sockets
        wake_read = self.wake_read
        while not self.stopping:
            if ready:
                timeout = 0.0
            else:
                # In milliseconds; select.poll rounds a fraction up, so the loop never spins on a timer.
                timeout = max(0.0, (min(next_tick, next_fine) - time.monotonic()) * 1000)
            for fd, _ in self.poller.poll(timeout):
                if fd == wake_read:
                    self.wake_pending = False
                    try:
                        os.read(wake_read, 4096)
                    except (BlockingIOError, OSError):
                        pass
                else:
                    socket = fd_sockets.get(fd)
                    if socket is not None:
                        ready.add(socket)
            self.counters["loop_turns"] += 1
            batch = list(ready)
            ready.clear()
            for socket in batch:
                if socket.closed:
                    continue
                if socket is self.link_router:
                    self.drain_router(socket, self.on_link_router)
                elif socket is self.command_router:
                    self.drain_router(socket, self.requests.on_client_request)
                elif socket is self.front:
                    self.drain_router(socket, self.on_discover)
                else:
                    self.drain_dealer(socket)
            self.run_ops()
            self.flush_outbox()
            now = time.monotonic()
            if now >= next_fine:
                next_fine = now + self.node.heartbeat
                self.fine_tick(now)
            if self.heartbeat_due:
                self.heartbeat_due = False
                self.gossip.announce()
            if now >= next_tick:
                next_tick = now + self.node.heartbeat
                self.heartbeat()
            if not self.needs_fine_timer():
                next_fine = next_tick  # idle nodes wake once a period...
            elif next_fine > now + FINE_TIMER:
                next_fine = now + FINE_TIMER  # ...hellos, requests and probes in flight need finer deadlines
            if self.touched:
                self.recheck_touched()
        self.farewell()

    def recheck_touched(self) -> None:
        """A send may have taken the edge signal of arrived input; look at ZMQ_EVENTS of what was sent on."""
        touched = self.touched
        while touched:
            socket = touched.pop()
            if socket in self.socket_fds and not socket.closed and int(socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                self.ready.add(socket)

    def run_ops(self) -> None:
        for _ in range(10_000):
            if not self.ops:
                return
            operation = self.ops.popleft()
            try:
                operation()
            except Exception:
                log.exception("loop operation failed")

    def drain_router(self, socket: zmq.Socket, handle: Callable[[bytes, bytes], None]) -> None:
        for _ in range(DRAIN_LIMIT):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                self.touched.discard(socket)  # EAGAIN processed its signals: its ZMQ_FD will fire again
                return
            self.counters["frames_in"] += 1
            self.counters["bytes_in"] += len(frames[-1])
            if len(frames) != 2:
                self.counters["malformed"] += 1
                continue
            try:
                handle(frames[0], frames[1])
            except (MalformedMessage, ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.counters["malformed"] += 1
        self.ready.add(socket)  # more may be waiting: read on in the next turn, after the others

    def drain_dealer(self, socket: zmq.Socket) -> None:
        channel = self.channels.get(("out", socket))
        if channel is None:
            return  # removed earlier in this loop turn; the socket is closed
        for _ in range(DRAIN_LIMIT):
            if socket.closed:
                return  # a BYE just removed this link
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                self.touched.discard(socket)  # EAGAIN processed its signals: its ZMQ_FD will fire again
                return
            self.counters["frames_in"] += 1
            self.counters["bytes_in"] += len(frames[-1])
            if len(frames) != 1:
                self.counters["malformed"] += 1
                continue
            try:
                self.on_link_frame(channel, frames[0])
            except (MalformedMessage, ValueError, KeyError, TypeError, UnicodeDecodeError):
                self.counters["malformed"] += 1
        self.ready.add(socket)  # more may be waiting: read on in the next turn, after the others

    # --- front door and command port ------------------------------------------------------------------------
    def on_discover(self, identity: bytes, frame: bytes) -> None:
        if wire.message_type(frame) != wire.DISCOVER:
            raise MalformedMessage("front door only answers DISCOVER")
        node = self.node
        body = {
            "id": node.id,
            "label": node.label,
            "link_port": node.port2,
            "command_port": node.port3,
            "public_key": node.keys.public.decode() if node.keys else None,
            "version": wire.VERSION,
        }
        self.send_router(self.front, identity, wire.encode_control(wire.DISCOVERED, body))

    def send_link(self, channel: Channel, frame: bytes) -> bool:
        """Send one frame over a link (either direction); False if it could not be queued."""
        self.touched.add(channel.socket if channel.socket is not None else self.link_router)
        self.counters["bytes_out"] += len(frame)
        return channel.send(self.link_router, frame)

    def send_router(self, socket: zmq.Socket, identity: bytes, frame: bytes) -> None:
        self.touched.add(socket)
        try:
            socket.send(identity, zmq.NOBLOCK | zmq.SNDMORE)
            socket.send(frame, zmq.NOBLOCK)
            self.counters["frames_out"] += 1
        except zmq.ZMQError:
            self.counters["dropped"] += 1

    # --- links --------------------------------------------------------------------------------------------
    def on_link_router(self, identity: bytes, frame: bytes) -> None:
        channel = self.inbound.get(identity)
        if channel is None:
            kind = wire.message_type(frame)
            if kind not in wire.LINK_TYPES:
                raise MalformedMessage(f"type {kind:#x} not valid on a link")
            if kind != wire.HELLO:
                # A peer we do not know (we restarted, or timed it out): ask it to introduce itself again.
                self.send_router(self.link_router, identity, wire.encode_control(wire.RESET))
                return
            if len(self.inbound) >= MAX_INBOUND_LINKS:
                raise MalformedMessage("too many inbound links")
            channel = Channel(key=("in", identity), address="", identity=identity)
            self.on_hello(channel, frame)
            return
        self.on_link_frame(channel, frame)

    def on_link_frame(self, channel: Channel, frame: bytes) -> None:
        kind = wire.message_type(frame)
        if kind in wire.ROUTED_TYPES:
            if not channel.up:
                if not channel.outbound:
                    self.send_router(self.link_router, channel.identity or b"", wire.encode_control(wire.RESET))
                return
            channel.last_rx = time.monotonic()
            self.on_routed(channel, kind, frame)
        elif kind == wire.HELLO and not channel.outbound:
            self.on_hello(channel, frame)
        elif kind == wire.WELCOME and channel.outbound:
            self.on_welcome(channel, frame)
        elif kind == wire.RESET and channel.outbound:
            self.channel_down(channel)
            channel.next_hello = 0.0
        elif kind == wire.BYE:
            self.remove_channel(channel)
        else:
            raise MalformedMessage(f"type {kind:#x} not valid here")

    def handshake_body(self) -> dict[str, Any]:
        self.gossip.announce()  # the entry handed over must be the one announced under its seq
        with self.lock:
            return {"entry": self.own_entry(), "directory": self.directory.alive_entries()}

    def on_hello(self, channel: Channel, frame: bytes) -> None:
        _, body = wire.decode_control(frame)
        entry = self.take_handshake(body)
        channel.peer = entry["id"]
        channel.address = entry["address"]
        self.inbound[channel.identity or b""] = channel
        self.channels[channel.key] = channel
        self.channel_up(channel)
        self.send_router(
            self.link_router, channel.identity or b"", wire.encode_control(wire.WELCOME, self.handshake_body())
        )

    def on_welcome(self, channel: Channel, frame: bytes) -> None:
        _, body = wire.decode_control(frame)
        entry = self.take_handshake(body)
        channel.peer = entry["id"]
        self.channel_up(channel)
        for waiter in channel.waiters:
            waiter.set()
        channel.waiters.clear()

    def take_handshake(self, body: Any) -> Entry:
        body = wire.require_dict(body, "handshake")
        entry = validate_entry(body.get("entry"))
        if entry["id"] == self.node.id:
            raise MalformedMessage("a node cannot link to itself")
        others = body.get("directory")
        if not isinstance(others, list):
            raise MalformedMessage("handshake directory must be a list")
        entries = [validate_entry(raw) for raw in others[:10_000]]
        changes = []
        with self.lock:
            for other in [entry, *entries]:
                if other["id"] != self.node.id:
                    changes += self.directory.merge(other)
        self.notify(changes)
        return entry

    def channel_up(self, channel: Channel) -> None:
        channel.up = True
        channel.last_rx = time.monotonic()
        channel.hello_attempts = 0
        self.links_version += 1
        self.heartbeat_due = True

    def channel_down(self, channel: Channel) -> None:
        if channel.up:
            channel.up = False
            self.links_version += 1
            self.heartbeat_due = True

    def remove_channel(self, channel: Channel) -> None:
        self.channel_down(channel)
        self.channels.pop(channel.key, None)
        if self.channels.get(("address", channel.address)) is channel:
            del self.channels[("address", channel.address)]
        if channel.identity is not None and not channel.outbound:
            self.inbound.pop(channel.identity, None)
        if channel.socket is not None:
            self.unwatch(channel.socket)
            channel.socket.close(linger=0)

    def open_link(self, context: zmq.Context, link_address: str, address: str, server_key: bytes | None) -> Channel:
        """Create the DEALER of an outbound link (loop thread only); the handshake follows on its own."""
        existing = self.channels.get(("address", address))
        if existing is not None:
            return existing
        socket = context.socket(zmq.DEALER)
        configure(socket, self.node.max_message_size)
        # Identity = node id + a counter, so two links to one peer never collide in its ROUTER.
        socket.routing_id = wire.node_id_to_bytes(self.node.id) + next(self.channel_ids).to_bytes(4, "big")
        # IMMEDIATE: refuse to queue while the connection (and CURVE handshake) is not up, so nothing is
        # buffered for a dead peer; HELLO is retried until it gets through.
        socket.immediate = True
        if self.node.keys is not None and server_key is not None:
            from pynndb.mesh.security import make_client

            make_client(socket, self.node.keys, server_key)
        socket.connect(link_address)
        channel = Channel(key=("out", socket), address=address, socket=socket)
        self.channels[channel.key] = channel
        self.channels[("address", address)] = channel
        self.watch(socket)
        return channel

    def close_link(self, name: str) -> bool:
        """Remove the link(s) matching an address, peer id or label; tell the peer so it does the same."""
        with self.lock:
            entry = self.directory.lookup(name)
        peer = entry["id"] if entry else name
        found = False
        for key, channel in list(self.channels.items()):
            if key[0] == "address":
                if channel.address == name or channel.peer == peer:
                    self.channels.pop(key, None)
                continue
            if channel.address == name or channel.peer == peer:
                found = True
                self.send_link(channel, wire.encode_control(wire.BYE))
                self.remove_channel(channel)
        return found

    def neighbors(self) -> dict[str, Channel]:
        """Peer id -> channel for every link that is up (cached until a link changes)."""
        if self.neighbor_version != self.links_version:
            result: dict[str, Channel] = {}
            for key, channel in self.channels.items():
                if key[0] != "address" and channel.up and channel.peer is not None:
                    result.setdefault(channel.peer, channel)
            self.neighbor_cache = result
            self.neighbor_version = self.links_version
        return self.neighbor_cache

    # --- routed traffic -------------------------------------------------------------------------------------
    def on_routed(self, channel: Channel, kind: int, frame: bytes) -> None:
        if not self.seen.check_and_add(wire.seen_key(frame)):
            self.counters["duplicates"] += 1
            return
        header = wire.decode_routed(frame)
        origin = header.origin
        came_from = channel.peer
        self.directory.touch(origin)
        if self.gossip.membership.targets:
            self.gossip.act(self.gossip.membership.heard(origin))
        if kind == wire.PUBLISH:
            self.counters["publish_frames_in"] += 1
            topic = wire.decode_topic_name(frame, header.body_offset)
            callback = self.node.subscriptions.get(topic)
            if callback is not None:
                if topic in self.node.inline_topics:
                    self._inline(deliver_batch, self.counters, callback, frame, header.body_offset, origin)
                else:
                    self.delivery.submit(
                        lambda: deliver_batch(self.counters, callback, frame, header.body_offset, origin)
                    )
            self.forward(frame, self.topic_hops(topic), came_from)
        elif kind in (wire.HEARTBEAT, wire.SUSPECT, wire.DEAD):
            if self.gossip.on_fact(kind, origin, frame, header.body_offset):
                self.forward(frame, self.neighbors(), came_from)  # news only: the neighbors heard the rest already
        elif kind == wire.LEAVE:
            with self.lock:
                changes = self.directory.mark_gone(origin)
            self.notify(changes)
            self.forward(frame, self.neighbors(), came_from)
        elif header.target != self.node.id:
            self.forward(frame, self.target_hops(header.target or ""), came_from)
        elif kind == wire.COMMAND:
            self.requests.on_command(origin, wire.decode_json_body(frame, header.body_offset))
        elif kind == wire.REPLY:
            self.requests.on_reply(wire.decode_json_body(frame, header.body_offset))
        elif kind == wire.SEND:
            message = wire.decode_send_body(frame, header.body_offset)
            self.deliver_message(message.kind, message.payload, origin)
        else:
            body = wire.require_dict(wire.decode_json_body(frame, header.body_offset), "membership message")
            self.gossip.on_message(kind, origin, body)

    def forward(self, frame: bytes, peers: Any, came_from: str | None) -> None:
        neighbors = self.neighbors()
        for peer in peers:
            if peer == came_from:
                continue
            channel = neighbors.get(peer)
            if channel is None:
                continue
            if self.send_link(channel, frame):
                self.counters["relayed"] += 1
                self.counters["frames_out"] += 1
            else:
                self.counters["dropped"] += 1

    def originate(self, kind: int, body: bytes, target: str | None = None) -> None:
        """Send a new routed message from this node (loop thread only)."""
        raw_target = wire.node_id_to_bytes(target) if target is not None else None
        frame = wire.encode_routed(kind, self.node.id_bytes, next(self.message_ids), body, raw_target)
        self.seen.check_and_add(wire.seen_key(frame))
        if kind == wire.PUBLISH:
            peers: Any = self.topic_hops(wire.decode_topic_name(frame, wire.ROUTED_HEADER_SIZE))
        elif target is not None:
            peers = self.target_hops(target)
        else:
            peers = self.neighbors()
        neighbors = self.neighbors()
        for peer in peers:
            channel = neighbors.get(peer)
            if channel is None:
                continue
            if self.send_link(channel, frame):
                self.counters["frames_out"] += 1
            else:
                self.counters["dropped"] += 1

    def refresh_routes(self) -> None:
        key = (self.directory.version, self.links_version)
        if key != self.route_key:
            self.route_key = key
            self.topic_routes.clear()
            self.target_routes.clear()
            with self.lock:
                graph = self.directory.graph()
            own = set(self.neighbors())
            graph[self.node.id] = own
            for peer in own:
                graph.setdefault(peer, set()).add(self.node.id)
            self.graph = graph

    def topic_hops(self, topic: str) -> set[str]:
        self.refresh_routes()
        hops = self.topic_routes.get(topic)
        if hops is None:
            with self.lock:
                subscribers = self.directory.subscribers(topic)
            hops = topic_next_hops(self.graph, self.node.id, self.neighbors(), subscribers)
            self.topic_routes[topic] = hops
        return hops

    def target_hops(self, target: str) -> set[str]:
        self.refresh_routes()
        hops = self.target_routes.get(target)
        if hops is None:
            hops = target_next_hops(self.graph, self.node.id, self.neighbors(), target)
            if len(self.target_routes) < 10_000:
                self.target_routes[target] = hops
        return hops

    def flush_outbox(self) -> None:
        """Turn queued publishes into PUBLISH frames: one per topic run, bounded in bytes and count."""
        if not self.outbox:
            return
        topic: str | None = None
        batch: list[bytes] = []
        size = 0
        for _ in range(len(self.outbox)):
            item_topic, payload = self.outbox.popleft()
            if batch and (item_topic != topic or size + len(payload) > BATCH_BYTES or len(batch) >= BATCH_ITEMS):
                self.send_batch(topic or "", batch)
                batch, size = [], 0
            topic = item_topic
            batch.append(payload)
            size += len(payload)
        if batch:
            self.send_batch(topic or "", batch)

    def send_batch(self, topic: str, payloads: list[bytes]) -> None:
        self.counters["published"] += len(payloads)
        self.originate(wire.PUBLISH, wire.encode_topic_body(topic, payloads))

    # --- delivery to user code (runs on the callback worker) ------------------------------------------------
    def deliver_message(self, kind: str, payload: bytes, origin: str) -> None:
        callback = self.node.message_handlers.get(kind)
        if callback is None:
            self.counters["dropped"] += 1
            return
        self.counters["sent"] += 1
        if kind in self.node.inline_kinds:
            self._inline(callback, payload, origin)
        else:
            self.delivery.submit(lambda: callback(payload, origin))

    def _inline(self, function: Callable[..., None], *args: Any) -> None:
        """Run an inline callback on the loop; its failure is counted and logged, never fatal to the loop."""
        try:
            function(*args)
        except Exception:
            self.counters["callbacks_failed"] = self.counters.get("callbacks_failed", 0) + 1
            log.exception("inline callback failed")

    def notify(self, changes: list[tuple[str, str]]) -> None:
        for node_id, state in changes:
            self.counters["peers_" + state] += 1
            if state == "down":
                self.requests.node_gone(node_id)
            for callback in list(self.node.peer_callbacks):
                self.delivery.submit(lambda cb=callback, n=node_id, s=state: cb(n, s))  # type: ignore[misc]

    # --- timers -------------------------------------------------------------------------------------------
    def own_entry(self) -> Entry:
        node = self.node
        return Entry(
            id=node.id,
            label=node.label,
            address=node.address,
            links=sorted(self.neighbors()),
            services=dict(node.services),
            topics=sorted(node.subscriptions),
            public_key=node.keys.public.decode() if node.keys else None,
            heartbeat=node.heartbeat,
            seq=self.seq,
            started=self.started,
        )

    def heartbeat(self) -> None:
        """Once a probe period: settle suspicions, probe, forget long-gone nodes, and drop links gone silent."""
        self.gossip.settle()
        self.gossip.tick()
        limit = LINK_SILENT_PERIODS * self.node.heartbeat
        now = time.monotonic()
        for key, channel in list(self.channels.items()):
            if key[0] != "address" and channel.up and now - channel.last_rx > limit:
                if channel.outbound:
                    self.channel_down(channel)
                else:
                    self.remove_channel(channel)

    def needs_fine_timer(self) -> bool:
        """True while something has a deadline finer than the period: requests, probes, suspicions, hellos."""
        if self.requests.pending or self.gossip.busy():
            return True
        return any(key[0] == "out" and not channel.up for key, channel in self.channels.items())

    def fine_tick(self, now: float) -> None:
        for key, channel in list(self.channels.items()):
            if key[0] == "out" and not channel.up and now >= channel.next_hello:
                channel.hello_attempts += 1
                delay = min(0.005 * 2 ** min(channel.hello_attempts, 10), self.node.heartbeat)
                channel.next_hello = now + delay
                self.send_link(channel, wire.encode_control(wire.HELLO, self.handshake_body()))
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
