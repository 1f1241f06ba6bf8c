"""The private write path of a table, which every public write of `Table` goes through.

`_write` puts or deletes one record and keeps every index and the journal in step; `_insert` (new records),
`_put_new` (one new record: `Table.append`'s paths) and `_insert_stored` (a replica's stored bytes) are its hot paths,
with no index diffing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from itertools import islice
from operator import itemgetter
from typing import Any, cast

import lmdb
import orjson

from pynndb.core import columns
from pynndb.core.codec import decode_value, encode_document
from pynndb.core.doc import Doc
from pynndb.core.entries import KEYED_MIN, IndexKeys
from pynndb.core.ops import DELETE_FORMAT, PUT_FORMAT, put_ops
from pynndb.core.table_schema import Index, TableSchema
from pynndb.core.transaction import Transaction
from pynndb.errors import DuplicateKey, InvalidDocument

_dumps = orjson.dumps
# Journaled inserts of a call of this many records get their ops formatted in one go, at its end; only such a call
# records index keys (from KEYED_MIN records), so BULK_MIN <= KEYED_MIN.
BULK_MIN = 8


class TableWrites(TableSchema):
    """The write path of `Table` (its handles and indexes come from `TableSchema`)."""

    _name_json: bytes

    # --- the write path ---------------------------------------------------------------------------------------
    @staticmethod
    def _unwrap(doc: Any) -> tuple[dict[str, Any], bytes | None]:
        if isinstance(doc, Doc):
            return doc._data, doc._oid
        if isinstance(doc, dict):
            return doc, None
        raise InvalidDocument(f"a document must be a Doc or a dict, not {type(doc).__name__}")

    def _index_changes(
        self, txn: lmdb.Transaction[bytes], oid: bytes, new: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> list[tuple[Index, list[bytes], list[bytes]]]:
        """Work out (index, keys to add, keys to remove) for every index, refusing unique-key clashes."""
        changes = []
        for index in self._index_list:
            new_keys = index.keys(new) if new is not None else []
            old_keys = index.keys(old) if old is not None else []
            if old_keys:
                add = [key for key in new_keys if key not in old_keys]
                remove = [key for key in old_keys if key not in new_keys]
            else:
                add, remove = new_keys, []
            if add and not index.duplicates:
                self._check_unique(txn, index, add, oid)
            if add or remove:
                changes.append((index, add, remove))
        return changes

    def _check_unique(self, txn: lmdb.Transaction[bytes], index: Index, keys: list[bytes], oid: bytes) -> None:
        for key in keys:
            holder = txn.get(key, db=index.dbi)
            if holder is not None and holder != oid:
                raise DuplicateKey(
                    f"index {index.name!r} of {self.name!r} already has key {key!r} (record {holder.decode()})"
                )

    def _write(self, t: Transaction, oid: bytes, new: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        """The one write path: put (new) or delete (new is None) a record and keep every index in step."""
        txn = t.txn
        dbi = self._dbi
        if old is None and new is not None:
            self._insert(t, ((oid, new),))
            return
        changes = self._index_changes(txn, oid, new, old) if self._index_list else ()
        if new is not None:
            raw = encode_document(new)
            value = raw if self._compressor is None else self._compressor.compress(raw)
            if not txn.put(oid, value, db=dbi, overwrite=old is not None):
                raise DuplicateKey(f"table {self.name!r} already has a record with key {oid.decode()}")
        else:
            txn.delete(oid, db=dbi)
        for index, add, remove in changes:
            index_db = index.dbi
            for key in remove:
                txn.delete(key, oid, db=index_db) if index.duplicates else txn.delete(key, db=index_db)
            for key in add:
                txn.put(key, oid, db=index_db)
        if t.ops is not None or t.origin is not None:
            self._journal_write(t, oid, None if new is None else raw)

    def _insert(self, t: Transaction, records: Collection[tuple[bytes, dict[str, Any]]]) -> None:
        """New records (key, fields): the hot path of append and append_many, with no index diffing.

        Each record's index keys are computed and unique keys checked before anything of it is written."""
        txn = t.txn
        put = txn.put
        dbi = self._dbi
        indexes = self._index_list
        compress = None if self._compressor is None else self._compressor.compress
        journaled = t.ops is not None or t.origin is not None
        # Without per-document versions, a journaled insert is one pre-formatted op: appended inline, or for a call
        # of BULK_MIN records or more, formatted for all of them at the end (`_journal_inserts`).
        ops = t.ops if journaled and not self._db.replication.versioned else None
        bulk = ops is not None and len(records) >= BULK_MIN
        keyed = bulk and len(records) >= KEYED_MIN
        documents = t.documents
        name_json = self._name_json
        sizes: list[int] = []  # (bulk) the document length of each record written, in order
        # (keyed) each written record's keys, index by index: the entry carries them (Replication.write_entry), so
        # that a replica with the same definitions (the token) writes them as they are instead of decoding the
        # document to compute them. An append per call records none: its entry would most likely not carry them.
        keys_written: list[tuple[Index, list[bytes]]] = []
        additions: list[tuple[Index, list[bytes]]] = []
        try:
            for oid, new in records:
                try:
                    raw = _dumps(new)
                except orjson.JSONEncodeError:
                    raw = encode_document(new)  # raises InvalidDocument with the reason
                if raw.find(b"null") >= 0:  # (find: cheaper than `in` on bytes)
                    raw = encode_document(new)  # checks for NaN/infinity, which orjson writes as null
                if indexes:
                    additions = []  # every key is computed before anything is written (a plain loop: no listcomp)
                    for index in indexes:
                        additions.append((index, index.keys(new)))
                # Positional arguments (key, value, dupdata, overwrite, append, db): py-lmdb parses them faster.
                if not put(oid, raw if compress is None else compress(raw), True, False, False, dbi):
                    raise DuplicateKey(f"table {self.name!r} already has a record with key {oid.decode()}")
                if indexes:
                    for index, keys in additions:
                        # A unique index refuses to overwrite: the put itself is the uniqueness check.
                        overwrite = index.duplicates
                        for key in keys:
                            if not put(key, oid, True, overwrite, False, index.dbi):
                                self._undo_insert(txn, oid, additions, index, key)
                    if keyed:
                        keys_written += additions  # (once the record is written: a failed one leaves no trace)
                if ops is not None:
                    if bulk:
                        sizes.append(len(raw))
                    else:
                        ops.append(PUT_FORMAT % (name_json, oid, len(raw)))
                    documents += raw
                elif journaled:
                    self._journal_write(t, oid, raw)
        finally:
            if sizes:  # (also when a record failed: those written before it stay in the transaction)
                written = islice(map(itemgetter(0), records), len(sizes))
                self._journal_inserts(t, written, sizes, list(map(itemgetter(1), keys_written)) if keyed else None)

    def _put_new(
        self,
        txn: lmdb.Transaction[bytes],
        oid: bytes,
        new: dict[str, Any],
        additions: list[tuple[Index, list[bytes]]] | None = None,
    ) -> bytes:
        """Write one new record and its index keys; return its JSON (before compression). The JSON and every key
        (unless `additions` brings them, computed by the caller) are made before anything is written, and a clash
        takes back what was written of the record: an error writes nothing."""
        try:
            raw = _dumps(new)
        except orjson.JSONEncodeError:
            raw = encode_document(new)  # raises InvalidDocument with the reason
        if raw.find(b"null") >= 0:
            raw = encode_document(new)  # checks for NaN/infinity, which orjson writes as null
        if additions is None:
            additions = []
            for index in self._index_list:
                additions.append((index, index.keys(new)))
        put = txn.put
        compressor = self._compressor
        if not put(oid, raw if compressor is None else compressor.compress(raw), True, False, False, self._dbi):
            raise DuplicateKey(f"table {self.name!r} already has a record with key {oid.decode()}")
        for index, keys in additions:
            overwrite = index.duplicates  # a unique index refuses to overwrite: the put is the uniqueness check
            for key in keys:
                if not put(key, oid, True, overwrite, False, index.dbi):
                    self._undo_insert(txn, oid, additions, index, key)
        return raw

    def _insert_one(self, t: Transaction, oid: bytes, new: dict[str, Any]) -> None:
        """One new record: `_insert` for the most frequent call of all (an append of one document), without the
        set-up a run of records shares (bulk journaling, recorded index keys): the same checks in the same order."""
        raw = self._put_new(t.txn, oid, new)
        ops = t.ops
        if ops is not None and not self._db.replication.versioned:
            ops.append(PUT_FORMAT % (self._name_json, oid, len(raw)))
            t.documents += raw
        elif ops is not None or t.origin is not None:
            self._journal_write(t, oid, raw)

    def _journal_inserts(
        self, t: Transaction, oids: Iterable[bytes], sizes: list[int], keys: list[list[bytes]] | None
    ) -> None:
        """The put ops of records written by `_insert` (their keys and document lengths) in one item of the entry's
        ops, and their index keys when recorded (`keys`: each record's, index by index; each index made at most one
        key for each of them): without them, the entry carries no keys (Replication.write_entry counts the ops that
        have keys)."""
        ops = t.ops
        assert ops is not None
        count = len(sizes)
        ops.append(put_ops(self._name_json, oids, sizes))
        t.merged += count - 1
        lengths = t.key_lengths
        if lengths is None or keys is None:
            return
        if keys and max(map(len, keys)) > 1:
            t.key_lengths = None  # several keys from one index: this entry carries none
            return
        t.key_tables[self._name_json] = self._index_token
        # A list of one key joins to that key itself, an empty one to b'' (length 0: no key in that index).
        flat = list(map(b"".join, keys))
        lengths += map(len, flat)
        t.keys += b"".join(flat)
        t.keyed += count

    def _insert_stored(
        self, t: Transaction, records: list[tuple[bytes, bytes, dict[str, Any] | IndexKeys]], start: int = 0
    ) -> int:
        """Records (key, stored JSON bytes, the same decoded or its index keys as its source computed them) from
        `records[start]` on: `_insert` for a replica applying a source's documents, which writes (and journals) the
        bytes as they are, never encoding a document again. Stops at the first record whose key the table already
        holds (writing nothing of it) and returns its position, or len(records) when every record was new."""
        txn = t.txn
        put = txn.put
        dbi = self._dbi
        indexes = self._index_list
        compress = None if self._compressor is None else self._compressor.compress
        versioned = self._db.replication.versioned  # then _journal_write records each version (and op)
        ops = None if versioned else t.ops
        documents = t.documents
        name_json = self._name_json
        if ops is None and not versioned and len(records) - start >= BULK_MIN:  # (a one-way replica's run)
            start = columns.insert_stored(self, t, records, start)
            if start == len(records):
                return start
        computed: list[tuple[Index, list[bytes]]] = []
        additions: Iterable[tuple[Index, list[bytes]]] = ()
        position = start
        for oid, raw, new in islice(records, start, None):
            if indexes:
                if new.__class__ is dict:
                    additions = computed = []
                    for index in indexes:
                        computed.append((index, index.keys(new)))
                else:
                    additions = zip(indexes, new, strict=True)  # type: ignore[arg-type]  # (no list: one pass)
            if not put(oid, raw if compress is None else compress(raw), True, False, False, dbi):
                return position  # the put is the existence check: an update takes the caller's other path
            position += 1
            if indexes:
                for index, keys in additions:
                    overwrite = index.duplicates
                    for key in keys:
                        if not put(key, oid, True, overwrite, False, index.dbi):
                            if new.__class__ is not dict:
                                computed = list(zip(indexes, cast("IndexKeys", new), strict=True))
                            self._undo_insert(txn, oid, computed, index, key)
            if ops is not None:
                ops.append(PUT_FORMAT % (name_json, oid, len(raw)))
                documents += raw
            elif versioned:
                self._journal_write(t, oid, raw)
        return position

    def _undo_insert(
        self,
        txn: lmdb.Transaction[bytes],
        oid: bytes,
        additions: list[tuple[Index, list[bytes]]],
        index: Index,
        key: bytes,
    ) -> None:
        """Take back the part of a record written before its unique `key` of `index` clashed, and refuse it."""
        txn.delete(oid, db=self._dbi)
        for done, keys in additions:
            for written in keys:
                if done is index and written == key:
                    holder = txn.get(key, b"", db=index.dbi)
                    raise DuplicateKey(
                        f"index {index.name!r} of {self.name!r} already has key {key!r} (record {holder.decode()})"
                    )
                txn.delete(written, oid, db=done.dbi) if done.duplicates else txn.delete(written, db=done.dbi)
        raise AssertionError("unreachable: the clashing key is among the additions")

    def _journal_write(self, t: Transaction, oid: bytes, raw: bytes | None) -> None:
        # Record keys need no JSON escaping (see ids.normalise_key) and the name is JSON-encoded once.
        if t.ops is None:
            pass
        elif raw is None:
            t.ops.append(DELETE_FORMAT % (self._name_json, oid))
        else:
            t.ops.append(PUT_FORMAT % (self._name_json, oid, len(raw)))
            t.documents += raw
        self._db.replication.record_version(t, self.name, oid, raw is None)

    def _read(self, txn: lmdb.Transaction[bytes], oid: bytes) -> dict[str, Any] | None:
        stored = txn.get(oid, db=self._dbi)
        return None if stored is None else decode_value(stored, self._compressor)
