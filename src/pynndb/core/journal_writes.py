"""How a replicated database writes its journal: one entry per committed write transaction (see `journal` for the
format), stamped with the next sequence number and the database clock, in the same LMDB transaction as the data;
and how the journal is trimmed to its retention. A mixin of `journal.Replication`, kept apart so each stays small.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any

import lmdb

from pynndb.core import meta
from pynndb.core.entries import FORMAT_BYTE, HEADER_LENGTH, KEYED_FORMAT_BYTE, KEYED_MIN
from pynndb.core.ops import PUT_FORMAT
from pynndb.errors import DatabaseError

if TYPE_CHECKING:
    from pynndb.core.config import JournalRetention
    from pynndb.core.database import Database
    from pynndb.core.transaction import Transaction

KEY = struct.Struct(">QQ")  # sequence, clock
HEADER = b'{"o":"%s","v":%d,"ops":[%s]%s'  # an entry's JSON header: origin, version, ops, then "}" or the keys
TRIM_EVERY = 512
TRIM_BATCH = 5000


def now_clock() -> int:
    return int(time.time() * 1000) << 16


def insert_header(origin: bytes) -> bytes:
    """HEADER of an entry of one insert made at `origin`, left to complete with (clock, table name as JSON, key,
    document length): `write_insert` formats it in one step."""
    return HEADER.replace(b"%d", b"%%d") % (origin, PUT_FORMAT, b"}")


class JournalWrites:
    """The writing half of `Replication` (a mixin: the attributes below are its)."""

    _db: Database
    _journal: Any
    _meta: Any
    _uuid_ascii: bytes
    _insert_header: bytes
    _trim_every: int
    last_insert: tuple[int, int, int]

    def stamp(self, t: Transaction) -> None:
        """Give a write transaction its clock and next sequence number (once, at its first journaled write)."""
        t.seq, t.hlc = self._next(t.txn)

    def _next(self, txn: lmdb.Transaction[bytes]) -> tuple[int, int]:
        """The next sequence number and the clock of a write transaction's entry."""
        cursor = txn.cursor(self._journal)
        if cursor.last():
            last_seq, last_clock = KEY.unpack(cursor.key())
        else:
            stored = txn.get(meta.SEQ, db=self._meta)
            last_seq, last_clock = (0, 0) if stored is None else KEY.unpack(stored)
        return last_seq + 1, max(now_clock(), last_clock + 1)

    def write_insert(
        self, txn: lmdb.Transaction[bytes], txn_id: int, table_json: bytes, oid: bytes, document: bytes
    ) -> tuple[int, int, int]:
        """The entry of a transaction that inserted one document (its stored JSON, before compression) and did
        nothing else (`Table._append_plain` in a journaled database): the bytes `write_entry` makes of it, without a
        `Transaction` to gather them. Returns what the caller keeps in `last_insert` once the transaction (`txn_id`)
        has committed: when the next write transaction is the one right after it, nothing was written in between,
        so the journal ends with that entry and its sequence and clock need no read."""
        last_id, last_seq, last_clock = self.last_insert
        if txn_id == last_id + 1:
            seq, hlc = last_seq + 1, max(now_clock(), last_clock + 1)
        else:
            seq, hlc = self._next(txn)
        header = self._insert_header % (hlc, table_json, oid, len(document))
        self._put_entry(txn, seq, hlc, b"".join((FORMAT_BYTE, HEADER_LENGTH.pack(len(header)), header, document)))
        return txn_id, seq, hlc

    def write_entry(self, t: Transaction, origin: str | None = None, version: int = 0) -> int:
        """Append the transaction's pending ops as one entry; return its sequence number."""
        if not t.hlc:
            self.stamp(t)
        if version >= t.hlc:
            t.hlc = version + 1  # hybrid logical clock: never behind a clock we have seen
        ops = t.ops or ()
        lengths = t.key_lengths
        if not (lengths is not None and t.keyed >= KEYED_MIN and t.keyed == len(ops) + t.merged):
            lengths = None  # the keys are carried only when every op is an insert that recorded them
        tail = b"}"
        if lengths is not None:
            tokens = b",".join([b'%s:"%s"' % pair for pair in t.key_tables.items()])
            tail = b',"kt":{%s},"k":%d}' % (tokens, len(lengths))
        header = HEADER % (
            self._uuid_ascii if origin is None else origin.encode(),
            version or t.hlc,
            b",".join(ops),
            tail,
        )
        parts: list[bytes | bytearray] = [FORMAT_BYTE, HEADER_LENGTH.pack(len(header)), header, t.documents]
        if lengths is not None:
            parts[0] = KEYED_FORMAT_BYTE
            parts += (struct.pack(f"<{len(lengths)}H", *lengths), t.keys)
        body = b"".join(parts)
        t.ops = []
        t.merged = 0
        t.documents = bytearray()
        if t.key_tables:  # (set by the inserts that recorded keys: an entry without them has nothing to clear)
            t.keys = bytearray()
            t.key_lengths = []
            t.keyed = 0
            t.key_tables = {}
        return self._append(t, body)

    def restart(self, t: Transaction, origin: str | None) -> int:
        """Start the journal again after a change it does not hold (a one-way replica's snapshot, loaded without an
        op per record): every entry goes and one sequence number is skipped, so that whoever follows from before
        finds the entry it expects gone (a replica of this database takes a snapshot of it; a change feed raises
        JournalTrimmed). An entry with no ops opens the new journal: followers learn of the restart at once."""
        self.stamp(t)  # t.seq is the number skipped
        t.txn.drop(self._journal, delete=False)
        t.txn.put(meta.SEQ, KEY.pack(t.seq, t.hlc), db=self._meta)
        t.seq += 1
        t.hlc += 1
        t.ops = []
        return self.write_entry(t, origin)

    def write_verbatim(self, t: Transaction, body: bytes, version: int) -> int:
        """Append a source's entry body as it is (a replica relaying a change unchanged: same origin, version and
        ops, so the same bytes `write_entry` would build); return its sequence number here."""
        if not t.hlc:
            self.stamp(t)
        if version >= t.hlc:
            t.hlc = version + 1
        return self._append(t, body)

    def write_verbatim_many(self, t: Transaction, entries: list[tuple[bytes, int]]) -> None:
        """`write_verbatim` of each (body, version) in order, in one `putmulti` (a replica relaying a run)."""
        if len(entries) == 1:  # (the plain put costs less than a putmulti of one)
            self.write_verbatim(t, *entries[0])
            return
        if not t.hlc:
            self.stamp(t)
        seq, hlc = t.seq, t.hlc
        pairs = []
        for body, version in entries:
            if version >= hlc:
                hlc = version + 1
            pairs.append((KEY.pack(seq, hlc), body))
            seq += 1
            hlc += 1
        _consumed, added = t.txn.cursor(self._journal).putmulti(pairs, True, True, True)
        if added != len(pairs):  # (sequences only grow: a broken invariant must not pass silently)
            raise DatabaseError(f"{self._db.path}: {len(pairs) - added} journal entries out of sequence")
        first, t.seq, t.hlc = t.seq, seq, hlc
        every = self._trim_every
        passed = (seq - 1) // every * every  # the last multiple of `every` this run wrote, if it wrote one
        if passed >= first:
            self._trim(t.txn, passed)

    def _append(self, t: Transaction, body: bytes) -> int:
        seq = t.seq
        self._put_entry(t.txn, seq, t.hlc, body)
        t.seq += 1
        t.hlc += 1
        return seq

    def _put_entry(self, txn: lmdb.Transaction[bytes], seq: int, hlc: int, body: bytes) -> None:
        """Write one entry at the journal's end, and trim the journal every `_trim_every` entries."""
        # Positional (key, value, dupdata, overwrite, append, db): once per journaled commit, kept lean.
        txn.put(KEY.pack(seq, hlc), body, True, True, True, self._journal)
        if seq % self._trim_every == 0:
            self._trim(txn, seq)

    def _trim(self, txn: lmdb.Transaction[bytes], last_seq: int) -> None:
        trim(txn, self._journal, self._meta, self._db.config.journal, last_seq)


def trim(txn: lmdb.Transaction[bytes], journal: Any, meta_db: Any, retention: JournalRetention, last_seq: int) -> None:
    """Remove the oldest entries (before `last_seq`, at most TRIM_BATCH) that the retention does not keep."""
    cursor = txn.cursor(db=journal)
    if not cursor.first():
        return
    count = txn.stat(journal)["entries"]
    oldest_allowed = now_clock() - (int(retention.max_age * 1000) << 16)
    approx_bytes = txn.stat(journal)["leaf_pages"] * 4096
    removed = 0
    while removed < TRIM_BATCH and count - removed > 1:
        key = cursor.key()
        seq, clock = KEY.unpack(key)
        if seq >= last_seq:
            break
        too_many = count - removed > retention.max_entries
        too_big = approx_bytes > retention.max_bytes
        if not (too_many or too_big or clock < oldest_allowed):
            break
        approx_bytes -= len(cursor.value()) + 16
        removed += 1
        # Remember where the journal stood, so the sequence survives even a journal trimmed to nothing.
        txn.put(meta.SEQ, key, db=meta_db)
        if not cursor.delete():
            break
