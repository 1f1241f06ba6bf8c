"""The mesh wire format: single-frame messages with a fixed binary header, encoded and validated here.

Every decoder raises ``MalformedMessage`` on bad input; nothing else in the mesh parses raw frames.
See PROTOCOL.md for the layout of each message type.
"""

from __future__ import annotations

import struct
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pynndb.errors import InvalidArgument, MalformedMessage

VERSION = 2  # 2: SWIM membership (PROBE/ACK/PROBE_REQ/SUSPECT/DEAD/SYNC); HEARTBEAT only on change

# Message types (byte 1 of every frame).
DISCOVER = 0x01
DISCOVERED = 0x02
HELLO = 0x10
WELCOME = 0x11
RESET = 0x12
BYE = 0x13
HEARTBEAT = 0x20
LEAVE = 0x21
SUSPECT = 0x22
DEAD = 0x23
PROBE = 0x24
ACK = 0x25
PROBE_REQ = 0x26
SYNC = 0x27
COMMAND = 0x30
REPLY = 0x31
PUBLISH = 0x40
SEND = 0x41
REQUEST = 0x50
RESPONSE = 0x51

REQUEST_HEAD = bytes((VERSION, REQUEST))  # the preamble of a Plugin's REQUEST...
RESPONSE_HEAD = bytes((VERSION, RESPONSE))  # ...and of a node's RESPONSE

ROUTED_TYPES = frozenset({HEARTBEAT, LEAVE, SUSPECT, DEAD, PROBE, ACK, PROBE_REQ, SYNC, COMMAND, REPLY, PUBLISH, SEND})
TARGETED_TYPES = frozenset({PROBE, ACK, PROBE_REQ, SYNC, COMMAND, REPLY, SEND})
LINK_TYPES = frozenset({HELLO, WELCOME, RESET, BYE}) | ROUTED_TYPES

_PREAMBLE = struct.Struct(">BB")
# version, type, origin node id (16 raw uuid bytes), message id
_ROUTED = struct.Struct(">BB16sQ")
_TARGET = struct.Struct(">16s")
TARGETED_HEAD = struct.Struct(">BB16sQ16s")  # a targeted message's whole header: version, type, origin, id, target
_TOPIC_HEAD = struct.Struct(">HI")  # topic length, item count
_ITEM_LEN = struct.Struct(">I")
_KIND_LEN = struct.Struct(">B")

ROUTED_HEADER_SIZE = _ROUTED.size
TARGETED_HEADER_SIZE = _ROUTED.size + _TARGET.size
MAX_TOPIC_BYTES = 1024
MAX_KIND_BYTES = 255


def node_id_to_bytes(node_id: str) -> bytes:
    """Pack a 32-hex node id into its 16 wire bytes."""
    if type(node_id) is str and len(node_id) == 32:
        try:
            raw = bytes.fromhex(node_id)  # the usual form, ten times cheaper than parsing a UUID
            if len(raw) == 16:
                return raw
        except ValueError:
            pass
    try:
        return uuid.UUID(hex=node_id).bytes
    except (ValueError, TypeError, AttributeError) as error:
        raise MalformedMessage(f"not a node id: {node_id!r}") from error


@dataclass(frozen=True, slots=True)
class TopicBatch:
    """A PUBLISH message: several payloads on one topic."""

    topic: str
    payloads: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Targeted:
    """A SEND message: one payload of a named kind for one node."""

    kind: str
    payload: bytes


def message_type(frame: bytes) -> int:
    """Return the type byte of a frame after checking its version."""
    if len(frame) < _PREAMBLE.size:
        raise MalformedMessage("frame shorter than its preamble")
    version, kind = _PREAMBLE.unpack_from(frame)
    if version != VERSION:
        raise MalformedMessage(f"unsupported protocol version {version}")
    return int(kind)


def encode_control(kind: int, body: Any = None) -> bytes:
    """Encode an unrouted message: preamble plus an optional JSON body."""
    head = _PREAMBLE.pack(VERSION, kind)
    return head if body is None else head + orjson.dumps(body)


def decode_json_body(frame: bytes | memoryview, offset: int) -> Any:
    """Decode the JSON body that starts at ``offset``."""
    try:
        return orjson.loads(frame[offset:])
    except orjson.JSONDecodeError as error:
        raise MalformedMessage(f"bad JSON body: {error}") from error


def decode_control(frame: bytes) -> tuple[int, Any]:
    """Decode an unrouted message into (type, JSON body or None)."""
    kind = message_type(frame)
    if len(frame) == _PREAMBLE.size:
        return kind, None
    return kind, decode_json_body(frame, _PREAMBLE.size)


def routed_header(frame: bytes, kind: int) -> tuple[str, str | None, int]:
    """The origin, target (None for untargeted types) and body offset of a routed frame whose type byte is
    ``kind``: what a node reads of every routed frame (its message id only serves as part of the seen-cache key,
    bytes 2..25, which the node takes as they are)."""
    if kind in TARGETED_TYPES:
        if len(frame) < TARGETED_HEADER_SIZE:
            raise MalformedMessage("truncated target")
        return frame[2:18].hex(), frame[ROUTED_HEADER_SIZE:TARGETED_HEADER_SIZE].hex(), TARGETED_HEADER_SIZE
    if kind not in ROUTED_TYPES:
        raise MalformedMessage(f"type {kind:#x} is not routed")
    if len(frame) < ROUTED_HEADER_SIZE:
        raise MalformedMessage("truncated routed header")
    return frame[2:18].hex(), None, ROUTED_HEADER_SIZE


def encode_routed(kind: int, origin: bytes, message_id: int, body: bytes = b"", target: bytes | None = None) -> bytes:
    """Encode a routed message; ``origin``/``target`` are 16 raw id bytes, ``body`` is already encoded."""
    if kind in TARGETED_TYPES:
        if target is None or len(target) != 16:
            raise InvalidArgument("targeted message needs a 16-byte target")
        return TARGETED_HEAD.pack(VERSION, kind, origin, message_id, target) + body
    return _ROUTED.pack(VERSION, kind, origin, message_id) + body


def encode_topic_body(topic: str, payloads: Sequence[bytes]) -> bytes:
    """Encode the body of a PUBLISH message: topic, count, then length-prefixed payloads."""
    raw_topic = topic.encode()
    if len(raw_topic) > MAX_TOPIC_BYTES:
        raise InvalidArgument(f"topic longer than {MAX_TOPIC_BYTES} bytes")
    parts = [_TOPIC_HEAD.pack(len(raw_topic), len(payloads)), raw_topic]
    pack = _ITEM_LEN.pack
    for payload in payloads:
        parts.append(pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


def topic_batches(
    queued: deque[tuple[str, bytes]], max_bytes: int, max_items: int
) -> Iterator[tuple[str, list[bytes]]]:
    """Take what is queued now as PUBLISH batches: one per run of a topic, each within ``max_bytes`` (unless one
    payload is bigger) and ``max_items``."""
    topic: str | None = None
    batch: list[bytes] = []
    size = 0
    for _ in range(len(queued)):
        item_topic, payload = queued.popleft()
        if batch and (item_topic != topic or size + len(payload) > max_bytes or len(batch) >= max_items):
            yield topic or "", batch
            batch, size = [], 0
        topic = item_topic
        batch.append(payload)
        size += len(payload)
    if batch:
        yield topic or "", batch


def decode_topic_name(frame: bytes, offset: int) -> str:
    """Read only the topic of a PUBLISH body (the relay path needs nothing more)."""
    if len(frame) < offset + _TOPIC_HEAD.size:
        raise MalformedMessage("truncated topic header")
    topic_length, _ = _TOPIC_HEAD.unpack_from(frame, offset)
    start = offset + _TOPIC_HEAD.size
    if topic_length > MAX_TOPIC_BYTES or len(frame) < start + topic_length:
        raise MalformedMessage("bad topic length")
    try:
        return frame[start : start + topic_length].decode()
    except UnicodeDecodeError as error:
        raise MalformedMessage("topic is not UTF-8") from error


def decode_topic_body(frame: bytes, offset: int) -> TopicBatch:
    """Decode a PUBLISH body into its topic and payloads."""
    topic = decode_topic_name(frame, offset)
    _, count = _TOPIC_HEAD.unpack_from(frame, offset)
    position = offset + _TOPIC_HEAD.size + len(topic.encode())
    end = len(frame)
    view = memoryview(frame)
    payloads = []
    unpack = _ITEM_LEN.unpack_from
    for _ in range(count):
        if position + 4 > end:
            raise MalformedMessage("truncated payload length")
        (length,) = unpack(frame, position)
        position += 4
        if position + length > end:
            raise MalformedMessage("truncated payload")
        payloads.append(bytes(view[position : position + length]))
        position += length
    if position != end:
        raise MalformedMessage("trailing bytes after payloads")
    return TopicBatch(topic, tuple(payloads))


def encode_send_body(kind: str, payload: bytes) -> bytes:
    """Encode the body of a SEND message: kind name then the payload."""
    raw_kind = kind.encode()
    if len(raw_kind) > MAX_KIND_BYTES:
        raise InvalidArgument(f"kind longer than {MAX_KIND_BYTES} bytes")
    return b"".join((_KIND_LEN.pack(len(raw_kind)), raw_kind, payload))


def decode_send_body(frame: bytes, offset: int) -> Targeted:
    """Decode the body of a SEND message."""
    if len(frame) < offset + 1:
        raise MalformedMessage("truncated kind")
    length = frame[offset]
    start = offset + 1
    if len(frame) < start + length:
        raise MalformedMessage("truncated kind")
    try:
        kind = frame[start : start + length].decode()
    except UnicodeDecodeError as error:
        raise MalformedMessage("kind is not UTF-8") from error
    return Targeted(kind, frame[start + length :])


def require_dict(value: Any, what: str) -> dict[str, Any]:
    """Check that a decoded JSON value is an object."""
    if not isinstance(value, dict):
        raise MalformedMessage(f"{what} must be a JSON object")
    return value


def require_field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """Fetch a field of a decoded JSON object and check its type."""
    value = body.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise MalformedMessage(f"field {name!r} missing or of the wrong type")
    return value
