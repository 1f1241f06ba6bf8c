"""The change journal of a replicated database, written in the same LMDB transaction as the data.

Each committed write transaction appends one entry: key = gapless sequence number then the database clock (8 bytes
each, big-endian; the clock is a hybrid logical clock: milliseconds << 16 | counter), value = the body (format 2):
a version byte, the length of a JSON header ``{"o": origin uuid, "v": version, "ops": [...]}`` (u32 little-endian),
the header, then the stored bytes of every ``put`` op's document back to back (the op carries the length), so a
replica writes documents as they are, never re-encoding them (core/entries.py reads bodies back, format 1 too).
An entry of nothing but inserts is format 3: it also carries their index keys, so that a replica with the same
index definitions writes them as they are instead of decoding every document to compute them.
Ops are serialised as they happen, so a transaction's pending ops are plain bytes (cheap to hold, invisible to the
garbage collector). Per-document versions (clock, origin, tombstone flag, source) live in
``__versions__`` so that two writable copies resolve conflicts the same way.
"""

from __future__ import annotations

import struct
import uuid as uuid_module
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

import lmdb

from pynndb.core import meta
from pynndb.core.journal_writes import KEY, TRIM_EVERY, JournalWrites, insert_header
from pynndb.errors import DatabaseError, ReplicationNotEnabled

if TYPE_CHECKING:
    from pynndb.core.database import Database
    from pynndb.core.transaction import Transaction

SEQ = struct.Struct(">Q")
VERSION = struct.Struct(">Q16sB16s")  # clock, origin uuid, tombstone flag, source uuid


class Version(NamedTuple):
    """A document's replication version: its clock, origin database, whether it is a tombstone, its source."""

    clock: int
    origin: bytes
    deleted: bool
    source: bytes


def version_key(table: str, oid: bytes) -> bytes:
    return table.encode() + b"\x00" + oid


class Replication(JournalWrites):
    """`db.replication`: the journal, the database's UUID, its read-only flag and its per-source marks."""

    def __init__(self, db: Database, txn: lmdb.Transaction[bytes]) -> None:
        self._db = db
        env = db._env
        self._meta = db._meta
        create = not db.config.readonly
        opener = txn if create else None  # (readonly: see Database.__init__)
        self._journal = env.open_db(b"__journal__", txn=opener, create=create)
        self._versions = env.open_db(b"__versions__", txn=opener, create=create)
        stored = txn.get(meta.UUID, db=self._meta)
        if stored is None and not create:
            raise DatabaseError(f"{db.path} has no UUID: not a pynndb database")
        if stored is None:
            stored = str(uuid_module.uuid4()).encode()
            txn.put(meta.UUID, stored, db=self._meta)
        self.uuid: str = stored.decode()
        self._uuid_ascii = stored
        self._trim_every = min(TRIM_EVERY, max(1, db.config.journal.max_entries // 4))
        self.uuid_bytes = uuid_module.UUID(self.uuid).bytes
        self.last_insert = (-1, 0, 0)  # see write_insert: (transaction id, sequence, clock)
        self._insert_header = insert_header(stored)
        self._refresh(txn)

    # --- versions -----------------------------------------------------------------------------------------
    def record_version(self, t: Transaction, table: str, oid: bytes, deleted: bool) -> None:
        """Store the version of a document written (or deleted) in this transaction."""
        if not self.versioned:
            return
        if not t.hlc:
            self.stamp(t)
        if t.origin is None:
            value = VERSION.pack(t.hlc, self.uuid_bytes, deleted, self.uuid_bytes)
        else:
            value = VERSION.pack(t.version, t.origin, deleted, t.source or t.origin)
        t.txn.put(version_key(table, oid), value, db=self._versions)

    def drop_versions(self, t: Transaction, table: str) -> None:
        """Forget the versions of every document of a table (it was emptied or dropped)."""
        prefix = table.encode() + b"\x00"
        cursor = t.txn.cursor(db=self._versions)
        if cursor.set_range(prefix):
            while cursor.key().startswith(prefix):
                if not cursor.delete():
                    break

    def emptied(self, txn: lmdb.Transaction[bytes], table: str) -> tuple[int, bytes]:
        """The version (clock, origin) at which a table was last emptied in a versioned database, or (0, b'')."""
        raw = txn.get(meta.keyed(meta.EMPTIED, table), db=self._meta)
        return (0, b"") if raw is None else (struct.unpack(">Q", raw[:8])[0], raw[8:])

    def record_emptied(self, t: Transaction, table: str) -> None:
        """Remember that `table` was emptied at this transaction's version: older changes must not come back."""
        if not self.versioned:
            return
        if not t.hlc:
            self.stamp(t)
        clock, origin = (t.hlc, self.uuid_bytes) if t.origin is None else (t.version, t.origin)
        if (clock, origin) > self.emptied(t.txn, table):
            t.txn.put(meta.keyed(meta.EMPTIED, table), struct.pack(">Q", clock) + origin, db=self._meta)

    def version_of(self, txn: lmdb.Transaction[bytes], table: str, oid: bytes) -> Version | None:
        raw = txn.get(version_key(table, oid), db=self._versions)
        if raw is None:
            return None
        clock, origin, deleted, source = VERSION.unpack(raw)
        return Version(clock, origin, bool(deleted), source)

    def versions(self, txn: lmdb.Transaction[bytes], table: str) -> Iterator[tuple[bytes, Version]]:
        """Every (record key, version) of a table, tombstones included."""
        prefix = table.encode() + b"\x00"
        cursor = txn.cursor(db=self._versions)
        if not cursor.set_range(prefix):
            return
        for key, raw in cursor:
            if not key.startswith(prefix):
                return
            clock, origin, deleted, source = VERSION.unpack(raw)
            yield key[len(prefix) :], Version(clock, origin, bool(deleted), source)

    # --- settings -------------------------------------------------------------------------------------------
    def enable(self, enabled: bool = True) -> None:
        """Turn the journal on (persisted) or off."""
        self._persist(meta.REPLICATION, "enabled", enabled)

    def set_read_only(self, read_only: bool) -> None:
        """Make the database a read-only replica (application writes refused) or writable again (persisted)."""
        self._persist(meta.READ_ONLY, "read_only", read_only)

    def set_versioned(self, versioned: bool = True) -> None:
        """Keep a version per document for local writes too (needed once the database is in a two-way pair)."""
        self._persist(meta.VERSIONED, "versioned", versioned)

    def _persist(self, key: bytes, setting: str, value: bool) -> None:
        """Store a setting as a schema change (other processes see it at their next write), then take it here."""
        with self._db._env.begin(write=True) as txn:
            txn.put(key, b"1" if value else b"0", db=self._meta)
            self._db._touch_schema(txn)
        setattr(self, setting, value)
        self._db._settings_changed(self)

    def _refresh(self, txn: lmdb.Transaction[bytes]) -> None:
        self.enabled = txn.get(meta.REPLICATION, db=self._meta) == b"1"
        self.read_only = txn.get(meta.READ_ONLY, db=self._meta) == b"1"
        self.versioned = txn.get(meta.VERSIONED, db=self._meta) == b"1"
        self._db._settings_changed(self)

    # --- reading --------------------------------------------------------------------------------------------
    def _require(self) -> None:
        if not self.enabled:
            raise ReplicationNotEnabled(f"{self._db.path}: open it with config={{'replication': True}}")

    @property
    def sequence(self) -> int:
        """The sequence number of the last committed entry (0 before the first)."""
        with self._db._env.begin() as txn:
            return self.last_sequence(txn)

    def last_sequence(self, txn: lmdb.Transaction[bytes]) -> int:
        cursor = txn.cursor(db=self._journal)
        if cursor.last():
            return int(KEY.unpack(cursor.key())[0])
        stored = txn.get(meta.SEQ, db=self._meta)
        return 0 if stored is None else int(KEY.unpack(stored)[0])

    @property
    def retained(self) -> tuple[int, int]:
        """(first, last) sequence numbers still in the journal; first > last when it holds nothing."""
        with self._db._env.begin() as txn:
            cursor = txn.cursor(db=self._journal)
            last = self.last_sequence(txn)
            first = KEY.unpack(cursor.key())[0] if cursor.first() else last + 1
            return int(first), last

    def entries(self, start: int, limit: int = 1000, max_bytes: int = 4 << 20) -> list[tuple[int, int, bytes]]:
        """Journal entries (seq, clock, body) from `start` on: at most `limit` of them and about `max_bytes`."""
        result: list[tuple[int, int, bytes]] = []
        size = 0
        with self._db._env.begin() as txn:
            cursor = txn.cursor(db=self._journal)
            if not cursor.set_range(SEQ.pack(start)):
                return result
            for key, value in cursor:
                seq, clock = KEY.unpack(key)
                result.append((seq, clock, value))
                size += len(value)
                if len(result) >= limit or size >= max_bytes:
                    break
        return result

    def marks(self) -> dict[str, int]:
        """The high-water mark per source UUID of everything applied here."""
        return self._sequences(meta.MARK)

    def snapshots(self) -> dict[str, int]:
        """Source UUID -> sequence of each snapshot being taken here. While a source is listed, this database holds
        part of that snapshot: its tables were emptied when the snapshot began and are being filled again."""
        return self._sequences(meta.SNAPSHOT)

    def _sequences(self, prefix: bytes) -> dict[str, int]:
        """Source UUID -> the sequence stored under `prefix` + that UUID in the meta table, for every source."""
        with self._db._env.begin() as txn:
            cursor = txn.cursor(db=self._meta)
            found: dict[str, int] = {}
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    found[key[len(prefix) :].decode()] = SEQ.unpack(value)[0]
            return found

    def mark(self, txn: lmdb.Transaction[bytes], source: str) -> int:
        raw = txn.get(meta.keyed(meta.MARK, source), db=self._meta)
        return 0 if raw is None else int(SEQ.unpack(raw)[0])

    def snapshot_marker(self, txn: lmdb.Transaction[bytes], source: str) -> int | None:
        """The sequence of a snapshot of `source` under way in this database, or None."""
        raw = txn.get(meta.keyed(meta.SNAPSHOT, source), db=self._meta)
        return None if raw is None else int(SEQ.unpack(raw)[0])

    def set_snapshot_marker(self, txn: lmdb.Transaction[bytes], source: str, seq: int | None) -> None:
        """Record that a snapshot of `source` at `seq` is under way (None: it ended)."""
        self.meta_put(txn, meta.keyed(meta.SNAPSHOT, source), None if seq is None else SEQ.pack(seq))

    def set_mark(self, txn: lmdb.Transaction[bytes], source: str, seq: int) -> None:
        txn.put(meta.keyed(meta.MARK, source), SEQ.pack(seq), db=self._meta)

    def meta_get(self, txn: lmdb.Transaction[bytes], key: bytes) -> bytes | None:
        return txn.get(key, db=self._meta)

    def meta_put(self, txn: lmdb.Transaction[bytes], key: bytes, value: bytes | None) -> None:
        if value is None:
            txn.delete(key, db=self._meta)
        else:
            txn.put(key, value, db=self._meta)
