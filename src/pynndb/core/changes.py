"""Change feeds: the journal of a replicated database read back as a stream of `Change`s, woken by the doorbell.

Each journal entry (one committed transaction) yields its document changes in order; schema ops (create, ensure,
drop_index, compress) change no document and are skipped. A feed reads the journal in short read transactions and
holds none while it waits or while the caller handles a change.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from pynndb.core import ops
from pynndb.core.doc import Doc, make_doc
from pynndb.core.doorbell import Doorbell
from pynndb.core.entries import read_entry
from pynndb.core.journal import SEQ
from pynndb.core.journal_writes import KEY
from pynndb.errors import DatabaseClosed, InvalidArgument, JournalTrimmed, MalformedEntry

if TYPE_CHECKING:
    from pynndb.core.database import Database

OPS = ops.CHANGE_KINDS
BATCH_ENTRIES = 500
BATCH_BYTES = 4 << 20
SAFETY_WAIT = 1.0  # re-read the journal at least this often while waiting, in case a ring never came

Since = int | tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Change:
    """One document change of a committed transaction.

    `sequence` is its journal entry (several changes of one transaction share it), `index` its place in that
    entry; `last` marks the entry's last change in this feed. `op` is 'put' (`doc` holds the new document),
    'delete', 'empty' or 'drop' (`key` is None for those two). `origin` is the UUID of the database where the
    change was made (a replica's feed shows its sources' UUIDs).
    """

    sequence: int
    table: str
    op: str
    key: str | None
    doc: Doc | None
    origin: str
    index: int = 0
    last: bool = True

    @property
    def position(self) -> tuple[int, int]:
        """Resume point just after this change: pass it as `since` (or `sequence` once `last` is true)."""
        return (self.sequence, self.index)


def follow(
    db: Database, since: Since = None, tables: Iterable[str] | None = None, timeout: float | None = None
) -> Iterator[Change]:
    """The changes of `db` after `since` (see `Database.changes`); checks arguments and the journal at once."""
    db._refresh()
    db.replication._require()
    wanted = _tables(tables)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
        raise InvalidArgument("timeout must be a number of seconds >= 0, or None to wait for ever")
    bell = Doorbell(db.path)  # listening before the start is read: nothing committed after this call is missed
    try:
        if since is None:
            start, skip = db.replication.sequence + 1, -1
        elif since == 0 and not isinstance(since, bool):
            start, skip = db.replication.retained[0], -1  # the oldest entry still retained
        else:
            start, skip = _resume_point(since)
            _check_retained(db, start)
    except BaseException:
        bell.close()
        raise
    return _feed(db, bell, start, skip, wanted, timeout)


def _tables(tables: Iterable[str] | None) -> frozenset[str] | None:
    if tables is None:
        return None
    if isinstance(tables, str):
        return frozenset([tables])
    chosen = frozenset(tables)
    if not all(isinstance(name, str) for name in chosen):
        raise InvalidArgument("tables must be table names (str)")
    return chosen


def _resume_point(since: Any) -> tuple[int, int]:
    """(first entry to read, index within it after which changes are new)."""
    if isinstance(since, tuple) and len(since) == 2 and all(_natural(part) for part in since):
        return since[0], since[1]
    if _natural(since):
        return since + 1, -1
    raise InvalidArgument(f"since must be None, a sequence number >= 0 or a Change.position, not {since!r}")


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_retained(db: Database, start: int) -> None:
    with db._snapshot_txn() as txn:
        _read(db, txn, max(start, 1), limit=1)


def _read(db: Database, txn: Any, start: int, limit: int = BATCH_ENTRIES) -> list[tuple[int, bytes]]:
    """Entries (seq, body) from `start` on, in one read transaction; JournalTrimmed if `start` is gone."""
    replication = db.replication
    cursor = txn.cursor(db=replication._journal)
    found: list[tuple[int, bytes]] = []
    size = 0
    if cursor.set_range(SEQ.pack(start)):
        for key, value in cursor:
            found.append((KEY.unpack(key)[0], value))
            size += len(value)
            if len(found) >= limit or size >= BATCH_BYTES:
                break
    first = found[0][0] if found else replication.last_sequence(txn) + 1
    if first > start:  # the journal is gapless: anything after `start - 1` that is not `start` means trimmed
        oldest = first if found else None
        what = f"its oldest entry is {oldest}" if oldest else "it holds no entry now"
        raise JournalTrimmed(f"{db.path}: changes after {start - 1} are no longer in the journal ({what})", oldest)
    return found


def _feed(
    db: Database, bell: Doorbell, start: int, skip: int, wanted: frozenset[str] | None, timeout: float | None
) -> Iterator[Change]:
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if db.closed:
                raise DatabaseClosed(f"database {db.path} is closed")
            bell.drain()  # before reading: a commit after this read rings again
            with db._snapshot_txn() as txn:
                entries = _read(db, txn, start)
            delivered = False
            for seq, body in entries:
                changes = decode_entry(seq, body, wanted, skip)
                start, skip = seq + 1, -1
                for change in changes:
                    delivered = True
                    yield change
            if delivered and timeout is not None:
                deadline = time.monotonic() + timeout
            if entries:
                continue
            if deadline is None:
                bell.wait(SAFETY_WAIT)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            bell.wait(min(remaining, SAFETY_WAIT))
    finally:
        bell.close()


def decode_entry(seq: int, body: bytes, wanted: frozenset[str] | None = None, skip: int = -1) -> list[Change]:
    """The document changes of one journal entry (after index `skip`, of the `wanted` tables)."""
    try:
        entry = read_entry(body)
    except MalformedEntry as error:
        raise MalformedEntry(f"journal entry {seq}: {error}") from None
    origin = entry.origin
    chosen = [
        (index, op)
        for index, op in enumerate(entry.ops)
        if index > skip
        and isinstance(op, list)
        and len(op) >= 2
        and op[0] in OPS
        and (wanted is None or op[1] in wanted)
    ]
    found: list[Change] = []
    final = len(chosen) - 1
    for position, (index, op) in enumerate(chosen):
        kind = op[0]
        key = op[2] if kind == ops.PUT or kind == ops.DELETE else None
        doc = make_doc(orjson.loads(op[3]), op[2].encode()) if kind == ops.PUT else None
        found.append(Change(seq, op[1], kind, key, doc, origin, index, position == final))
    return found
