"""Value codecs: orjson for documents, with optional per-table zstd compression (optionally a trained dictionary).

A stored value that starts with ``{`` is plain JSON; anything else is a zstd frame. Tables can therefore switch
compression on or off without rewriting every record first, and readers never need to know which it is.
"""

from __future__ import annotations

from typing import Any

import orjson
import zstandard

from pynndb.errors import InvalidDocument

_dumps = orjson.dumps
_loads = orjson.loads
_JSON_START = 0x7B  # '{'


def encode_document(data: Any) -> bytes:
    """Serialise a document's fields to JSON bytes, or raise InvalidDocument."""
    if data.__class__ is not dict and not isinstance(data, dict):
        raise InvalidDocument(f"a document must be a dict, not {type(data).__name__}")
    try:
        raw = _dumps(data)
    except orjson.JSONEncodeError as error:
        raise InvalidDocument(f"document cannot be stored as JSON: {error}") from None
    if b"null" in raw and _has_non_finite(data):
        # orjson writes NaN and infinities as null: refuse rather than silently change the value.
        raise InvalidDocument("document holds NaN or an infinity, which JSON cannot represent")
    return raw


def encode_new(data: dict[str, Any]) -> bytes:
    """`encode_document` for a new record's fields on a bulk path: orjson at once, the checks only when it fails or
    writes a null (NaN and infinities come out as null)."""
    try:
        raw = _dumps(data)
    except orjson.JSONEncodeError:
        return encode_document(data)  # raises InvalidDocument with the reason
    return encode_document(data) if raw.find(b"null") >= 0 else raw  # (find: cheaper than `in` on bytes)


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(item) for item in value)
    return False


class Compressor:
    """zstd compression of single values at a level, optionally with a trained dictionary."""

    def __init__(self, level: int = 3, dictionary: bytes | None = None) -> None:
        self.level = level
        self.dictionary = dictionary
        zdict = zstandard.ZstdCompressionDict(dictionary) if dictionary else None
        self._compress = zstandard.ZstdCompressor(level=level, dict_data=zdict).compress
        self._decompress = zstandard.ZstdDecompressor(dict_data=zdict).decompress

    def compress(self, raw: bytes) -> bytes:
        return self._compress(raw)

    def decompress(self, stored: bytes) -> bytes:
        return self._decompress(stored)


def decode_value(stored: bytes, compressor: Compressor | None) -> dict[str, Any]:
    """Decode a stored value (plain JSON or a zstd frame) to a dict."""
    if stored[0] == _JSON_START:
        return _loads(stored)
    if compressor is None:
        compressor = _plain_decompressor()
    return _loads(compressor.decompress(stored))


def raw_json(stored: bytes, compressor: Compressor | None) -> bytes:
    """Return the JSON bytes of a stored value, decompressing if needed."""
    if stored[0] == _JSON_START:
        return stored
    if compressor is None:
        compressor = _plain_decompressor()
    return compressor.decompress(stored)


_PLAIN: list[Compressor] = []


def _plain_decompressor() -> Compressor:
    if not _PLAIN:
        _PLAIN.append(Compressor())
    return _PLAIN[0]


def train_dictionary(samples: list[bytes], size: int = 16384) -> bytes:
    """Train a zstd dictionary of about `size` bytes from sample values."""
    buffers: list[bytes | bytearray | memoryview] = list(samples)  # (zstandard's stub asks for this list type)
    return zstandard.train_dictionary(size, buffers).as_bytes()
