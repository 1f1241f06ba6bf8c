"""Links between nodes: the channel state of one link, socket options, and front-door discovery.

A link is one TCP connection: the connecting node's DEALER to the other node's link ROUTER (port2). Both
ends send over it, so a link is hot in both directions and costs one connection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import zmq

from pynndb.errors import InvalidAddress, MalformedMessage, MeshError
from pynndb.mesh import wire
from pynndb.mesh.drain import NOBLOCK
from pynndb.mesh.loop import NOBLOCK_MORE, send
from pynndb.mesh.security import make_server

HIGH_WATER_MARK = 100_000
DISCOVERY_MAX_BYTES = 64 * 1024
HANDSHAKE_SECONDS = 5.0  # a connection whose ZeroMQ handshake has not completed by then is dropped and dialled again


def configure(socket: zmq.Socket, max_message_size: int | None = None, hwm: int = HIGH_WATER_MARK) -> None:
    """Apply the options every mesh socket shares."""
    # linger 0: a stopped node must not hang in close() waiting for a peer that is gone.
    socket.linger = 0
    # The default HWM of 1000 silently drops bursts (ANCHORS.md); batches make 100k messages plenty.
    socket.sndhwm = hwm
    socket.rcvhwm = hwm
    if max_message_size is not None:
        # Bound what a peer can make us allocate: bigger frames are refused by libzmq before reaching us.
        socket.setsockopt(zmq.MAXMSGSIZE, max_message_size)
    # A connection made while the path swallows every byte (a middlebox that accepts and forwards nothing) never
    # completes its handshake; libzmq would keep it 30 s before dialling again, and the link stays down that long
    # after the path heals. (Generous for a CURVE handshake, a few round trips, even over a slow link.)
    socket.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_SECONDS * 1000))


def split_address(address: str) -> tuple[str, int]:
    """Split 'tcp://host:port' into host and port, refusing anything else."""
    parsed = urlparse(address)
    if parsed.scheme != "tcp" or not parsed.hostname or parsed.port is None:
        raise InvalidAddress(f"not a tcp://host:port address: {address!r}")
    return parsed.hostname, parsed.port


def make_ports(context: zmq.Context, node: Any) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
    """Create (unbound) the front door, link and command ROUTERs of a node, CURVE servers if it has keys."""
    front = context.socket(zmq.ROUTER)
    configure(front, 4096, hwm=1000)
    link_router = context.socket(zmq.ROUTER)
    configure(link_router, node.max_message_size)
    command_router = context.socket(zmq.ROUTER)
    configure(command_router, 16 << 20, hwm=10_000)
    for router in (front, link_router, command_router):
        # A peer that reconnects keeps its routing id (a link's DEALER sets one). If its old connection is not yet
        # closed here (a cut while this node was stopped, a proxy), a ROUTER without handover ignores the new one
        # for good: the peer's HELLOs vanish and the link never comes back. With handover the new one takes over.
        router.router_handover = True
    for router in (link_router, command_router):
        # Fail sends to vanished peers instead of dropping silently, so they are counted.
        router.router_mandatory = True
        if node.keys is not None:
            make_server(router, node.keys)
    return front, link_router, command_router


@dataclass
class Channel:
    """One link as seen from this node: outbound (our DEALER) or inbound (a ROUTER identity)."""

    key: tuple[str, Any]
    address: str
    socket: zmq.Socket | None = None
    identity: bytes | None = None
    peer: str | None = None
    up: bool = False
    last_rx: float = field(default_factory=time.monotonic)
    next_hello: float = 0.0
    hello_attempts: int = 0
    waiters: list[Any] = field(default_factory=list)

    @property
    def outbound(self) -> bool:
        return self.socket is not None

    def send(self, router: zmq.Socket, frame: bytes) -> bool:
        """Send one frame without blocking; False if the peer is unreachable or its queue is full.

        Every frame is copied into ZeroMQ's message, large ones too: pyzmq's zero-copy send (copy=False) hands a
        frame's buffer to libzmq and frees it through its garbage-collector thread, which wakes and takes the GIL
        once per frame. A full sync of 200k documents (~200 frames of ~190 KB) took 240 ms (median of 8) that way
        against 213 ms copied; the copy of a frame costs a few µs (docs/benchmarks.md, Round 23)."""
        try:
            if self.socket is not None:
                send(self.socket, frame, NOBLOCK)
            else:
                # ROUTER framing needs the identity frame first; SNDMORE is cheaper than send_multipart.
                send(router, self.identity or b"", NOBLOCK_MORE)
                send(router, frame, NOBLOCK)
        except zmq.ZMQError:
            return False
        return True


def discover(context: zmq.Context, address: str, timeout: float) -> dict[str, Any]:
    """Ask a node's front door (port1) who it is: id, label, link port, public key, protocol version."""
    split_address(address)
    socket = context.socket(zmq.DEALER)
    try:
        configure(socket, DISCOVERY_MAX_BYTES, hwm=10)
        socket.connect(address)
        socket.send(wire.encode_control(wire.DISCOVER))
        if not socket.poll(int(timeout * 1000)):
            raise MeshError(f"no answer from {address} within {timeout}s")
        kind, body = wire.decode_control(socket.recv())
    finally:
        socket.close(linger=0)
    if kind != wire.DISCOVERED:
        raise MalformedMessage(f"unexpected reply type {kind:#x} from {address}")
    body = wire.require_dict(body, "discovery reply")
    wire.require_field(body, "id", str)
    wire.require_field(body, "label", str)
    wire.require_field(body, "link_port", int)
    key = body.get("public_key")
    if key is not None and not (isinstance(key, str) and len(key) == 40):
        raise MalformedMessage("bad public key in discovery reply")
    return body


def deadline_after(seconds: float) -> float:
    return time.monotonic() + seconds
