"""The schema side of `Table`: its LMDB handles, index definitions (ensure, drop, reindex) and compression.

`Database` attaches and detaches a table as definitions change on disk; every schema change is saved in
``__meta__`` and journaled in the transaction that makes it.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import lmdb

from pynndb.core import meta, ops
from pynndb.core.codec import Compressor, decode_value, raw_json, train_dictionary
from pynndb.core.index import IndexDefinition, IndexFunction, index_token, key_function
from pynndb.core.scan import walk_all
from pynndb.core.transaction import Transaction
from pynndb.errors import (
    DatabaseClosed,
    DuplicateKey,
    IndexDefinitionError,
    InvalidArgument,
    InvalidName,
    NoSuchIndex,
    NoSuchTable,
    NotEnoughRecords,
)

if TYPE_CHECKING:
    from pynndb.core.database import Database


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


class TableSchema:
    """A table's handles, indexes and compression (a base of `Table`, which sets up the state below)."""

    name: str
    _db: Database
    _env: lmdb.Environment
    _dbi: Any
    _indexes: dict[str, Index]
    _index_list: tuple[Index, ...]
    _index_token: bytes  # index_token of _index_list (journal entries carry it with the keys they computed)
    _compressor: Compressor | None
    _definition: dict[str, Any]
    _pending: bool

    # --- plumbing (called by Database) -------------------------------------------------------------------------
    def _attach(self, txn: lmdb.Transaction[bytes], definition: dict[str, Any], create: bool = False) -> None:
        env = self._env
        create = not self._db.config.readonly
        opener = txn if create else None  # (readonly: see Database.__init__)
        self._dbi = env.open_db(self._records_db_name(), txn=opener, create=create)
        indexes: dict[str, Index] = {}
        for name, stored in definition.get("indexes", {}).items():
            index_definition = IndexDefinition.from_json(name, stored)
            previous = self._indexes.get(name)
            if previous is not None and previous.definition.same_as(index_definition):
                index_definition.callable = previous.definition.callable
            dbi = env.open_db(self._index_db_name(name), txn=opener, dupsort=index_definition.duplicates, create=create)
            indexes[name] = Index(index_definition, dbi, self._db.config.trust_functions)
        self._set_indexes(indexes)
        compression = definition.get("compression")
        if compression:
            dictionary = txn.get(meta.keyed(meta.DICTIONARY, self.name), db=self._db._meta)
            self._compressor = Compressor(compression.get("level", 3), dictionary)
        else:
            self._compressor = None
        self._definition = definition

    def _detach(self) -> None:
        self._dbi = None
        self._set_indexes({})

    def _set_indexes(self, indexes: dict[str, Index]) -> None:
        self._indexes = indexes
        self._index_list = tuple(indexes.values())
        self._index_token = index_token(index.definition for index in self._index_list)

    def _records_db_name(self) -> bytes:
        return b"t/" + self.name.encode()

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
        self._set_indexes({**self._indexes, definition.name: index})
        self._save_definition(t)
        if t.ops is not None:
            t.ops.append(ops.ensure(self.name, definition.name, definition.to_json()))
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
        self._set_indexes({name: other for name, other in self._indexes.items() if name != index_name})
        self._save_definition(t)
        if t.ops is not None:
            t.ops.append(ops.drop_index(self.name, index_name))

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
        meta_key = meta.keyed(meta.DICTIONARY, self.name)
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
            t.ops.append(ops.compress(self.name, level, encoded))
