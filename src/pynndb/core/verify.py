"""Check every index of a database against its table: each record's keys are present, no entry points at a
missing record or under a key the record does not produce, and unique indexes hold each key once.

Runs in one read transaction, so it is safe on a live database (open it with ``readonly=True``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pynndb.core.codec import decode_value
from pynndb.errors import IndexFunctionUnavailable, PyNNDBError

if TYPE_CHECKING:
    from pynndb.core.database import Database

MAX_PROBLEMS = 1000  # per index: a broken index is reported, not listed in full


@dataclass(frozen=True)
class Problem:
    """One inconsistency: which table and index, what is wrong, and the record key involved."""

    table: str
    index: str
    kind: str  # missing_entry, orphan_entry, wrong_key, unreadable_record, key_error, unchecked, truncated
    key: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "index": self.index, "problem": self.kind, "key": self.key, "detail": self.detail}


def verify(db: Database, tables: list[str] | None = None) -> tuple[dict[str, dict[str, int]], list[Problem]]:
    """Check the indexes of `tables` (default: every table). Returns (per table: records and entries per index,
    problems found)."""
    db._refresh()
    names = sorted(tables if tables is not None else db.tables())
    counts: dict[str, dict[str, int]] = {}
    problems: list[Problem] = []
    with db._snapshot_txn() as txn:
        for name in names:
            table = db[name]
            documents = dict(_documents(txn, table, problems))
            counts[name] = {"records": txn.stat(table._dbi)["entries"]}
            for index in table._index_list:
                found = _check_index(txn, name, index, documents, problems)
                counts[name][index.name] = found
    return counts, problems


def _documents(txn: Any, table: Any, problems: list[Problem]) -> Iterator[tuple[bytes, dict[str, Any]]]:
    for oid, stored in txn.cursor(db=table._dbi):
        try:
            yield oid, decode_value(stored, table._compressor)
        except Exception as error:  # a record that cannot be decoded is itself a finding
            problems.append(Problem(table.name, "", "unreadable_record", oid.decode("ascii", "replace"), repr(error)))


def _check_index(
    txn: Any, table: str, index: Any, documents: dict[bytes, dict[str, Any]], problems: list[Problem]
) -> int:
    expected: set[tuple[bytes, bytes]] = set()
    reported = 0

    def report(kind: str, oid: bytes, detail: str = "") -> None:
        nonlocal reported
        reported += 1
        if reported <= MAX_PROBLEMS:
            problems.append(Problem(table, index.name, kind, oid.decode("ascii", "replace"), detail))

    for oid, fields in documents.items():
        try:
            keys = index.keys(fields)
        except IndexFunctionUnavailable:
            problems.append(Problem(table, index.name, "unchecked", "", "function index: its function is not loaded"))
            return int(txn.stat(index.dbi)["entries"])
        except PyNNDBError as error:
            report("key_error", oid, str(error))
            continue
        expected.update((key, oid) for key in keys)
    entries = 0
    seen: set[tuple[bytes, bytes]] = set()
    for key, oid in txn.cursor(db=index.dbi):
        entries += 1
        pair = (key, oid)
        seen.add(pair)
        if pair in expected:
            continue
        if oid not in documents:
            report("orphan_entry", oid, f"index key {key!r} points at no record")
        else:
            report("wrong_key", oid, f"index key {key!r} is not a key of this record")
    for key, oid in sorted(expected - seen):
        report("missing_entry", oid, f"index key {key!r} is missing")
    if reported > MAX_PROBLEMS:
        problems.append(Problem(table, index.name, "truncated", "", f"{reported - MAX_PROBLEMS} more problems"))
    return entries
