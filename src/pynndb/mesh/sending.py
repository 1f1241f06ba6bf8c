"""How a node's engine sends routed frames: its own (``originate``) and others' (``forward``), to the next hops the
link graph gives for a topic or a target (`routing.Routes`, refreshed when the directory or the links change).

A mixin of `engine.Engine` (loop thread only), kept apart so each stays small: every routed message a node sends or
relays passes here, so the common cases are written out (a reply's target bytes are kept, its header packed at once).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Collection

import zmq

from pynndb.mesh import wire
from pynndb.mesh.directory import Directory
from pynndb.mesh.handshake import Links
from pynndb.mesh.links import Channel
from pynndb.mesh.local import NodeConfig
from pynndb.mesh.loop import SocketLoop
from pynndb.mesh.routing import Routes, SeenCache
from pynndb.mesh.wire import PUBLISH, ROUTED_HEADER_SIZE, TARGETED_HEAD, TARGETED_TYPES, VERSION

MAX_WIRE_IDS = 10_000  # node ids whose wire bytes a node keeps (a peer could make up any number of them)


class Sending:
    """The sending half of an engine (a mixin: the attributes below are the engine's)."""

    config: NodeConfig
    lock: threading.RLock
    directory: Directory
    seen: SeenCache
    links: Links
    routes: Routes
    loop: SocketLoop
    link_router: zmq.Socket
    counters: dict[str, int]
    message_ids: itertools.count[int]
    wire_ids: dict[str, bytes]

    def neighbors(self) -> dict[str, Channel]:
        return self.links.neighbors()

    def forward(self, frame: bytes, peers: Collection[str], came_from: str | None, relayed: int = 1) -> None:
        """Send a frame to the peers that are neighbors (not back where it came from); ``relayed=0``: our own.
        (`send_link` written out: a routed message's every hop passes here.)"""
        neighbors = self.links.neighbors()
        counters = self.counters
        for peer in peers:
            if peer == came_from:
                continue
            channel = neighbors.get(peer)
            if channel is None:
                continue
            self.loop.touched.add(channel.socket if channel.socket is not None else self.link_router)
            counters["bytes_out"] += len(frame)
            if channel.send(self.link_router, frame):
                counters["frames_out"] += 1
                if relayed:
                    counters["relayed"] += 1
            else:
                counters["dropped"] += 1

    def originate(self, kind: int, body: bytes, target: str | None = None) -> None:
        """Send a new routed message from this node (loop thread only)."""
        if target is not None and kind in TARGETED_TYPES:
            # Replies, probes and routed commands: the target's wire bytes are kept (node ids are few and fixed).
            raw_target = self.wire_ids.get(target)
            if raw_target is None:
                raw_target = wire.node_id_to_bytes(target)
                if len(self.wire_ids) >= MAX_WIRE_IDS:
                    self.wire_ids.clear()
                self.wire_ids[target] = raw_target
            frame = TARGETED_HEAD.pack(VERSION, kind, self.config.id_bytes, next(self.message_ids), raw_target) + body
            self.seen.check_and_add(frame[2:ROUTED_HEADER_SIZE])
            self.forward(frame, self.target_hops(target), None, 0)
            return
        frame = wire.encode_routed(kind, self.config.id_bytes, next(self.message_ids), body)
        self.seen.check_and_add(frame[2:ROUTED_HEADER_SIZE])
        if kind == PUBLISH:
            peers: Collection[str] = self.topic_hops(wire.decode_topic_name(frame, ROUTED_HEADER_SIZE))
        elif target is not None:
            peers = self.target_hops(target)
        else:
            peers = self.neighbors()
        self.forward(frame, peers, None, 0)

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
