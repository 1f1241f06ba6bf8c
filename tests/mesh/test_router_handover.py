"""A peer that comes back with the routing id it had while its old connection is still open on the node (a link's
DEALER keeps one id across reconnects; a cut while the node was stopped leaves the old connection for it to notice
later) is answered on the new connection. Without ROUTER_HANDOVER the node's ROUTER ignored the newcomer for good:
chaos seed 2027 left a link down and three replicas stalled for minutes. Real sockets on 127.0.0.1."""

from __future__ import annotations

import zmq

from pynndb.mesh import wire
from tests.mesh.conftest import Mesh


def dealer(context: zmq.Context, routing_id: bytes, address: str) -> zmq.Socket:
    socket = context.socket(zmq.DEALER)
    socket.linger = 0
    socket.routing_id = routing_id
    socket.rcvtimeo = 5000
    socket.connect(address)
    return socket


def test_a_peer_reconnecting_with_its_old_routing_id_is_answered(mesh: Mesh) -> None:
    node = mesh.node("solo")
    address = f"tcp://127.0.0.1:{node.port1}"  # the front door: a ROUTER made like the link and command ones
    context = zmq.Context()
    try:
        old = dealer(context, b"same-peer-id", address)
        old.send(wire.encode_control(wire.DISCOVER))
        kind, body = wire.decode_control(old.recv())
        assert kind == wire.DISCOVERED and body["id"] == node.id
        # The old connection stays open (not closed, not noticed) while the peer reconnects under the same id.
        new = dealer(context, b"same-peer-id", address)
        new.send(wire.encode_control(wire.DISCOVER))
        kind, body = wire.decode_control(new.recv())  # zmq.Again after 5 s without handover
        assert kind == wire.DISCOVERED and body["id"] == node.id
    finally:
        context.destroy(linger=0)  # closes both sockets, whatever happened
