"""The journal op vocabulary in one place: each op's name, how it is written, and what it carries.

An op is a JSON list whose first item names it and whose second names its table (see PROTOCOL.md, "Journal"):
``["put", table, key, length]`` (the document's stored bytes follow the entry's header), ``["delete", table, key]``,
``["create", table]``, ``["drop", table]``, ``["empty", table]``, ``["ensure", table, index, definition]``,
``["drop_index", table, index]`` and ``["compress", table, level or null, base64 dictionary or null]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any

import orjson

PUT = "put"
DELETE = "delete"
CREATE = "create"
DROP = "drop"
EMPTY = "empty"
ENSURE = "ensure"
DROP_INDEX = "drop_index"
COMPRESS = "compress"

KINDS = (PUT, DELETE, CREATE, DROP, EMPTY, ENSURE, DROP_INDEX, COMPRESS)
DOCUMENT_KINDS = (PUT, DELETE)  # ops that change one document
CHANGE_KINDS = (PUT, DELETE, EMPTY, DROP)  # ops a change feed reports

# Document ops are formatted in place on the write paths (no call per record): `PUT_FORMAT % (table name as JSON,
# key, document length)`, `DELETE_FORMAT % (table name as JSON, key)`. Record keys need no JSON escaping.
PUT_FORMAT = b'["put",%b,"%b",%d]'
DELETE_FORMAT = b'["delete",%b,"%b"]'
PUT_HEAD = b'["put",'  # + table name as JSON + b',"' + key + b'",' + length + b"]" (bulk formatting)


def put_ops(table_json: bytes, keys: Iterable[bytes], lengths: Iterable[int]) -> bytes:
    """The put ops of many records of one table, comma-separated (as an entry's header joins ops), formatted in one
    go: `PUT_FORMAT` for each (key, document length) pair, by one `%` of the format repeated (no Python-level loop;
    half the time of joining the pieces). Empty for no pairs."""
    values = tuple(chain.from_iterable(zip(keys, lengths, strict=True)))
    each = PUT_HEAD + table_json.replace(b"%", b"%%") + b',"%b",%d],'
    return ((each * (len(values) // 2)) % values)[:-1]


def create(table: str) -> bytes:
    return orjson.dumps([CREATE, table])


def drop(table: str) -> bytes:
    return orjson.dumps([DROP, table])


def empty(table: str) -> bytes:
    return orjson.dumps([EMPTY, table])


def ensure(table: str, index: str, definition: dict[str, Any]) -> bytes:
    return orjson.dumps([ENSURE, table, index, definition])


def drop_index(table: str, index: str) -> bytes:
    return orjson.dumps([DROP_INDEX, table, index])


def compress(table: str, level: int | None, dictionary: str | None) -> bytes:
    return orjson.dumps([COMPRESS, table, level, dictionary])


def is_put(op: Any) -> bool:
    """Whether `op` (as read back by entries.read_entry) is a well-shaped ``put`` op."""
    return op.__class__ is list and len(op) == 4 and op[0] == PUT


def document_count(ops: list[Any]) -> int:
    """How many of `ops` put or delete a document."""
    return sum(1 for op in ops if op and op[0] in DOCUMENT_KINDS)
