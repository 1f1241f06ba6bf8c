"""Stored key/value pairs in bulk: a table's records, tombstones and index entries read as stored, and written back.

A source reads each table's pairs in key order in bounded batches (`stored_parts` through cursors, or `page_parts`
from LMDB's leaf pages when it keeps no versions: core/pages.py); a one-way replica whose table was re-created empty
appends them with ``putmulti(append=True)`` (`load_stored`): no JSON decoding, no re-encoding, no index key
computed. It journals nothing (the replica's journal starts again after the snapshot: see
replication/snapshot_intake.py), and records versions when it keeps them, as writing each document would.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, islice, tee
from operator import add, itemgetter
from typing import TYPE_CHECKING, Any, Protocol

import lmdb
import zstandard

from pynndb.core import pages
from pynndb.core.codec import Compressor, raw_json
from pynndb.core.journal import VERSION
from pynndb.errors import DatabaseError, MalformedEntry

if TYPE_CHECKING:
    from pynndb.core.journal import Replication
    from pynndb.core.pages import PageFile
    from pynndb.core.table import Table
    from pynndb.core.transaction import Transaction

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# A snapshot chunk holds at most this many pairs, whatever their size. A replica's node decodes and applies a chunk in
# one step of its socket loop, and what a chunk costs goes with its pairs: an index's ~40-byte pairs put 26k in a
# 1 MiB chunk, ~24 ms of work on the node's loop, and the live entries of every other database on that node waited
# behind it (benchmarks/long_run.py). Smaller chunks also overlap the source's reads with the replica's writes
# better: a full sync of 200k documents took no longer with 2048 pairs a chunk than with 8192 (docs/benchmarks.md).
CHUNK_PAIRS = 2048
PAGES_A_CALL = 16  # leaf pages read into pairs in one call (~0.3 ms): see `page_parts`
RECORDS, TOMBSTONES, INDEX = "records", "tombstones", "index"  # the parts of a table's stored pairs
first_byte = first_item = itemgetter(0)
second_item = itemgetter(1)


@dataclass(frozen=True, slots=True)
class StoredPart:
    """A batch of one table's stored pairs: `part` is 'records' (with `versions` when the source keeps them, one
    per record, b'' for none), 'tombstones' (versions as values) or 'index' (of index `index`)."""

    part: str
    keys: Sequence[bytes]
    values: Sequence[bytes]
    versions: Sequence[bytes] | None = None
    index: str | None = None
    # The lengths of the keys and of the values, as sizing the batch measured them (a snapshot chunk's frame lists
    # them again: not measured twice).
    key_lengths: list[int] | None = None
    value_lengths: list[int] | None = None


Batch = tuple[list[bytes], list[bytes], list[int], list[int]]  # keys, values, and their lengths


class Pairs(Protocol):
    """What `load_stored` reads of a batch of stored pairs (a `StoredPart`, or a snapshot message's pairs)."""

    @property
    def part(self) -> str: ...
    @property
    def keys(self) -> Sequence[bytes]: ...
    @property
    def values(self) -> Sequence[bytes]: ...
    @property
    def versions(self) -> Sequence[bytes] | None: ...
    @property
    def index(self) -> str | None: ...


# --- reading ----------------------------------------------------------------------------------------------------
def _batches(
    keys_in: Iterator[bytes], values_in: Iterator[bytes], chunk_bytes: int, chunk_pairs: int
) -> Iterator[Batch]:
    """Pairs as (keys, values, key lengths, value lengths) lists of about `chunk_bytes` (cut after the pair that
    reaches it) and at most `chunk_pairs` pairs, from two iterators that yield the keys and the values of the same
    pairs in step.

    Reading the keys and the values of a sub-database with two cursors (`_columns`) builds no tuple per pair: it
    reads 400k pairs in about two thirds of the time of one cursor's (key, value) pairs. Each read takes what the
    chunk has room for, so a chunk of small pairs (the usual case: 2048 pairs well under `chunk_bytes`) is the
    lists as read, not copied again; they are sized with C-level iterators (no Python code runs per pair), and the
    lengths measured go with the chunk (its frame lists them).
    """
    keys: list[bytes] = []
    values: list[bytes] = []
    key_lengths: list[int] = []
    value_lengths: list[int] = []
    size = 0
    while more_keys := list(islice(keys_in, chunk_pairs - len(keys))):
        more_values = list(islice(values_in, len(more_keys)))
        if len(more_values) != len(more_keys):
            raise DatabaseError("a sub-database's keys and values were read out of step")
        more_key_lengths = list(map(len, more_keys))
        more_value_lengths = list(map(len, more_values))
        grown = size + sum(more_key_lengths) + sum(more_value_lengths)
        if grown < chunk_bytes:
            if keys:
                keys += more_keys
                values += more_values
                key_lengths += more_key_lengths
                value_lengths += more_value_lengths
            else:
                keys, values, key_lengths, value_lengths = more_keys, more_values, more_key_lengths, more_value_lengths
            size = grown
            if len(keys) == chunk_pairs:
                yield keys, values, key_lengths, value_lengths
                keys, values, key_lengths, value_lengths, size = [], [], [], [], 0
            continue
        # Over the byte bound: cut after the pair that reaches it; what is left starts the next chunk. Running
        # totals after each pair: totals[n] is the size after n more pairs (totals[0] < chunk_bytes).
        while more_keys:
            totals = list(accumulate(map(add, more_key_lengths, more_value_lengths), initial=size))
            if totals[-1] < chunk_bytes:
                keys += more_keys
                values += more_values
                key_lengths += more_key_lengths
                value_lengths += more_value_lengths
                size = totals[-1]
                break
            taken = max(1, bisect_left(totals, chunk_bytes))  # (max: a chunk_bytes below 1 still takes one pair)
            keys += more_keys[:taken]
            values += more_values[:taken]
            key_lengths += more_key_lengths[:taken]
            value_lengths += more_value_lengths[:taken]
            yield keys, values, key_lengths, value_lengths
            keys, values, key_lengths, value_lengths, size = [], [], [], [], 0
            more_keys, more_values = more_keys[taken:], more_values[taken:]
            more_key_lengths, more_value_lengths = more_key_lengths[taken:], more_value_lengths[taken:]
    if keys:
        yield keys, values, key_lengths, value_lengths


def _columns(txn: lmdb.Transaction[bytes], dbi: Any) -> tuple[Iterator[bytes], Iterator[bytes]]:
    """The keys and the values of every pair of a sub-database, in order, as two iterators that move in step."""
    return txn.cursor(db=dbi).iternext(keys=True, values=False), txn.cursor(db=dbi).iternext(keys=False, values=True)


def stored_parts(
    txn: lmdb.Transaction[bytes],
    replication: Replication,
    table: Table,
    chunk_bytes: int,
    chunk_pairs: int = CHUNK_PAIRS,
) -> Iterator[StoredPart]:
    """One table's stored pairs in batches of about `chunk_bytes` and at most `chunk_pairs` pairs: records (with
    versions when the database keeps them), tombstones, then each index's entries; `txn` must be a read transaction
    opened with buffers=False."""
    versions_db = replication._versions
    versioned = replication.versioned
    prefix = table.name.encode() + b"\x00"
    get = txn.get
    for keys, values, key_lengths, value_lengths in _batches(*_columns(txn, table._dbi), chunk_bytes, chunk_pairs):
        versions = [get(prefix + key, b"", db=versions_db) for key in keys] if versioned else None
        yield StoredPart(RECORDS, keys, values, versions, None, key_lengths, value_lengths)
    if versioned:
        pairs, again = tee(_tombstones(txn, versions_db, prefix))  # (tee holds at most one chunk of pairs)
        batches = _batches(map(first_item, pairs), map(second_item, again), chunk_bytes, chunk_pairs)
        for keys, values, key_lengths, value_lengths in batches:
            yield StoredPart(TOMBSTONES, keys, values, None, None, key_lengths, value_lengths)
    for index in table._index_list:
        for keys, values, key_lengths, value_lengths in _batches(*_columns(txn, index.dbi), chunk_bytes, chunk_pairs):
            yield StoredPart(INDEX, keys, values, None, index.name, key_lengths, value_lengths)


def page_parts(
    txn: lmdb.Transaction[bytes],
    table: Table,
    file: PageFile,
    chunk_bytes: int,
    chunk_pairs: int = CHUNK_PAIRS,
) -> Iterator[StoredPart]:
    """What `stored_parts` yields for a source that keeps no versions (records, then each index's entries, in the
    same batches), read from the LMDB leaf pages of each sub-database (see core/pages.py) instead of through
    cursors."""
    names: list[tuple[str, str | None, bytes]] = [(RECORDS, None, table._records_db_name())]
    names += [(INDEX, index.name, table._index_db_name(index.name)) for index in table._index_list]
    psize = file.psize
    per_read = max(1, chunk_bytes // psize)  # pages read in one go (consecutive ones in one system call)
    step = PAGES_A_CALL * psize
    for part, index, name in names:
        tree = pages.Tree(txn.get(name))
        numbers = file.leaves(tree.root, tree.depth, tree.branches)
        # (A sub-database's record counts the pages of its keys' trees of duplicates too.)
        if len(numbers) > tree.leaf_pages or (tree.plain and len(numbers) != tree.leaf_pages):
            raise MalformedEntry(f"{name!r} has {len(numbers)} leaf pages, its record says {tree.leaf_pages}")
        sink = pages.Pairs(chunk_bytes, chunk_pairs)
        for at in range(0, len(numbers), per_read):
            blob = file.read(numbers[at : at + per_read])
            # A few pages a call: compiled code holds the GIL throughout, and the node's other threads (its socket
            # loop: other databases' live entries) get it between calls.
            for base in range(0, len(blob), step):
                pages.leaf_pairs(blob, base, min(base + step, len(blob)), psize, sink, file)
            if at + per_read >= len(numbers):
                sink.cut()
            for keys, values, key_lengths, value_lengths in sink.take():
                yield StoredPart(part, keys, values, None, index, key_lengths, value_lengths)


def _tombstones(txn: lmdb.Transaction[bytes], versions_db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=versions_db)
    if not cursor.set_range(prefix):
        return
    start = len(prefix)
    for key, value in cursor:
        if not key.startswith(prefix):
            return
        if value[24]:  # the tombstone flag of journal.VERSION
            yield key[start:], value


# --- writing ----------------------------------------------------------------------------------------------------
def stored_json(value: bytes, compressor: Compressor | None) -> bytes:
    """A stored record's JSON bytes (it may be stored plain or zstd-compressed), or MalformedEntry."""
    if value[0] == 123:  # '{': stored as plain JSON
        return value
    try:
        return raw_json(value, compressor)
    except zstandard.ZstdError as error:
        raise MalformedEntry(f"a stored record is neither JSON nor a readable zstd frame: {error}") from None


def _same_codec(target: Compressor | None, source: Compressor | None) -> bool:
    """Whether the target table reads the source's stored values as they are."""
    if target is None or source is None:
        return target is None and source is None
    return target.dictionary == source.dictionary


def _append(
    txn: lmdb.Transaction[bytes], dbi: Any, keys: Sequence[bytes], values: Sequence[bytes], duplicates: bool
) -> None:
    """Write pairs (in key order) into a sub-database: appended when they all come after what it holds."""
    cursor = txn.cursor(db=dbi)
    first = keys[0], values[0]
    if cursor.last():
        last = bytes(cursor.key()), bytes(cursor.value())
        after = last < first if duplicates else last[0] < first[0]
    else:
        after = True
    if not after:
        # Not after what is there: this snapshot's sequence was sent again and restarted (same content).
        cursor.putmulti(zip(keys, values, strict=True), dupdata=True, overwrite=True)
        return
    _consumed, added = cursor.putmulti(zip(keys, values, strict=True), dupdata=True, overwrite=True, append=True)
    if added != len(keys):
        raise MalformedEntry("stored pairs must come in strictly increasing key order")


def load_stored(t: Transaction, table: Table, part: Pairs, source: bytes, codec: Compressor | None) -> int:
    """Write a batch of a source's stored pairs into `table` (re-created empty at the snapshot's start); `codec`
    reads the records as the source stores them. Returns the documents written (0 for index entries). `t` must
    journal nothing (`ApplyTransaction.unjournaled`): no op is written for these records."""
    if t.ops is not None:
        raise DatabaseError("stored pairs are loaded in a transaction that journals nothing (see snapshot_intake)")
    keys, values = part.keys, part.values
    if not isinstance(part.part, str) or not isinstance(keys, (list, tuple)) or not isinstance(values, (list, tuple)):
        raise MalformedEntry("stored pairs need a part name and lists of keys and values")
    count = len(keys)
    if len(values) != count:
        raise MalformedEntry("stored pairs need as many values as keys")
    if not count:
        return 0
    txn = t.txn
    if part.part == INDEX:
        index = table._indexes.get(part.index or "")
        if index is None:
            raise MalformedEntry(f"index {part.index!r} of table {table.name!r} is not in the snapshot's definitions")
        _append(txn, index.dbi, keys, values, index.duplicates)
        return 0
    replication = table._db.replication
    prefix = table.name.encode() + b"\x00"
    if part.part == TOMBSTONES:
        if not set(map(len, values)) <= {VERSION.size}:
            raise MalformedEntry("a tombstone's value must be a 41-byte version")
        if replication.versioned:
            deleted = b"\x01" + source
            _put_versions(txn, replication, [prefix + key for key in keys], [value[:24] + deleted for value in values])
        return count
    if part.part != RECORDS:
        raise MalformedEntry(f"unknown stored-pairs part {part.part!r}")
    target = table._compressor
    plain = set(map(first_byte, values)) == {123}  # every value stored as JSON ('{')
    if not plain and not all(value[0] == 123 or value[:4] == ZSTD_MAGIC for value in values):
        raise MalformedEntry("a stored record must be JSON or a zstd frame")
    written = values
    if not (plain or _same_codec(target, codec)):
        # The table's compression differs from the source's (not expected after the snapshot's start): re-encode.
        texts = [stored_json(value, codec) for value in values]
        written = texts if target is None else [target.compress(text) for text in texts]
    _append(txn, table._dbi, keys, written, False)
    if replication.versioned:
        live = b"\x00" + source
        unknown = VERSION.pack(0, source, False, source)
        versions = part.versions
        if versions is None:
            stamps = [unknown] * count
        else:
            if len(versions) != count or not set(map(len, versions)) <= {0, VERSION.size}:
                raise MalformedEntry("a records part needs one version (41 bytes, or none) per record")
            stamps = [version[:24] + live if version else unknown for version in versions]
        _put_versions(txn, replication, [prefix + key for key in keys], stamps)
    return count


def _put_versions(
    txn: lmdb.Transaction[bytes], replication: Replication, keys: list[bytes], values: list[bytes]
) -> None:
    txn.cursor(db=replication._versions).putmulti(zip(keys, values, strict=True), dupdata=True, overwrite=True)
