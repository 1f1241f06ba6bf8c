"""`Manager`: opens databases by name and closes them all at exit."""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any

from pynndb.core import registry
from pynndb.core.database import Database
from pynndb.errors import InvalidArgumentType, NoSuchDatabase

_managers: weakref.WeakSet[Manager] = weakref.WeakSet()


class Manager:
    """A set of open databases: ``manager.database('people', config={...})``, then ``manager['people']``."""

    def __init__(self) -> None:
        self._databases: dict[str, Database] = {}
        self._lock = threading.Lock()
        _managers.add(self)

    def database(self, name: str, path: str | None = None, config: dict[str, Any] | None = None) -> Database:
        """Open or create database `name` in directory `path` (default: `name`)."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentType("a database name must be a non-empty str")
        with self._lock:
            db = self._databases.get(name)
            if db is not None and not db.closed:
                return db
            db = registry.open_database(name, path or name, config)
            self._databases[name] = db
            return db

    def __getitem__(self, name: str) -> Database:
        db = self._databases.get(name)
        if db is None or db.closed:
            raise NoSuchDatabase(f"no open database named {name!r}")
        return db

    def __contains__(self, name: object) -> bool:
        return name in self._databases and not self._databases[name].closed

    def databases(self) -> list[str]:
        """Names of the databases this manager has open."""
        return sorted(name for name, db in self._databases.items() if not db.closed)

    def close(self, name: str | None = None) -> None:
        """Close one database (by name) or all of them."""
        with self._lock:
            names = [name] if name is not None else list(self._databases)
            for each in names:
                db = self._databases.pop(each, None)
                if db is not None:
                    registry.release(db)

    def __enter__(self) -> Manager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _close_all() -> None:
    for manager in list(_managers):
        manager.close()
