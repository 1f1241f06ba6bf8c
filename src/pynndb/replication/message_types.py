"""Replication messages (sans-IO): what a source, its replicas and the nodes between them say to each other.

The wire codec is in `messages` (frames) and `stored_frames` (the payload of a snapshot chunk of stored pairs);
`messages` re-exports every name here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pynndb.errors import MalformedEntry

VERSION = 1
STORED_FORMAT = 1  # layout of a `stored` payload (header field "format")
PARTS = ("records", "index", "tombstones")
VERSION_SIZE = 41  # a stored document version: clock u64, origin uuid, tombstone flag, source uuid (journal.VERSION)
MAX_KEY = 511  # LMDB's key size limit
MAX_RECORD_KEY = 256
# Record keys are written verbatim into JSON journal ops: only characters that need no escaping (core.ids).
RECORD_KEY_BYTES = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:"
EMPTY_JSON = b"[]"
MAX_WINDOW = 4096  # the largest window a request may offer (chunks)


@dataclass(frozen=True)
class Entries:
    """Consecutive journal entries of database `source`: (seq, clock, body) with body the entry's JSON."""

    source: str
    entries: list[tuple[int, int, bytes]]
    last: int = 0  # the source's last sequence when sent (for lag), 0 if unknown

    @property
    def first_seq(self) -> int:
        return self.entries[0][0] if self.entries else 0

    @property
    def last_seq(self) -> int:
        return self.entries[-1][0] if self.entries else 0


@dataclass(frozen=True)
class Request:
    """A replica asks source `source` for entries from `start` on (a snapshot if `snapshot` or if they are gone).

    `tables`: a filtered replica's tables, so that a snapshot carries only those (None: every table).
    """

    source: str
    replica: str
    start: int
    snapshot: bool = False
    tables: list[str] | None = None
    # The replica's id for this request: a snapshot answering it carries it (0: none). A correlation id, not part
    # of what is asked, so two requests for the same thing compare equal.
    stream: int = field(default=0, compare=False)
    # Flow control offered (0: none, as before windows existed): the replica acknowledges a snapshot's chunks
    # (`SnapshotAck`), and the source keeps at most this many chunks past the last acknowledged one on the way.
    window: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SnapshotBegin:
    """A snapshot of `source` taken at sequence `seq`: table and index definitions, and how many documents follow."""

    source: str
    seq: int
    tables: dict[str, Any]
    documents: int
    dictionaries: dict[str, str] = field(default_factory=dict)  # table -> base64 zstd dictionary of its records
    stream: int = field(default=0, compare=False)  # the `stream` of the request answered (0: not said)
    window: int = field(default=0, compare=False)  # the request's window the source keeps to (0: no flow control)


@dataclass(frozen=True)
class StoredPairs:
    """Key/value pairs of one of a table's LMDB sub-databases, exactly as the source stores them, in key order:
    `keys[i]` goes with `values[i]` (tuples, so that chunks compare equal after a round trip).

    - part 'records': (record key, stored value: JSON or a zstd frame); `versions` holds the source's 41-byte
      version of each record (b'' when it has none), or is None when the source keeps no versions;
    - part 'index': (index key, record key) entries of index `index`;
    - part 'tombstones': (record key, 41-byte version) of deleted records (versioned sources only).
    """

    part: str
    keys: tuple[bytes, ...]
    values: tuple[bytes, ...]
    versions: tuple[bytes, ...] | None = None
    index: str | None = None
    # The lengths of the keys and of the values when the source already measured them (`bulk.StoredPart`): its
    # frame lists them. Not part of what the pairs are (a decoded chunk has none).
    key_lengths: list[int] | None = field(default=None, compare=False, repr=False)
    value_lengths: list[int] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        part: str,
        pairs: list[tuple[bytes, bytes]],
        versions: list[bytes] | None = None,
        index: str | None = None,
    ) -> StoredPairs:
        """From a list of (key, value) pairs."""
        keys, values = (tuple(pairs_part) for pairs_part in zip(*pairs, strict=True)) if pairs else ((), ())
        return cls(part, keys, values, None if versions is None else tuple(versions), index)


@dataclass(frozen=True)
class SnapshotChunk:
    """Documents of one table in a snapshot: [key, fields or None (tombstone), version or None] (JSON form), or,
    when `stored` is set, stored key/value pairs of the table (then `documents` is empty and `raw` is b'[]')."""

    source: str
    seq: int
    table: str
    documents: list[Any] = field(default_factory=list)
    raw: bytes | None = None  # the JSON array as sent, when built by a source
    stored: StoredPairs | None = None
    stream: int = field(default=0, compare=False)
    number: int = field(default=0, compare=False)  # its place among the snapshot's chunks, from 1 (0: not said)


@dataclass(frozen=True)
class SnapshotEnd:
    """The snapshot at `seq` is complete: entries from `seq + 1` follow."""

    source: str
    seq: int
    stream: int = field(default=0, compare=False)
    chunks: int | None = field(default=None, compare=False)  # how many chunks the snapshot sent (None: not said)


@dataclass(frozen=True)
class SnapshotAck:
    """A replica that asked with a `window` has taken the chunks of snapshot `stream` up to number `number`: the
    source's node sends at most `window` chunks past the last one acknowledged (bounded memory on both nodes)."""

    source: str
    replica: str
    stream: int
    number: int


Message = Entries | Request | SnapshotBegin | SnapshotChunk | SnapshotEnd | SnapshotAck
Reply = Request | SnapshotAck  # what a replica sends back to its source's node


def count_field(header: dict[str, Any], name: str, default: int | None = None) -> int:
    """A non-negative int field (`default` when absent and one is given)."""
    value = header.get(name, default)
    if type(value) is not int or value < 0:
        raise MalformedEntry(f"field {name!r} must be a non-negative int")
    return value


def typed_field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MalformedEntry(f"field {name!r} missing or of the wrong type")
    return value
