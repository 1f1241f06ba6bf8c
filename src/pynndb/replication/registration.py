"""What a replica database records about its sources: registrations (mode and table filter), kept in the
database itself so that a restarted node resumes every replica, and the flags a mode needs (read-only, versions).
"""

from __future__ import annotations

import uuid as uuid_module
from typing import TYPE_CHECKING, Any

from pynndb.core import meta
from pynndb.core.storage import Storage
from pynndb.errors import FilterConflict
from pynndb.replication.table_filter import Tables, listed, tables_of

if TYPE_CHECKING:
    from pynndb.core.database import Database

REGISTRATION = meta.REGISTRATION  # + source (the key layout lives in core/meta.py)


def _registered(db: Database) -> dict[str, dict[str, Any]]:
    """Source UUID -> its stored registration ({'mode', 'tables'?}), for every source `db` replicates."""
    return Storage(db).registrations()


def registrations(db: Database) -> dict[str, str]:
    """Source UUID -> 'two-way' or 'read-only', for every source this database replicates."""
    return {source: stored.get("mode", "read-only") for source, stored in _registered(db).items()}


def filters(db: Database) -> dict[str, Tables]:
    """Source UUID -> the tables `db` replicates of it (None: every table), for every source it replicates."""
    return {source: tables_of(stored.get("tables")) for source, stored in _registered(db).items()}


def check_filter(db: Database, source: str, tables: Tables) -> None:
    """Raise FilterConflict when `db` already replicates `source` with another table filter."""
    current = filters(db)
    if source in current and current[source] != tables:
        raise FilterConflict(
            f"{db.path} already replicates {source} with tables {listed(current[source])}, not {listed(tables)}: "
            "UNREPLICATE it first, then REPLICATE with the new filter"
        )


def register(db: Database, source: str, two_way: bool, tables: Tables = None) -> None:
    """Record that `db` replicates `source` (idempotent) and set the flags that mode needs.

    A read-only replica refuses application writes. A second read-only source turns the database into an
    aggregation, which must know each document's source: documents already there are attributed to the first.
    A registration keeps its table filter: another one raises FilterConflict (unregister first).
    """
    mode = "two-way" if two_way else "read-only"
    check_filter(db, source, tables)
    existing = registrations(db)
    if source not in existing:
        _start_over_for_new_tables(db, source, tables)
    replication = db.replication
    others = [other for other, kind in existing.items() if kind == "read-only" and other != source]
    if not two_way and others and not replication.versioned:
        _attribute_documents(db, others[0])
    if existing.get(source) != mode:
        registration: dict[str, Any] = {"mode": mode}
        if tables is not None:
            registration["tables"] = listed(tables)  # absent: every table (registrations made before filters)
        for tx in Storage(db).transactions():
            with tx:
                tx.set_registration(source, registration)
    read_only = any(kind == "read-only" for kind in {**existing, source: mode}.values())
    if read_only != replication.read_only:
        replication.set_read_only(read_only)
    if (two_way or others) and not replication.versioned:
        replication.set_versioned(True)


def _start_over_for_new_tables(db: Database, source: str, tables: Tables) -> None:
    """A registration that takes tables its kept mark did not cover (the filter grew since UNREPLICATE) starts
    with a snapshot: their earlier content is not in the entries after the mark."""
    for tx in Storage(db).transactions():
        with tx:
            covered = tx.left_filter(source)
            if covered is None or not tx.mark(source):
                continue
            if tables is None or not tables <= frozenset(covered):
                tx.set_snapshot_marker(source, 0)  # as an interrupted snapshot
            tx.set_left_filter(source, None)


def unregister(db: Database, source: str) -> None:
    """Forget that `db` replicates `source` (its data and mark stay); the last read-only source makes it writable.

    A filtered registration leaves its filter behind: registering again with more tables starts with a snapshot.
    """
    tables = filters(db).get(source)
    for tx in Storage(db).transactions():
        with tx:
            tx.set_registration(source, None)
            tx.set_left_filter(source, listed(tables))
    if not any(mode == "read-only" for mode in registrations(db).values()) and db.replication.read_only:
        db.replication.set_read_only(False)


def _attribute_documents(db: Database, source: str) -> None:
    source_bytes = uuid_module.UUID(source).bytes
    storage = Storage(db)
    storage.refresh()
    for tx in storage.transactions():
        with tx:
            tx.attribute_documents(source_bytes)
