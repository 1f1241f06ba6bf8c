"""The source side of replication (sans-IO): new journal entries to publish, and answers to replicas' requests.

A request for entries the journal still holds is answered with those entries; otherwise with a snapshot taken in
one read transaction at sequence S (the ZeroMQ guide's "Clone" pattern), after which entries from S + 1 follow.
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Iterator
from dataclasses import replace
from operator import itemgetter
from typing import TYPE_CHECKING

from pynndb.core.journal import Version
from pynndb.core.snapshot_read import SnapshotRead
from pynndb.core.storage import Storage
from pynndb.errors import ReplicationNotEnabled
from pynndb.replication import fast_snapshot
from pynndb.replication.messages import Entries, Message, Request, SnapshotBegin, SnapshotChunk, SnapshotEnd

if TYPE_CHECKING:
    from pynndb.core.database import Database

SnapshotMessage = SnapshotBegin | SnapshotChunk | SnapshotEnd
BATCH_ENTRIES = 2000
BATCH_BYTES = 1 << 20
CHUNK_BYTES = 1 << 20


def version_json(version: Version | None) -> bytes:
    if version is None:
        return b"null"
    origin = uuid_module.UUID(bytes=version.origin)
    source = uuid_module.UUID(bytes=version.source)
    return b'[%d,"%s","%s"]' % (version.clock, str(origin).encode(), str(source).encode())


class Publisher:
    """Turns a source database's journal into `Entries` messages and answers `Request`s."""

    def __init__(
        self,
        db: Database,
        batch_entries: int = BATCH_ENTRIES,
        batch_bytes: int = BATCH_BYTES,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        if not db.replication.enabled:
            raise ReplicationNotEnabled(f"{db.path}: open it with config={{'replication': True}} to replicate it")
        self.db = db
        self.uuid = db.replication.uuid
        self.batch_entries = batch_entries
        self.batch_bytes = batch_bytes
        self.chunk_bytes = chunk_bytes
        self.published = db.replication.sequence
        latest = db.replication.entries(self.published, 1) if self.published else []
        self.published_clock = latest[0][1] if latest else 0  # the time of the latest entry (for replicas' lag)

    def poll(self, max_messages: int = 64) -> list[Entries]:
        """Entries committed since the last poll, in batches (at most `max_messages` of them)."""
        messages: list[Entries] = []
        while len(messages) < max_messages:
            batch = self.db.replication.entries(self.published + 1, self.batch_entries, self.batch_bytes)
            if not batch:
                break
            if batch[0][0] != self.published + 1:
                # The journal was trimmed past what we published (a long pause): replicas will ask for the rest.
                self.published = batch[0][0] - 1
            self.published = batch[-1][0]
            self.published_clock = batch[-1][1]
            messages.append(Entries(self.uuid, batch, self.published))
            if len(batch) < self.batch_entries and sum(map(len, map(itemgetter(2), batch))) < self.batch_bytes:
                break  # the journal's end, not a batch's limit: no second read transaction to find nothing
        return messages

    def needs_snapshot(self, request: Request, retained: tuple[int, int] | None = None) -> bool:
        """Whether `serve` answers `request` with a snapshot: asked for, or the entries it wants are gone (`retained`:
        the journal's (first, last), read now when not given). A trim while entries are sent turns their answer into
        a snapshot too."""
        first, last = self.db.replication.retained if retained is None else retained
        return request.snapshot or request.start < first or request.start > last + 1

    def serve(self, request: Request) -> Iterator[Message]:
        """Answer a replica: the entries from `request.start` up to now, or a snapshot when they are gone."""
        retained = self.db.replication.retained
        if self.needs_snapshot(request, retained):
            yield from self._snapshot(request)
            return
        last = retained[1]
        start = request.start
        if start > last:
            yield Entries(self.uuid, [], last)  # nothing new: says so, so a resuming replica knows it is current
            return
        while start <= last:
            batch = self.db.replication.entries(start, self.batch_entries, self.batch_bytes)
            if not batch or batch[0][0] != start:
                yield from self._snapshot(request)  # trimmed while we were sending
                return
            yield Entries(self.uuid, batch, last)
            start = batch[-1][0] + 1

    def _snapshot(self, request: Request) -> Iterator[Message]:
        """A snapshot answering `request`: every message carries the request's stream, so a replica that asked
        again meanwhile can tell this (older) answer from the one it waits for."""
        return snapshot(self.db, self.chunk_bytes, tables=request.tables, stream=request.stream, window=request.window)


def snapshot(
    db: Database,
    chunk_bytes: int = CHUNK_BYTES,
    stored: bool = True,
    tables: list[str] | None = None,
    stream: int = 0,
    window: int = 0,
) -> Iterator[SnapshotMessage]:
    """A consistent snapshot of `db`: definitions, then each table's content in bounded chunks, then the end.

    With `stored` (the default) chunks carry the stored key/value pairs of records, tombstones and index entries
    (see fast_snapshot); otherwise documents as JSON `[key, fields or null, version or null]` (the older form).
    With `tables`, only those tables (for a filtered replica). Every message carries `stream` (the request's); the
    begin says `window` (the request's: whoever sends the chunks keeps to it, see mesh/replication_serving.py).
    """
    source = db.replication.uuid
    with Storage(db).read() as view:
        seq = view.last_sequence()
        definitions = view.definitions(tables)
        present = set(view.table_names())
        names = [name for name in definitions if name in present]
        documents = sum(view.count(name) for name in names)
        yield SnapshotBegin(source, seq, definitions, documents, view.dictionaries(definitions), stream, window)
        number = 0  # chunks are numbered and the end says how many: a replica takes no snapshot with a hole
        for name in names:
            if stored:
                chunks = fast_snapshot.table_chunks(view, name, source, seq, chunk_bytes)
            else:
                chunks = _json_chunks(view, source, seq, name, chunk_bytes)
            for chunk in chunks:
                number += 1
                yield replace(chunk, stream=stream, number=number)
        yield SnapshotEnd(source, seq, stream, number)


def _json_chunks(view: SnapshotRead, source: str, seq: int, name: str, chunk_bytes: int) -> Iterator[SnapshotChunk]:
    parts: list[bytes] = []
    size = 0
    for oid, doc, version in view.json_documents(name):
        parts.append(b'["%b",%b,%b]' % (oid, doc, version_json(version)))
        size += len(doc) + 64
        if size >= chunk_bytes:
            yield SnapshotChunk(source, seq, name, raw=b"[" + b",".join(parts) + b"]")
            parts, size = [], 0
    for oid, version in view.tombstones(name):
        parts.append(b'["%b",null,%b]' % (oid, version_json(version)))
    if parts:
        yield SnapshotChunk(source, seq, name, raw=b"[" + b",".join(parts) + b"]")
