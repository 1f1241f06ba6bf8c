"""`Table`: records of one table and its secondary indexes. Every write goes through one private write path.

Each public method takes an optional ``txn=``; without one, the call runs atomically in a transaction of its own.
"""

from __future__ import annotations

import base64
import gc
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import lmdb
import orjson

from pynndb.core.changes import Change, follow
from pynndb.core.codec import Compressor, decode_value, encode_document, raw_json, train_dictionary
from pynndb.core.doc import Doc, _new_doc, make_doc
from pynndb.core.ids import new_oid, normalise_key
from pynndb.core.index import IndexDefinition, IndexFunction, key_function
from pynndb.core.reads import TableReads
from pynndb.core.scan import walk_all
from pynndb.core.transaction import Transaction
from pynndb.errors import (
    DatabaseClosed,
    DocumentDoesNotExist,
    DuplicateKey,
    IndexDefinitionError,
    InvalidArgument,
    InvalidDocument,
    InvalidName,
    NoSuchIndex,
    NoSuchTable,
    NotEnoughRecords,
)

if TYPE_CHECKING:
    from pynndb.core.database import Database

_loads = orjson.loads
_dumps = orjson.dumps


def check_name(name: object, kind: str) -> str:
    """Validate a table or index name."""
    if not isinstance(name, str):
        raise InvalidName(f"a {kind} name must be a str, not {type(name).__name__}")
    if not 0 < len(name) <= 200 or "/" in name or "\x00" in name or name.startswith("__"):
        raise InvalidName(f"bad {kind} name {name!r}: 1-200 characters, no '/' or NUL, not starting with '__'")
    return name


class Index:
    """One secondary index: its definition, its LMDB sub-database and its key function."""

    __slots__ = ("name", "definition", "dbi", "keys", "duplicates")

    def __init__(self, definition: IndexDefinition, dbi: Any, trust_functions: bool) -> None:
        self.name = definition.name
        self.definition = definition
        self.dbi = dbi
        self.duplicates = definition.duplicates
        self.keys = key_function(definition, trust_functions)

    def __repr__(self) -> str:
        what = self.definition.func or self.definition.function
        return f"<Index {self.name!r} {what!r} duplicates={self.duplicates}>"


class Table(TableReads):
    """A table of `Doc` records. Get one from `Database.table(name)`; its reads come from `TableReads`."""

    def __init__(self, db: Database, name: str) -> None:
        self._db = db
        self._env = db._env
        self.name = name
        self._dbi: Any = None
        self._indexes: dict[str, Index] = {}
        self._index_list: tuple[Index, ...] = ()
        self._compressor: Compressor | None = None
        self._name_json = orjson.dumps(name)
        self._pending = False  # created by a transaction that has not committed yet

    # --- schema plumbing (called by Database) ----------------------------------------------------------------
    def _attach(self, txn: lmdb.Transaction, definition: dict[str, Any], create: bool = False) -> None:
        env = self._env
        create = not self._db.config.readonly
        opener = txn if create else None  # (readonly: see Database.__init__)
        self._dbi = env.open_db(b"t/" + self.name.encode(), txn=opener, create=create)
        indexes: dict[str, Index] = {}
        for name, stored in definition.get("indexes", {}).items():
            index_definition = IndexDefinition.from_json(name, stored)
            previous = self._indexes.get(name)
            if previous is not None and previous.definition.same_as(index_definition):
                index_definition.callable = previous.definition.callable
            dbi = env.open_db(self._index_db_name(name), txn=opener, dupsort=index_definition.duplicates, create=create)
            indexes[name] = Index(index_definition, dbi, self._db.config.trust_functions)
        self._indexes = indexes
        self._index_list = tuple(indexes.values())
        compression = definition.get("compression")
        if compression:
            dictionary = txn.get(b"zdict:" + self.name.encode(), db=self._db._meta)
            self._compressor = Compressor(compression.get("level", 3), dictionary)
        else:
            self._compressor = None
        self._definition = definition

    def _detach(self) -> None:
        self._dbi = None
        self._indexes = {}
        self._index_list = ()

    def _index_db_name(self, index_name: str) -> bytes:
        return f"i/{self.name}/{index_name}".encode()

    def _live(self) -> Any:
        if self._db._closed:
            raise DatabaseClosed(f"database {self._db.path} is closed")
        if self._dbi is None:
            raise NoSuchTable(f"table {self.name!r} has been dropped")
        return self._dbi

    def _readable(self, txn: Transaction | None = None) -> Any:
        """The records' handle for a read in `txn` (None: a read transaction of its own), or None when the table
        reads as empty: on a read-only replica, a table that has not arrived yet (or was dropped at its source); in
        any database, a table whose creating transaction has not committed (unless `txn` is that transaction: a
        write transaction, as LMDB runs one at a time). Picks up a table another process created."""
        dbi = self._dbi
        if dbi is not None and (not self._pending or txn is not None and txn.write):
            return dbi
        self._db._refresh()
        if self._dbi is not None and not self._pending:
            return self._dbi
        if self._pending or self._db.replication.read_only:
            return None
        return self._live()

    def _index(self, name: str) -> Index:
        index = self._indexes.get(name)
        if index is None:
            self._db._refresh()  # another process may have created it
            index = self._indexes.get(name)
            if index is None:
                self._live()
                raise NoSuchIndex(f"table {self.name!r} has no index {name!r}")
        return index

    def _save_definition(self, t: Transaction) -> None:
        definition = {
            "indexes": {name: index.definition.to_json() for name, index in self._indexes.items()},
            "compression": self._definition.get("compression"),
        }
        self._definition = definition
        self._db._save_table_definition(t, self.name, definition)

    # --- the write path ---------------------------------------------------------------------------------------
    @staticmethod
    def _unwrap(doc: Any) -> tuple[dict[str, Any], bytes | None]:
        if isinstance(doc, Doc):
            return doc._data, doc._oid
        if isinstance(doc, dict):
            return doc, None
        raise InvalidDocument(f"a document must be a Doc or a dict, not {type(doc).__name__}")

    def _index_changes(
        self, txn: lmdb.Transaction, oid: bytes, new: dict[str, Any] | None, old: dict[str, Any] | None
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

    def _check_unique(self, txn: lmdb.Transaction, index: Index, keys: list[bytes], oid: bytes) -> None:
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

    def _insert(self, t: Transaction, records: Iterable[tuple[bytes, dict[str, Any]]]) -> None:
        """New records (key, fields): the hot path of append and append_many, with no index diffing.

        Each record's index keys are computed and unique keys checked before anything of it is written."""
        txn = t.txn
        put = txn.put
        dbi = self._dbi
        indexes = self._index_list
        compress = None if self._compressor is None else self._compressor.compress
        journaled = t.ops is not None or t.origin is not None
        # Without per-document versions, a journaled insert is one pre-formatted op: append it inline.
        ops = t.ops if journaled and not self._db.replication.versioned else None
        documents = t.documents
        name_json = self._name_json
        additions: list[tuple[Index, list[bytes]]] = []
        for oid, new in records:
            try:
                raw = _dumps(new)
            except orjson.JSONEncodeError:
                raw = encode_document(new)  # raises InvalidDocument with the reason
            if raw.find(b"null") >= 0:  # (find: cheaper than `in` on bytes)
                raw = encode_document(new)  # checks for NaN/infinity, which orjson writes as null
            if indexes:
                additions = []  # every key is computed before anything is written (a plain loop: no listcomp frame)
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
            if ops is not None:
                ops.append(b'["put",%b,"%b",%d]' % (name_json, oid, len(raw)))
                documents += raw
            elif journaled:
                self._journal_write(t, oid, raw)

    def _insert_stored(self, t: Transaction, records: list[tuple[bytes, bytes, dict[str, Any]]], start: int = 0) -> int:
        """Records (key, stored JSON bytes, the same decoded) from `records[start]` on: `_insert` for a replica
        applying a source's documents, which writes (and journals) the bytes as they are, never encoding a document
        again. Stops at the first record whose key the table already holds (writing nothing of it) and returns its
        position, or len(records) when every record was new."""
        txn = t.txn
        put = txn.put
        dbi = self._dbi
        indexes = self._index_list
        compress = None if self._compressor is None else self._compressor.compress
        versioned = self._db.replication.versioned  # then _journal_write records each version (and op)
        ops = None if versioned else t.ops
        documents = t.documents
        name_json = self._name_json
        additions: list[tuple[Index, list[bytes]]] = []
        position = start
        for oid, raw, new in islice(records, start, None):
            if indexes:
                additions = []
                for index in indexes:
                    additions.append((index, index.keys(new)))
            if not put(oid, raw if compress is None else compress(raw), True, False, False, dbi):
                return position  # the put is the existence check: an update takes the caller's other path
            position += 1
            if indexes:
                for index, keys in additions:
                    overwrite = index.duplicates
                    for key in keys:
                        if not put(key, oid, True, overwrite, False, index.dbi):
                            self._undo_insert(txn, oid, additions, index, key)
            if ops is not None:
                ops.append(b'["put",%b,"%b",%d]' % (name_json, oid, len(raw)))
                documents += raw
            elif versioned:
                self._journal_write(t, oid, raw)
        return position

    def _undo_insert(
        self, txn: lmdb.Transaction, oid: bytes, additions: list[tuple[Index, list[bytes]]], index: Index, key: bytes
    ) -> None:
        """Take back the part of a record written before its unique `key` of `index` clashed, and refuse it."""
        txn.delete(oid, db=self._dbi)
        for done, keys in additions:
            for written in keys:
                if done is index and written == key:
                    holder = txn.get(key, db=index.dbi)
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
            t.ops.append(b'["delete",%b,"%b"]' % (self._name_json, oid))
        else:
            t.ops.append(b'["put",%b,"%b",%d]' % (self._name_json, oid, len(raw)))
            t.documents += raw
        self._db.replication.record_version(t, self.name, oid, raw is None)

    def _read(self, txn: lmdb.Transaction, oid: bytes) -> dict[str, Any] | None:
        stored = txn.get(oid, db=self._dbi)
        return None if stored is None else decode_value(stored, self._compressor)

    # --- writes -------------------------------------------------------------------------------------------------
    def append(self, doc: Doc | dict[str, Any], txn: Transaction | None = None) -> Doc:
        """Add a new record; it gets a new time-ordered key unless the Doc carries one (which must be unused)."""
        if txn is not None:
            if txn.__class__ is Transaction and txn.db is self._db and txn.active and txn.write:
                return self._append(txn, doc)  # the bulk path: a caller's transaction, checked inline
            return self._db._run(txn, True, self._append, doc)
        if self._db._writer is not None:  # maybe this thread's open transaction: _run joins it
            return self._db._run(None, True, self._append, doc)
        # The most frequent call of all: its own transaction without going through _run (same semantics).
        t = self._db._begin(True)
        try:
            result = self._append(t, doc)
        except lmdb.MapFullError:
            t.abort()
            self._db._grow_map()
            return self._db._run(None, True, self._append, doc)
        except BaseException:
            t.abort()
            raise
        try:
            t.commit()
        except lmdb.MapFullError:
            return self._db._run(None, True, self._append, doc)
        return result

    def _append(self, t: Transaction, doc: Doc | dict[str, Any]) -> Doc:
        if self._dbi is None:
            self._live()
        if doc.__class__ is dict:
            oid = new_oid()
            self._insert(t, ((oid, doc),))
            result = _new_doc(Doc)
            result._data = doc
            result._oid = oid
            return result
        data, oid = self._unwrap(doc)
        if oid is None:
            oid = new_oid()
        self._write(t, oid, data, None)
        if isinstance(doc, Doc):
            doc._oid = oid
            return doc
        return make_doc(data, oid)

    def append_many(self, docs: Iterable[Doc | dict[str, Any]], txn: Transaction | None = None) -> list[Doc]:
        """Append many records in one transaction (the bulk-load path)."""
        return self._db._run(txn, True, self._append_many, list(docs))

    def _append_many(self, t: Transaction, docs: list[Doc | dict[str, Any]]) -> list[Doc]:
        self._live()
        # Many new containers at once: the cyclic collector would rescan them all while none can form a cycle.
        collecting = gc.isenabled()
        gc.disable()
        try:
            records: list[tuple[bytes, dict[str, Any]]] = []
            for doc in docs:
                data, oid = (doc, None) if doc.__class__ is dict else self._unwrap(doc)
                records.append((new_oid() if oid is None else oid, data))
            self._insert(t, records)
            results: list[Doc] = []
            for doc, (oid, data) in zip(docs, records, strict=True):
                if doc.__class__ is not dict and isinstance(doc, Doc):  # (Doc's isinstance goes through abc)
                    doc._oid = oid
                    results.append(doc)
                else:
                    result = _new_doc(Doc)
                    result._data = data
                    result._oid = oid
                    results.append(result)
            return results
        finally:
            if collecting:
                gc.enable()

    def save(self, doc: Doc, txn: Transaction | None = None) -> Doc:
        """Replace an existing record with the Doc's fields; indexes follow."""
        return self._db._run(txn, True, self._save, doc)

    def _save(self, t: Transaction, doc: Doc) -> Doc:
        self._live()
        data, oid = self._unwrap(doc)
        if oid is None:
            raise DocumentDoesNotExist("save needs a Doc that was read from (or appended to) the table")
        old = self._read(t.txn, oid)
        if old is None:
            raise DocumentDoesNotExist(f"table {self.name!r} has no record {oid.decode()}")
        self._write(t, oid, data, old)
        return doc if isinstance(doc, Doc) else make_doc(data, oid)

    def delete(self, doc_or_key: Doc | str | bytes | list[Any], txn: Transaction | None = None) -> None:
        """Delete a record (by Doc or key) or a list of them; a missing key raises and deletes nothing."""
        targets = doc_or_key if isinstance(doc_or_key, (list, tuple)) else [doc_or_key]
        oids = [target._oid if isinstance(target, Doc) else normalise_key(target) for target in targets]
        if any(oid is None for oid in oids):
            raise DocumentDoesNotExist("cannot delete a Doc that has no key")
        self._db._run(txn, True, self._delete, oids)

    def _delete(self, t: Transaction, oids: list[bytes]) -> None:
        self._live()
        olds = []
        for oid in oids:  # check every key first, so a bad list deletes nothing even inside a caller's txn
            old = self._read(t.txn, oid)
            if old is None:
                raise DocumentDoesNotExist(f"table {self.name!r} has no record {oid.decode()}")
            olds.append(old)
        for oid, old in zip(oids, olds, strict=True):
            self._write(t, oid, None, old)

    def empty(self, txn: Transaction | None = None) -> None:
        """Remove every record (indexes stay defined, now empty)."""
        self._db._run(txn, True, self._empty)

    def _empty(self, t: Transaction) -> None:
        t.txn.drop(self._live(), delete=False)
        for index in self._index_list:
            t.txn.drop(index.dbi, delete=False)
        if t.ops is not None:
            t.ops.append(orjson.dumps(["empty", self.name]))
            self._db.replication.drop_versions(t, self.name)
        self._db.replication.record_emptied(t, self.name)

    def _drop_storage(self, t: Transaction) -> None:
        for index in self._index_list:
            t.txn.drop(index.dbi, delete=True)
        t.txn.drop(self._live(), delete=True)
        self._detach()

    # --- indexes ------------------------------------------------------------------------------------------------
    def indexes(self) -> list[str]:
        """The names of this table's indexes."""
        self._live()
        return sorted(self._indexes)

    def index(self, index_name: str) -> Index:
        """The `Index` object (definition and state) of `index_name`."""
        return self._index(index_name)

    def ensure(
        self,
        index_name: str,
        func: str | IndexFunction,
        duplicates: bool = False,
        force: bool = False,
        txn: Transaction | None = None,
    ) -> Index:
        """Create and build an index, or return the existing one; `force` rebuilds it with the new definition.

        `func` is a format string ('{name}', '{age:03}{name}') or a function of the document's fields returning a
        key, a list of keys, or None (not indexed). Function indexes must be supplied again by the application
        each time it opens the database (calling ensure with the same function attaches it).
        """
        check_name(index_name, "index")
        definition = IndexDefinition.build(index_name, func, duplicates)
        existing = self._indexes.get(index_name)
        if existing is not None and not force:
            return self._reuse(existing, definition)
        return self._db._run(txn, True, self._ensure, definition, force)

    def _reuse(self, existing: Index, definition: IndexDefinition) -> Index:
        if not existing.definition.same_as(definition):
            raise IndexDefinitionError(
                f"index {existing.name!r} exists with definition {existing.definition.to_json()}; "
                "pass force=True to rebuild it with the new one"
            )
        if definition.callable is not None and existing.definition.callable is not definition.callable:
            existing.definition.callable = definition.callable
            existing.keys = key_function(existing.definition, False)
        return existing

    def _ensure(self, t: Transaction, definition: IndexDefinition, force: bool) -> Index:
        self._live()
        t.schema_changed = True  # an abort must reload: LMDB closes handles opened or dropped in it
        existing = self._indexes.get(definition.name)
        if existing is not None:
            if not force:
                return self._reuse(existing, definition)
            t.txn.drop(existing.dbi, delete=True)
        dbi = self._env.open_db(self._index_db_name(definition.name), txn=t.txn, dupsort=definition.duplicates)
        index = Index(definition, dbi, self._db.config.trust_functions)
        self._build(t, index)
        self._indexes = {**self._indexes, definition.name: index}
        self._index_list = tuple(self._indexes.values())
        self._save_definition(t)
        if t.ops is not None:
            t.ops.append(orjson.dumps(["ensure", self.name, definition.name, definition.to_json()]))
        return index

    def _build(self, t: Transaction, index: Index) -> None:
        txn = t.txn
        keys, dbi, unique = index.keys, index.dbi, not index.duplicates
        for oid, stored in walk_all(txn, self._dbi):
            for key in keys(decode_value(stored, self._compressor)):
                if not txn.put(key, oid, db=dbi, overwrite=not unique, dupdata=True) and unique:
                    raise DuplicateKey(f"cannot build unique index {index.name!r}: key {key!r} repeats")

    def drop(self, index_name: str, txn: Transaction | None = None) -> None:
        """Drop an index (the records stay)."""
        self._index(index_name)
        self._db._run(txn, True, self._drop_index, index_name)

    def _drop_index(self, t: Transaction, index_name: str) -> None:
        index = self._index(index_name)
        t.schema_changed = True
        t.txn.drop(index.dbi, delete=True)
        self._indexes = {name: other for name, other in self._indexes.items() if name != index_name}
        self._index_list = tuple(self._indexes.values())
        self._save_definition(t)
        if t.ops is not None:
            t.ops.append(orjson.dumps(["drop_index", self.name, index_name]))

    def reindex(self, index_name: str, txn: Transaction | None = None) -> None:
        """Rebuild an index from the records."""
        self._index(index_name)
        self._db._run(txn, True, self._reindex, index_name)

    def _reindex(self, t: Transaction, index_name: str) -> None:
        index = self._index(index_name)
        t.txn.drop(index.dbi, delete=False)
        self._build(t, index)

    # --- compression --------------------------------------------------------------------------------------------
    def compress(
        self,
        level: int | None = 3,
        train: bool = False,
        dictionary_size: int = 16384,
        samples: int = 2000,
        txn: Transaction | None = None,
    ) -> None:
        """Store records zstd-compressed at `level` (None: uncompressed), optionally with a dictionary trained
        on up to `samples` existing records (worth it: single small documents barely compress without one).
        Existing records are rewritten."""
        if level is not None and (not isinstance(level, int) or not 1 <= level <= 22):
            raise InvalidArgument("level must be an int from 1 to 22, or None for no compression")
        dictionary = None
        if train and level is not None:
            with self._env.begin() as raw:
                sample = [raw_json(v, self._compressor) for _k, v in walk_all(raw, self._live())][:samples]
            if len(sample) < 8:
                raise NotEnoughRecords("training a dictionary needs at least 8 records in the table")
            dictionary = train_dictionary(sample, dictionary_size)
        self._db._run(txn, True, self._set_compression, level, dictionary)

    def _set_compression(self, t: Transaction, level: int | None, dictionary: bytes | None) -> None:
        dbi = self._live()
        old = self._compressor
        meta_key = b"zdict:" + self.name.encode()
        if dictionary is None:
            t.txn.delete(meta_key, db=self._db._meta)
        else:
            t.txn.put(meta_key, dictionary, db=self._db._meta)
        new = None if level is None else Compressor(level, dictionary)
        cursor = t.txn.cursor(db=dbi)
        for oid, stored in list(cursor.iternext()):
            raw = raw_json(stored, old)
            t.txn.put(oid, raw if new is None else new.compress(raw), db=dbi)
        self._compressor = new
        self._definition["compression"] = None if level is None else {"level": level, "dictionary": bool(dictionary)}
        self._save_definition(t)
        if t.ops is not None:
            encoded = None if dictionary is None else base64.b64encode(dictionary).decode()
            t.ops.append(orjson.dumps(["compress", self.name, level, encoded]))

    # --- change feed ------------------------------------------------------------------------------------------
    def watch(self, since: int | tuple[int, int] | None = None, timeout: float | None = None) -> Iterator[Change]:
        """The changes of this table, as `Database.changes(since, tables=[name], timeout)` gives them."""
        return follow(self._db, since, [self.name], timeout)

    def __repr__(self) -> str:
        return f"<Table {self.name!r} of {self._db.path}>"
