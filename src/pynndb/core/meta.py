"""The key layout of a database's ``__meta__`` sub-database, in one place.

Settings are single keys; per-table and per-source facts are a prefix followed by the table name or the source
database's UUID (as text).
"""

from __future__ import annotations

UUID = b"uuid"  # this database's UUID (text)
SCHEMA = b"schema"  # the schema token: rewritten by every schema change (and registration change)
SEQ = b"seq"  # the journal key (sequence, clock) of the last entry trimmed, so a sequence survives a trim
REPLICATION = b"replication"  # b"1": the journal is on
READ_ONLY = b"read_only"  # b"1": a read-only replica (application writes refused)
VERSIONED = b"versioned"  # b"1": a version is kept per document (two-way pairs, aggregations)
TABLE = b"table:"  # + table: its definition (JSON: indexes, compression)
DICTIONARY = b"zdict:"  # + table: its zstd dictionary
EMPTIED = b"emptied:"  # + table: the version (clock u64 big-endian + origin) at which it was last emptied
MARK = b"hwm:"  # + source: the highest sequence of that source applied here (u64 big-endian)
REGISTRATION = b"replica:"  # + source: this database replicates it (JSON: {"mode", "tables"?})
SNAPSHOT = b"snapshot:"  # + source: a snapshot under way (the replica asks for a new one until it ends)
LEFT_FILTER = b"left-filter:"  # + source: the table filter of a registration removed with its mark kept


def keyed(prefix: bytes, name: str) -> bytes:
    """The key of a per-table or per-source fact."""
    return prefix + name.encode()
