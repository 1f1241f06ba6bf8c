"""Reads of a table: get, find, seek, range, filter (paged), first, last, records.

Every query is one ordered walk (`_query`) over the table or an index, in the caller's read transaction or in one
held only while the walk runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import lmdb
import orjson

from pynndb.core.codec import Compressor, decode_value
from pynndb.core.doc import Doc, _new_doc
from pynndb.core.ids import normalise_key
from pynndb.core.scan import walk, walk_all
from pynndb.core.transaction import Transaction
from pynndb.errors import InvalidArgument, InvalidArgumentType, InvalidDocument, InvalidIndexKey

if TYPE_CHECKING:
    from pynndb.core.database import Database
    from pynndb.core.table import Index

_loads = orjson.loads
_JSONError = orjson.JSONDecodeError
Expression = Callable[[Doc], bool]


class FilterResult:
    """One result of `Table.filter`: the index key, the document, and its position (1-based) in the walk."""

    __slots__ = ("key", "doc", "count")

    def __init__(self, key: bytes, doc: Doc, count: int) -> None:
        self.key = key
        self.doc = doc
        self.count = count

    def __repr__(self) -> str:
        return f"FilterResult(count={self.count}, key={self.key!r}, doc={self.doc!r})"


class TableReads:
    """The read side of `Table` (a mixin: the state it reads is set up by `Table`)."""

    _db: Database
    _env: lmdb.Environment
    _dbi: Any
    _compressor: Compressor | None

    def _live(self) -> Any:
        raise NotImplementedError

    _pending: bool

    def _readable(self, txn: Transaction | None = None) -> Any:
        raise NotImplementedError

    def _absent(self, txn: Transaction | None = None) -> bool:
        """True when the table reads as empty: not arrived yet on a replica, or created by an uncommitted
        transaction that `txn` is not."""
        return (self._dbi is None or self._pending) and self._readable(txn) is None

    def _index(self, name: str) -> Index:
        raise NotImplementedError

    @staticmethod
    def _unwrap(doc: Any) -> tuple[dict[str, Any], bytes | None]:
        raise NotImplementedError

    def get(self, key: str | bytes, txn: Transaction | None = None) -> Doc | None:
        """The record with this key, or None (InvalidKey for a key no record can have: not str or bytes, empty, too
        long, or with other characters than A-Z a-z 0-9 - _ . :)."""
        # The key is looked up as given and checked only when nothing is found: a stored key is a valid one, and
        # the check costs about a fifth of a get in a read transaction.
        if key.__class__ is str:
            try:
                oid = key.encode()
            except UnicodeEncodeError:  # (a lone surrogate)
                oid = normalise_key(key)  # (raises)
        elif key.__class__ is bytes:
            oid = key
        else:
            oid = normalise_key(key)
        dbi = self._dbi
        if dbi is None or self._pending:
            dbi = self._readable(txn)
            if dbi is None:
                normalise_key(key)  # (raises for a key no record can have)
                return None
        try:
            if txn is None:
                with self._env.begin() as raw:
                    stored = raw.get(oid, db=dbi)
            elif txn.__class__ is Transaction and txn.db is self._db and txn.active:
                stored = txn.txn.get(oid, db=dbi)
            else:
                stored = self._db._check(txn, False).txn.get(oid, db=dbi)
        except lmdb.BadValsizeError:  # empty, or longer than LMDB takes: no record has it (raised below)
            stored = None
        if stored is None:
            normalise_key(key)  # no such record, or a key no record can have (raises InvalidKey)
            return None
        doc = _new_doc()
        doc._data = _loads(stored) if stored[0] == 123 else decode_value(stored, self._compressor)
        doc._oid = oid
        return doc

    def __contains__(self, key: object) -> bool:
        return isinstance(key, (str, bytes)) and self.get(key) is not None

    def records(self, txn: Transaction | None = None) -> int:
        """How many records the table holds."""
        dbi = self._dbi if self._dbi is not None and not self._pending else self._readable(txn)
        if dbi is None:
            return 0
        if txn is not None:
            return int(self._db._check(txn, False).txn.stat(dbi)["entries"])
        with self._env.begin() as raw:
            return int(raw.stat(dbi)["entries"])

    def __len__(self) -> int:
        return self.records()

    def _bound(self, index: Index | None, template: Any) -> bytes | None:
        if template is None:
            return None
        if index is None:
            oid = template._oid if isinstance(template, Doc) else normalise_key(template)
            if oid is None:
                raise InvalidDocument("a bound on the table itself must be a Doc with a key, or a key")
            return oid
        data, _ = self._unwrap(template)
        keys = index.keys(data)
        if not keys:
            raise InvalidIndexKey(f"template {data!r} gives no key for index {index.name!r}")
        return keys[0]

    def _query(
        self,
        txn: Transaction | None,
        index: Index | None,
        lower: bytes | None = None,
        upper: bytes | None = None,
        inclusive: bool = True,
        reverse: bool = False,
        after: tuple[bytes, bytes] | None = None,
        expression: Expression | None = None,
        limit: int | None = None,
        with_keys: bool = False,
    ) -> Iterator[Any]:
        """The one read walk behind every query: yields Docs (or (index key, Doc) with `with_keys`) in order, in the
        caller's transaction or in a read transaction held only while the walk runs."""
        dbi = self._dbi if self._dbi is not None and not self._pending else self._readable(txn)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise InvalidArgument("limit must be a non-negative int or None")
        if expression is not None and not callable(expression):
            raise InvalidArgumentType("expression must be a callable taking a Doc")
        raw_txn = None if txn is None else self._db._check(txn, False).txn
        compressor = self._compressor
        simple = index is None and lower is None and upper is None and after is None and not reverse

        def produce() -> Iterator[Any]:
            if dbi is None:
                return  # a replica's table that has not arrived yet
            own = raw_txn is None
            read = self._env.begin() if raw_txn is None else raw_txn
            try:
                if limit == 0:
                    return
                count = 0
                if simple and not with_keys:
                    # The full scan: the cursor's own pairs, without the (key, record, value) layer (~10% faster).
                    if expression is None and limit is None:  # (nothing to test a record: ~4% faster again)
                        for oid, stored in walk_all(read, dbi):
                            doc = _new_doc()
                            try:
                                doc._data = _loads(stored)
                            except _JSONError:  # a compressed value (a zstd frame is never JSON)
                                doc._data = decode_value(stored, compressor)
                            doc._oid = oid
                            yield doc
                        return
                    for oid, stored in walk_all(read, dbi):
                        doc = _new_doc()
                        doc._data = _loads(stored) if stored[0] == 123 else decode_value(stored, compressor)
                        doc._oid = oid
                        if expression is None or expression(doc):
                            yield doc
                            if limit is not None:
                                count += 1
                                if count == limit:
                                    return
                    return
                index_db = None if index is None else index.dbi
                duplicates = index is not None and index.duplicates
                entries = walk(read, dbi, index_db, duplicates, lower, upper, inclusive, reverse, after)
                for key, oid, stored in entries:
                    doc = _new_doc()
                    doc._data = _loads(stored) if stored[0] == 123 else decode_value(stored, compressor)
                    doc._oid = oid
                    if expression is None or expression(doc):
                        yield (key, doc) if with_keys else doc
                        count += 1
                        if count == limit:
                            return
            finally:
                if own:
                    read.abort()

        return produce()

    def find(
        self,
        index_name: str | None = None,
        expression: Expression | None = None,
        limit: int | None = None,
        txn: Transaction | None = None,
    ) -> Iterator[Doc]:
        """Every record in key order (or index order), optionally filtered by `expression(doc)`, up to `limit`."""
        if self._absent(txn):
            return iter(())
        index = None if index_name is None else self._index(index_name)
        return self._query(txn, index, expression=expression, limit=limit)

    def range(
        self,
        index_name: str | None = None,
        lower: Any = None,
        upper: Any = None,
        inclusive: bool = True,
        limit: int | None = None,
        txn: Transaction | None = None,
    ) -> Iterator[Doc]:
        """Records whose index key lies between the keys of template Docs `lower` and `upper` (either may be None)."""
        if self._absent(txn):
            return iter(())
        index = None if index_name is None else self._index(index_name)
        low, high = self._bound(index, lower), self._bound(index, upper)
        return self._query(txn, index, low, high, inclusive, limit=limit)

    def seek(
        self, index_name: str, doc: Any, limit: int | None = None, txn: Transaction | None = None
    ) -> Iterator[Doc]:
        """Records whose key in `index_name` equals the template Doc's key."""
        if self._absent(txn):
            return iter(())
        index = self._index(index_name)
        key = self._bound(index, doc)
        return self._query(txn, index, key, key, limit=limit)

    def seek_one(self, index_name: str, doc: Any, txn: Transaction | None = None) -> Doc | None:
        """The first record matching the template in `index_name`, or None."""
        return next(self.seek(index_name, doc, limit=1, txn=txn), None)

    def first(self, index_name: str | None = None, txn: Transaction | None = None) -> Doc | None:
        """The first record in key (or index) order, or None when empty."""
        if self._absent(txn):
            return None
        index = None if index_name is None else self._index(index_name)
        return next(self._query(txn, index, limit=1), None)

    def last(self, index_name: str | None = None, txn: Transaction | None = None) -> Doc | None:
        """The last record in key (or index) order, or None when empty."""
        if self._absent(txn):
            return None
        index = None if index_name is None else self._index(index_name)
        return next(self._query(txn, index, reverse=True, limit=1), None)

    def filter(
        self,
        index_name: str | None = None,
        lower: Any = None,
        upper: Any = None,
        expression: Expression | None = None,
        page_size: int = 0,
        context: FilterResult | None = None,
        reverse: bool = False,
        inclusive: bool = True,
        txn: Transaction | None = None,
    ) -> Iterator[FilterResult]:
        """Walk records in index order with bounds and an expression, a page at a time.

        Pass the last result of a page as `context` to get the next page (in the same direction).
        """
        if self._absent(txn):
            return iter(())
        index = None if index_name is None else self._index(index_name)
        if not isinstance(page_size, int) or page_size < 0:
            raise InvalidArgument("page_size must be a non-negative int (0: no paging)")
        if context is not None and not isinstance(context, FilterResult):
            raise InvalidArgumentType("context must be a FilterResult from a previous page")
        after = None if context is None else (context.key, context.doc._oid or b"")
        start = 0 if context is None else context.count
        walker = self._query(
            txn,
            index,
            self._bound(index, lower),
            self._bound(index, upper),
            inclusive,
            reverse,
            after,
            expression,
            page_size or None,
            with_keys=True,
        )
        return (FilterResult(key, doc, start + number) for number, (key, doc) in enumerate(walker, 1))
