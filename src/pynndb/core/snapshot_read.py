"""`SnapshotRead`: a consistent read of a whole database (one read transaction), as a source's snapshot and a
digest need it: the journal sequence, table definitions, each table's documents or stored pairs, dictionaries.

Get one from `Storage.read()`; it is valid only inside that ``with`` block.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import lmdb
import orjson

from pynndb.core import meta, pages
from pynndb.core.bulk import CHUNK_PAIRS, StoredPart, page_parts, stored_parts
from pynndb.core.codec import decode_value, raw_json
from pynndb.core.journal import Version
from pynndb.errors import MalformedEntry

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pynndb.core.database import Database
    from pynndb.core.table import Table


class SnapshotRead:
    """What a consistent read transaction of `db` shows (handles as of this transaction: the schema token matched)."""

    def __init__(self, db: Database, txn: lmdb.Transaction[bytes]) -> None:
        self._db = db
        self._txn = txn
        self._tables = {name: table for name, table in db._tables.items() if table._dbi is not None}

    def last_sequence(self) -> int:
        """The journal sequence this read sees (0 for a database without a journal)."""
        replication = self._db.replication
        return replication.last_sequence(self._txn) if replication.enabled else 0

    def replica_mark(self, source: str) -> int | None:
        """The mark of `source` this read sees, or None while a snapshot of it is under way (the tables then hold
        part of it, whatever the mark says)."""
        replication = self._db.replication
        if replication.snapshot_marker(self._txn, source) is not None:
            return None
        return replication.mark(self._txn, source)

    def table_names(self) -> list[str]:
        return sorted(self._tables)

    def definitions(self, tables: list[str] | None = None) -> dict[str, Any]:
        """Table name -> stored definition (indexes, compression), of `tables` only when given."""
        found: dict[str, Any] = {}
        prefix = meta.TABLE
        cursor = self._txn.cursor(db=self._db._meta)
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not key.startswith(prefix):
                    break
                name = key[len(prefix) :].decode()
                if tables is None or name in tables:
                    found[name] = orjson.loads(value)
        return found

    def count(self, table: str) -> int:
        """The number of documents in `table` (0 when it does not exist)."""
        found = self._tables.get(table)
        return 0 if found is None else int(self._txn.stat(found._dbi)["entries"])

    def dictionaries(self, definitions: dict[str, Any]) -> dict[str, str]:
        """The zstd dictionaries of the tables that have one, base64-encoded (a replica needs them to read records)."""
        found = {}
        for name, definition in definitions.items():
            compression = definition.get("compression") if isinstance(definition, dict) else None
            if compression and compression.get("dictionary"):
                dictionary = self._txn.get(meta.keyed(meta.DICTIONARY, name), db=self._db._meta)
                if dictionary is not None:
                    found[name] = base64.b64encode(dictionary).decode()
        return found

    def _table(self, name: str) -> Table | None:
        return self._tables.get(name)

    def stored_parts(self, table: str, chunk_bytes: int, chunk_pairs: int = CHUNK_PAIRS) -> Iterator[StoredPart]:
        """The stored pairs of `table` (records, tombstones, index entries) in batches of about `chunk_bytes` and
        `chunk_pairs` pairs. Read from LMDB's pages when `pages_readable` (core/pages.py), else through cursors.

        Should the pages not read as expected, this database's reads go through cursors from then on (a warning
        is logged): at once when nothing was yielded yet, else the error is raised (the replica asks again)."""
        found = self._tables.get(table)
        if found is None:
            return
        if not self.pages_readable():
            yield from stored_parts(self._txn, self._db.replication, found, chunk_bytes, chunk_pairs)
            return
        path = self._data_file()
        yielded = False
        try:
            with pages.PageFile(path, int(self._db._env.stat()["psize"])) as file:
                for part in page_parts(self._txn, found, file, chunk_bytes, chunk_pairs):
                    yielded = True
                    yield part
        except (MalformedEntry, OSError) as error:
            pages.refused.add(path)
            log.warning("%s: its pages did not read as expected (%s); reading through cursors", path, error)
            if yielded:
                raise
            yield from stored_parts(self._txn, self._db.replication, found, chunk_bytes, chunk_pairs)

    def pages_readable(self) -> bool:
        """Whether `stored_parts` reads LMDB's pages (core/pages.py): a source without versions, a known layout,
        pages that read as expected so far."""
        return not self._db.replication.versioned and pages.supported() and self._data_file() not in pages.refused

    def _data_file(self) -> str:
        return os.path.join(self._db.path, "data.mdb")

    def json_documents(self, table: str) -> Iterator[tuple[bytes, bytes, Version | None]]:
        """(key, the document's JSON bytes, its version or None) of every document of `table`, in key order."""
        found = self._tables.get(table)
        if found is None:
            return
        replication = self._db.replication
        versioned = replication.versioned
        compressor = found._compressor
        txn = self._txn
        for oid, stored in txn.cursor(db=found._dbi):
            version = replication.version_of(txn, table, oid) if versioned else None
            yield oid, raw_json(stored, compressor), version

    def tombstones(self, table: str) -> Iterator[tuple[bytes, Version]]:
        """(key, version) of the deleted documents of `table` that a versioned database remembers."""
        if not self._db.replication.versioned:
            return
        for oid, version in self._db.replication.versions(self._txn, table):
            if version.deleted:
                yield oid, version

    def documents(self, table: str) -> Iterator[tuple[bytes, dict[str, Any]]]:
        """(key, fields) of every document of `table`, in key order."""
        found = self._tables.get(table)
        if found is None:
            return
        compressor = found._compressor
        for oid, stored in self._txn.cursor(db=found._dbi):
            yield oid, decode_value(stored, compressor)

    def index_definitions(self, table: str) -> dict[str, Any]:
        """Index name -> its definition as stored (JSON-ready), in name order."""
        found = self._tables.get(table)
        if found is None:
            return {}
        return {name: found._indexes[name].definition.to_json() for name in sorted(found._indexes)}
