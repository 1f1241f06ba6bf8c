"""Database configuration: one documented, validated set of settings (persisted ones live in the database)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from pynndb.errors import ConfigError


@dataclass
class JournalRetention:
    """How much of the change journal a replicated database keeps (the oldest entries go first)."""

    max_entries: int = 1_000_000
    max_bytes: int = 1 << 30
    max_age: float = 7 * 24 * 3600.0


@dataclass
class DatabaseConfig:
    """Settings for `Manager.database(..., config={...})`.

    - ``durable``: fsync every commit (survives power loss). Default False: commits reach the OS at once and
      survive a process crash, and the OS writes them to disk shortly after.
    - ``replication``: keep a change journal (persisted: later opens keep it on). None leaves it as stored.
    - ``map_size``: LMDB's address-space reservation; grown automatically when a write needs more.
    - ``writemap``: LMDB's MDB_WRITEMAP, default True: commits write through the map (2-3x more commits per second
      than pwrite-ing each dirty page); the same crash contract (see ``durable``); the file shows as map_size long
      (sparse). Commit wake-ups do not depend on it (core/doorbell.py). Use one setting for a database in every
      process that opens it (LMDB advises against mixing): it is not stored in the database.
    - ``readahead``: the OS's read-ahead on the map (LMDB's own default is on). Default False (MDB_NORDAHEAD, the
      map advised as random access): with it on, a single write after seconds of idle took up to 10-23 ms to reach
      a replica through node processes (off: 1-2 ms). On, bulk loads into a new database fault in fewer pages.
    - ``trust_functions``: import stored function-index functions by name when opening (runs their code).
    - ``journal``: retention of the change journal, {'max_entries', 'max_bytes', 'max_age' (seconds)}.
    - ``readonly``: open an existing database for reading only (LMDB ``readonly``): no write lock is ever taken,
      so it is safe beside a live node; every write raises ReadOnlyDatabase.
    """

    durable: bool = False
    replication: bool | None = None
    map_size: int = 1 << 40
    max_dbs: int = 1024
    max_readers: int = 256
    writemap: bool = True
    readahead: bool = False
    trust_functions: bool = False
    journal: JournalRetention = field(default_factory=JournalRetention)
    readonly: bool = False

    @classmethod
    def parse(cls, config: dict[str, Any] | DatabaseConfig | None) -> DatabaseConfig:
        if config is None:
            return cls()
        if isinstance(config, DatabaseConfig):
            return config
        if not isinstance(config, dict):
            raise ConfigError(f"config must be a dict, not {type(config).__name__}")
        known = {f.name: f for f in fields(cls)}
        result = cls()
        for name, value in config.items():
            if name not in known:
                raise ConfigError(f"unknown config key {name!r}; known: {', '.join(sorted(known))}")
            if name == "journal":
                value = _parse_journal(value)
            elif name == "replication":
                if value is not None and not isinstance(value, bool):
                    raise ConfigError("config 'replication' must be True, False or None")
            elif name in ("durable", "writemap", "readahead", "trust_functions", "readonly"):
                if not isinstance(value, bool):
                    raise ConfigError(f"config {name!r} must be True or False")
            elif not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config {name!r} must be a positive integer")
            setattr(result, name, value)
        return result


def _parse_journal(value: Any) -> JournalRetention:
    if isinstance(value, JournalRetention):
        return value
    if not isinstance(value, dict):
        raise ConfigError("config 'journal' must be a dict like {'max_entries': 100000}")
    retention = JournalRetention()
    for name, limit in value.items():
        if name not in ("max_entries", "max_bytes", "max_age"):
            raise ConfigError(f"unknown journal setting {name!r}")
        if not isinstance(limit, (int, float)) or isinstance(limit, bool) or limit <= 0:
            raise ConfigError(f"journal setting {name!r} must be a positive number")
        setattr(retention, name, limit)
    return retention
