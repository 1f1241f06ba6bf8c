"""Malformed input on every port is dropped and counted, and the node keeps answering PING."""

from __future__ import annotations

import random
import socket
import uuid

import orjson
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from pynndb.errors import MalformedMessage
from pynndb.mesh import wire
from pynndb.mesh.controller import Controller
from tests.helpers import wait_until
from tests.mesh.conftest import Mesh

pytestmark = pytest.mark.timeout(60)


def sample_frames(node: Controller) -> list[bytes]:
    """Valid frames of every type, to be truncated and mutated."""
    origin = uuid.uuid4().bytes
    target = uuid.UUID(hex=node.id).bytes
    entry = {
        "id": origin.hex(),
        "label": "fuzz",
        "address": "tcp://127.0.0.1:1",
        "links": [],
        "services": {},
        "topics": [],
        "public_key": None,
        "heartbeat": 0.1,
        "seq": 1,
        "started": 0.0,
    }
    return [
        wire.encode_control(wire.DISCOVER),
        wire.encode_control(wire.HELLO, {"entry": entry, "directory": []}),
        wire.encode_control(wire.REQUEST, {"req": 1, "cmd": "PING"}),
        wire.encode_routed(wire.HEARTBEAT, origin, 1, orjson.dumps(entry)),
        wire.encode_routed(wire.COMMAND, origin, 2, orjson.dumps({"req": 1, "cmd": "PING"}), target),
        wire.encode_routed(wire.PUBLISH, origin, 3, wire.encode_topic_body("t", [b"a", b"bc"])),
        wire.encode_routed(wire.SEND, origin, 4, wire.encode_send_body("k", b"payload"), target),
        wire.encode_routed(wire.LEAVE, origin, 5),
    ]


def mutations(samples: list[bytes], rng: random.Random, count: int) -> list[list[bytes]]:
    messages = []
    for index in range(count):
        base = rng.choice(samples)
        choice = index % 6
        if choice == 0:
            frame = rng.randbytes(rng.randrange(0, 200))
        elif choice == 1:
            frame = base[: rng.randrange(0, len(base))]
        elif choice == 2:
            frame = bytes([rng.randrange(2, 256)]) + base[1:]  # wrong version
        elif choice == 3:
            mutable = bytearray(base)
            for _ in range(3):
                mutable[rng.randrange(len(mutable))] = rng.randrange(256)
            frame = bytes(mutable)
        elif choice == 4:
            frame = base[:26] + rng.randbytes(rng.randrange(0, 64))
        else:
            messages.append([base, rng.randbytes(8)])  # an extra frame
            continue
        messages.append([frame])
    return messages


def test_fuzz_every_port_then_ping(mesh: Mesh) -> None:
    node = mesh.node("target", max_message_size=1 << 20)
    peer = mesh.node("peer")
    peer.connect(node)
    plugin = mesh.plugin(node)
    rng = random.Random(1234)
    samples = sample_frames(node)
    context = zmq.Context()
    try:
        for port in (node.port1, node.port2, node.port3):
            dealer = context.socket(zmq.DEALER)
            dealer.linger = 2000  # deliver everything queued before close
            dealer.connect(f"tcp://127.0.0.1:{port}")
            if port == node.port2:
                # Introduce ourselves first so routed garbage reaches the decoders behind the handshake.
                dealer.send(samples[1])
                assert dealer.poll(2000)
                dealer.recv()
            for frames in mutations(samples, rng, 3000):
                dealer.send_multipart(frames)
            dealer.send(b"\x01" * (2 << 20))  # above MAXMSGSIZE: libzmq drops the connection
            dealer.close()
        for port in (node.port1, node.port2, node.port3):
            # Not even ZMTP: raw bytes on the TCP port.
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(rng.randbytes(5000))
    finally:
        context.term()
    assert wait_until(lambda: plugin.call("STATUS")["counters"]["malformed"] > 5000)
    assert plugin.call("PING")["peer"] == node.id
    assert plugin.call("PING", target="peer")["peer"] == peer.id
    assert peer.call("PING", target=node.id)["peer"] == node.id


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoders_only_raise_malformed(frame: bytes) -> None:
    for decode in (
        wire.decode_control,
        lambda f: wire.routed_header(f, f[1] if len(f) > 1 else 0),
        lambda f: wire.decode_topic_body(f, 0),
        lambda f: wire.decode_send_body(f, 0),
    ):
        try:
            decode(frame)
        except MalformedMessage:
            pass


@given(st.text(max_size=50), st.lists(st.binary(max_size=100), max_size=20))
def test_topic_batch_round_trip(topic: str, payloads: list[bytes]) -> None:
    origin = uuid.uuid4().bytes
    frame = wire.encode_routed(wire.PUBLISH, origin, 7, wire.encode_topic_body(topic, payloads))
    origin_id, target, offset = wire.routed_header(frame, wire.PUBLISH)
    assert (origin_id, target) == (origin.hex(), None) and frame[2:26] == origin + (7).to_bytes(8, "big")
    batch = wire.decode_topic_body(frame, offset)
    assert batch == wire.TopicBatch(topic, tuple(payloads))
