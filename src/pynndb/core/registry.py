"""One `Database` object per database directory per process.

LMDB must not open the same environment twice in one process (its locks would break), so every opener of a
path (applications, managers, an in-process node) shares the same object, reference-counted.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pynndb.core.database import Database

_lock = threading.Lock()
_open: dict[str, Database] = {}
_users: dict[str, int] = {}


def open_database(name: str, path: str, config: Any = None) -> Database:
    """Open (or share) the database at `path`; each call must be balanced by `release`."""
    from pynndb.core.database import Database

    real = os.path.realpath(path)
    with _lock:
        db = _open.get(real)
        if db is None or db.closed:
            db = Database(name, path, config)
            _open[real] = db
            _users[real] = 0
        elif config is not None:
            replication = config.get("replication") if isinstance(config, dict) else None
            if replication is not None and replication != db.replication.enabled:
                db.replication.enable(replication)
        _users[real] += 1
        return db


def release(db: Database) -> None:
    """Drop one user of `db`; the last one closes it."""
    real = os.path.realpath(db.path)
    with _lock:
        if _open.get(real) is not db:
            return
        _users[real] -= 1
        if _users[real] > 0:
            return
        del _open[real], _users[real]
    db.close()


def forget(db: Database) -> None:
    real = os.path.realpath(db.path)
    with _lock:
        if _open.get(real) is db:
            del _open[real], _users[real]


def find(path: str) -> Database | None:
    """The open database at `path`, if this process has one."""
    with _lock:
        db = _open.get(os.path.realpath(path))
        return None if db is None or db.closed else db
