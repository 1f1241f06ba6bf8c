"""Content of a database as data: a digest to compare copies cheaply, and `diff` for a readable report.

Content is tables, their index definitions and their documents; replication bookkeeping (journal, marks,
versions, tombstones) and compression settings are not content.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from deepdiff import DeepDiff

from pynndb.core.storage import Storage

if TYPE_CHECKING:
    from pynndb.core.database import Database
    from pynndb.core.snapshot_read import SnapshotRead

_SORTED = orjson.OPT_SORT_KEYS
YIELD_EVERY = 256  # documents digested between two offers of the GIL (~0.5 ms of work)


def summary(db: Database) -> dict[str, dict[str, Any]]:
    """Per table: index definitions, record count and a digest of the documents (one read transaction)."""
    return sequenced_summary(db)[1]


def sequenced_summary(
    db: Database, pinned: Callable[[int], None] | None = None
) -> tuple[int, dict[str, dict[str, Any]]]:
    """`summary` and the journal sequence it was taken at (0 without a journal), from one read transaction;
    `pinned(sequence)` is called as soon as that transaction is open, before any document is read."""
    with Storage(db).read() as view:
        sequence = view.last_sequence()
        if pinned is not None:
            pinned(sequence)
        return sequence, _summary(view)


def replica_summary(
    db: Database, source: str, pinned: Callable[[int | None], None] | None = None
) -> tuple[int | None, dict[str, dict[str, Any]]]:
    """`summary` of a replica and the mark of `source` it shows (None while a snapshot of `source` is under way),
    from one read transaction: the content and the position it stands for cannot disagree. `pinned(mark)` is
    called as soon as that transaction is open: what the replica applies afterwards is not in the summary."""
    with Storage(db).read() as view:
        mark = view.replica_mark(source)
        if pinned is not None:
            pinned(mark)
        return mark, _summary(view)


def _summary(view: SnapshotRead) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name in view.table_names():
        hasher = hashlib.blake2b(digest_size=16)
        count = 0
        for oid, fields in view.documents(name):
            hasher.update(oid)
            hasher.update(orjson.dumps(fields, option=_SORTED))
            count += 1
            if not count % YIELD_EVERY:
                # A digest runs on a worker thread of a node: hand the GIL to the node's loop thread if it waits
                # (else it waits up to the interpreter's 5 ms switch interval, and every replicated write with it).
                time.sleep(0)
        result[name] = {"indexes": view.index_definitions(name), "records": count, "digest": hasher.hexdigest()}
    return result


def digest(db: Database) -> str:
    """One hex digest of the whole content."""
    return hashlib.blake2b(orjson.dumps(summary(db), option=_SORTED), digest_size=16).hexdigest()


def table_content(db: Database, name: str) -> dict[str, Any]:
    """A table as plain data: {'indexes': {...}, 'documents': {key: fields}}."""
    with Storage(db).read() as view:
        if name not in view.table_names():
            return {}
        documents = {oid.decode(): fields for oid, fields in view.documents(name)}
        return {"indexes": view.index_definitions(name), "documents": documents}


def only(summary_of_tables: dict[str, Any], tables: Iterable[str] | None) -> dict[str, Any]:
    """A summary restricted to `tables` (all of it when None)."""
    if tables is None:
        return summary_of_tables
    chosen = set(tables)
    return {name: value for name, value in summary_of_tables.items() if name in chosen}


def compare(summary_a: dict[str, Any], summary_b: dict[str, Any], content: Any) -> dict[str, Any]:
    """Diff two summaries; `content(side, table)` fetches a table's content where digests differ."""
    if summary_a == summary_b:
        return {}
    left: dict[str, Any] = {}
    right: dict[str, Any] = {}
    for name in sorted(set(summary_a) | set(summary_b)):
        if summary_a.get(name) == summary_b.get(name):
            continue
        left[name] = content(0, name) if name in summary_a else None
        right[name] = content(1, name) if name in summary_b else None
    report = DeepDiff(left, right, verbose_level=2)
    return orjson.loads(report.to_json()) if report else {}


def diff(db_a: Database, db_b: Database, tables: Iterable[str] | None = None) -> dict[str, Any]:
    """{} when both databases hold the same content (of `tables` only, when given: a table missing on one side
    differs); a deepdiff report (as plain data) otherwise."""
    databases = (db_a, db_b)
    chosen = None if tables is None else list(tables)
    summaries = only(summary(db_a), chosen), only(summary(db_b), chosen)
    return compare(*summaries, lambda side, name: table_content(databases[side], name))
