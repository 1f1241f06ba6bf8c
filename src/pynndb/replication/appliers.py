"""The mode rules of a replica: one applier per mode behind one interface, writing through the storage seam.

'one-way': a read-only copy (a snapshot replaces everything; stored pairs are bulk-loaded). 'two-way': both sides
write; last writer wins by (version, origin), and an ``empty`` or ``drop`` keeps what its writer had not seen.
'aggregate': a read-only copy fed by several sources; a source's snapshot, ``drop`` or ``empty`` removes only the
documents that came from that source.
"""

from __future__ import annotations

import base64
import gc
import uuid as uuid_module
from typing import TYPE_CHECKING, Any

from pynndb.core import ops as op
from pynndb.core.entries import Keys, document_fields, read_keyed, single_put, split_keys
from pynndb.errors import MalformedEntry
from pynndb.replication import fast_snapshot
from pynndb.replication.ordering import Entry
from pynndb.replication.table_filter import Tables, filter_ops

if TYPE_CHECKING:
    from pynndb.core.codec import Compressor
    from pynndb.core.entries import IndexKeys
    from pynndb.core.storage import ApplyTransaction, StoredDocument
    from pynndb.replication.messages import StoredPairs

ORIGINS_KEPT = 1024


class Applier:
    """Applies one source's journal ops and snapshot content in a given mode (the base: read-only modes)."""

    mode = "one-way"
    batched = True  # runs of puts to one table go to the storage seam whole (no version comparison needed)
    # A snapshot replaces a one-way copy whole: it is written without a journal op per record, then the journal
    # starts again (snapshot_intake). Modes that keep other documents beside a source's snapshot journal it.
    restarts_journal = True

    def __init__(self, source: bytes) -> None:
        self.source = source
        # Shown in STATUS: documents inserted with the index keys their entry carried (journal format 3), not decoded.
        # (Kept by this applier: a mode change starts it again. A transaction run again after the map grew counts
        # its documents again.)
        self.stats = {"keyed_documents": 0}
        self._origins: dict[str, bytes] = {}  # origin UUID text -> its 16 bytes (parsing one costs ~1.5 us)

    # --- journal ops ---------------------------------------------------------------------------------------------
    def apply_entries(self, tx: ApplyTransaction, entries: list[Entry], own: str, tables: Tables) -> int:
        """Apply journal entries (seq, clock, body) of the source in `tx`, except those that originated in this
        database (`own`: its UUID) and ops of tables not in `tables`; returns the documents put or deleted."""
        documents = 0
        source = self.source
        # Entries of nothing but puts into one table are gathered into runs across entries and journaled as they
        # came (`put_verbatim`): the common case costs one insert loop per run, not a call chain per entry.
        verbatim = self.batched and tables is None and tx.relays_verbatim
        run = Run()
        # Decoding a large entry makes many short-lived dicts; the cyclic collector would rescan them all
        # (3x slower) although none can form a cycle.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for _seq, _clock, body in entries:
                if verbatim and (single := single_put(body)) is not None:
                    origin, version, table, key, stored = single  # (an application's one-document commit)
                    if origin != own:
                        run.add_one(tx, body, version, table, key, stored)
                        documents += 1
                    continue
                (origin, version, ops), keys = read_keyed(body)
                if origin == own:
                    continue  # our own change coming back through a two-way pair: never re-apply it
                if verbatim:
                    added = run.add(tx, body, version, ops, keys)
                    if added:
                        documents += added
                        continue
                    run.flush(tx)  # another kind of entry: what came before it is written first
                ops = filter_ops(tables, ops)  # ops of other tables are skipped; the mark still passes the entry
                documents += op.document_count(ops)
                origin_bytes = self._origins.get(origin)
                if origin_bytes is None:
                    origin_bytes = self._origin_bytes(origin)
                tx.set_origin(origin_bytes, version, source)
                self.apply_ops(tx, ops, version, origin_bytes)
                tx.journal(origin, version)  # a relayed change keeps its origin
            run.flush(tx)
        finally:
            if collecting:
                gc.enable()
        self.stats["keyed_documents"] += run.keyed
        return documents

    def _origin_bytes(self, origin: str) -> bytes:
        """Parse an origin UUID (ValueError if it is not one) and remember it: a source relays few origins."""
        origin_bytes = uuid_module.UUID(origin).bytes
        if len(self._origins) >= ORIGINS_KEPT:
            self._origins.clear()  # bounded, whatever a stream carries
        self._origins[origin] = origin_bytes
        return origin_bytes

    def apply_ops(self, tx: ApplyTransaction, ops: list[Any], version: int, origin: bytes) -> None:
        """Apply an entry's ops in order (the transaction already carries their origin and version)."""
        if not self.batched:
            for item in ops:
                self.apply_op(tx, item, version, origin)
            return
        table = ""
        run: list[StoredDocument] = []
        for item in ops:
            if item.__class__ is list and len(item) == 4 and item[0] == op.PUT:
                name = item[1]
                if name != table or not run:
                    if run:
                        tx.put_documents(table, run)
                        run = []
                    table = name
                run.append(stored_document(item))
                continue
            if run:
                tx.put_documents(table, run)
                run = []
            self.apply_op(tx, item, version, origin)  # (another op may drop or re-create a table)
        if run:
            tx.put_documents(table, run)

    def apply_op(self, tx: ApplyTransaction, item: list[Any], version: int, origin: bytes) -> None:
        kind = item[0]
        if kind == op.PUT or kind == op.DELETE:
            if item[2].__class__ is not str:
                raise MalformedEntry("a document op must carry a key (str)")
            fields = document_fields(item[3]) if kind == op.PUT else None
            self.document(tx, item[1], item[2].encode(), fields, version, origin)
        elif kind == op.CREATE:
            tx.create_table(item[1])
        elif kind == op.DROP:
            self.drop(tx, item[1], version, origin)
        elif kind == op.EMPTY:
            self.empty(tx, item[1], version, origin)
        elif kind == op.ENSURE:
            tx.ensure_index(item[1], item[2], item[3])
        elif kind == op.DROP_INDEX:
            tx.drop_index(item[1], item[2])
        elif kind == op.COMPRESS:
            tx.set_compression(item[1], item[2], None if item[3] is None else base64.b64decode(item[3]))
        else:
            raise MalformedEntry(f"unknown op {kind!r}")

    def document(
        self, tx: ApplyTransaction, table: str, oid: bytes, fields: dict[str, Any] | None, version: int, origin: bytes
    ) -> None:
        tx.put(table, oid, fields)

    def drop(self, tx: ApplyTransaction, table: str, version: int, origin: bytes) -> None:
        tx.drop_table(table)

    def empty(self, tx: ApplyTransaction, table: str, version: int, origin: bytes) -> None:
        tx.empty_table(table)

    # --- snapshots -----------------------------------------------------------------------------------------------
    def replace(self, tx: ApplyTransaction, table: str) -> None:
        """At a snapshot's start: take away what the snapshot of this source replaces in `table`."""
        tx.drop_table(table)

    def stored(self, tx: ApplyTransaction, table: str, stored: StoredPairs, codec: Compressor | None) -> int:
        """A chunk of stored pairs; returns the documents it held."""
        return tx.load_stored(table, stored, self.source, codec)

    def documents(self, tx: ApplyTransaction, table: str, documents: list[fast_snapshot.Document]) -> int:
        """A snapshot's documents one by one (fields None: a tombstone); returns how many."""
        for oid, fields, version, origin in documents:
            if origin is None:
                origin, version = self.source, 0
            tx.set_origin(origin, version, self.source)
            self.document(tx, table, oid, fields, version, origin)
        return len(documents)


class OneWay(Applier):
    """A read-only copy of one source."""


class Aggregate(Applier):
    """A read-only copy of several sources: each one's snapshot, drop and empty touch only its own documents."""

    mode = "aggregate"
    restarts_journal = False

    def drop(self, tx: ApplyTransaction, table: str, version: int, origin: bytes) -> None:
        tx.remove_source_documents(table, self.source)

    def empty(self, tx: ApplyTransaction, table: str, version: int, origin: bytes) -> None:
        tx.remove_source_documents(table, self.source)

    def replace(self, tx: ApplyTransaction, table: str) -> None:
        tx.remove_source_documents(table, self.source)

    def stored(self, tx: ApplyTransaction, table: str, stored: StoredPairs, codec: Compressor | None) -> int:
        return self.documents(tx, table, fast_snapshot.stored_documents(stored, codec))


class TwoWay(Applier):
    """A writable pair: last writer wins by (version, origin); a change older than an emptying stays out."""

    mode = "two-way"
    restarts_journal = False
    batched = False

    def document(
        self, tx: ApplyTransaction, table: str, oid: bytes, fields: dict[str, Any] | None, version: int, origin: bytes
    ) -> None:
        # Compare before touching the table: a change older than a drop must not bring the table back.
        if tx.is_newer(table, oid, version, origin):
            tx.put(table, oid, fields)

    def drop(self, tx: ApplyTransaction, table: str, version: int, origin: bytes) -> None:
        tx.empty_older(table, version, origin, drop=True)  # documents the peer had not seen keep the table

    def empty(self, tx: ApplyTransaction, table: str, version: int, origin: bytes) -> None:
        tx.empty_older(table, version, origin)

    def replace(self, tx: ApplyTransaction, table: str) -> None:
        pass  # last writer wins, document by document

    def stored(self, tx: ApplyTransaction, table: str, stored: StoredPairs, codec: Compressor | None) -> int:
        return self.documents(tx, table, fast_snapshot.stored_documents(stored, codec))


APPLIERS: dict[str, type[Applier]] = {"one-way": OneWay, "two-way": TwoWay, "aggregate": Aggregate}


class Run:
    """Documents put into one table by consecutive entries, and those entries, to apply with `put_verbatim`."""

    __slots__ = ("table", "documents", "entries", "layout", "keyed")

    def __init__(self) -> None:
        self.table = ""
        self.documents: list[StoredDocument] = []
        self.entries: list[tuple[bytes, int]] = []
        self.layout: tuple[str, tuple[str, int] | None] | None = None  # a table's index_layout, while the run lasts
        self.keyed = 0  # documents taken with the index keys their entry carried

    def add(self, tx: ApplyTransaction, body: bytes, version: int, ops: list[Any], keys: Keys | None) -> int:
        """Take an entry if it is nothing but puts into one table: the documents it puts (a run into another table
        is written first); 0, taking nothing, for any other entry. The index keys the entry carries are used when
        they were computed with the definitions the table has here (the same token)."""
        first = ops[0] if ops else None
        if not (first.__class__ is list and len(first) == 4 and first[0] == op.PUT and first[1].__class__ is str):
            return 0
        table = first[1]
        for item in ops:
            if not (item.__class__ is list and len(item) == 4 and item[0] == op.PUT and item[1] == table):
                return 0
        if table != self.table:
            self.flush(tx)
            self.table = table
        layout = None
        if keys is not None:
            if self.layout is None or self.layout[0] != table:
                self.layout = (table, tx.index_layout(table))  # (kept until a flush: no run spans a schema change)
            layout = self.layout[1]
        taken: list[StoredDocument]
        if layout is not None and keys is not None and keys.tokens.get(table) == layout[0]:
            taken = list(map(stored_document, ops, split_keys(keys, layout[1], len(ops))))
            self.keyed += len(taken)
        else:
            taken = list(map(stored_document, ops))
        self.documents += taken
        self.entries.append((body, version))
        return len(taken)

    def add_one(self, tx: ApplyTransaction, body: bytes, version: int, table: str, key: str, stored: bytes) -> None:
        """Take an entry of one put (`entries.single_put`): `add` without the checks that one op has passed."""
        if table != self.table:
            self.flush(tx)
            self.table = table
        self.documents.append((key.encode(), stored, document_fields(stored)))
        self.entries.append((body, version))

    def flush(self, tx: ApplyTransaction) -> None:
        self.layout = None
        if self.entries:
            tx.put_verbatim(self.table, self.documents, self.entries)
            self.documents = []
            self.entries = []


def stored_document(item: list[Any], keys: IndexKeys | None = None) -> StoredDocument:
    """A put op (``["put", table, key, stored JSON bytes]``) as the storage seam takes it: (key, bytes, and the
    index keys its source computed or else the fields, decoded once to compute them); MalformedEntry for a key or
    document that is not one."""
    key, stored = item[2], item[3]
    if key.__class__ is not str or not key or stored.__class__ is not bytes:
        raise MalformedEntry("a put op must carry a key and a document")
    return key.encode(), stored, document_fields(stored) if keys is None else keys
