"""A replica taking a snapshot, in storage: the writes of its begin, chunk and end messages, each in one apply
transaction (the replica keeps the state: which snapshot it takes, its progress).

The begin records the snapshot as under way (a restart asks for a new one), lets the mode's applier take away
what the snapshot replaces, and creates the source's tables with their indexes and compression; each chunk writes
stored pairs or documents; the end moves the mark to the snapshot's sequence and clears the record.

A one-way replica (`Applier.restarts_journal`) journals none of it: journaling every record of a snapshot would
double the replica's work. Its journal starts again at the end (`Replication.restart`): a replica of it then takes
a snapshot of it, and a change feed on it raises JournalTrimmed, as when a journal was trimmed past a reader.
"""

from __future__ import annotations

import uuid as uuid_module
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from pynndb.replication import fast_snapshot
from pynndb.replication.message_types import Reply, SnapshotAck
from pynndb.replication.table_filter import Tables, has_table

# Flow control of a snapshot: the replica asks for at most WINDOW chunks past the last one it acknowledged (each at
# most 1 MiB: core/bulk.py), so a snapshot of any size holds a few MiB in the queues of both nodes, not whatever part
# of the database the replica had not written yet. It acknowledges every WINDOW // 4 chunks, and again when no
# chunk came for ACK_AGAIN seconds.
WINDOW = 16
ACK_AGAIN = 0.5

if TYPE_CHECKING:
    from pynndb.core.storage import Storage
    from pynndb.replication.appliers import Applier
    from pynndb.replication.messages import SnapshotBegin, SnapshotChunk, SnapshotEnd


@dataclass
class Taking:
    """A snapshot a replica is taking: the message that began it and how many of its chunks came, in order. The
    mesh may lose a frame (a link cut mid-stream) and deliver the ones after it: a snapshot with a hole must never
    become the replica's content, so each chunk must be the next one and the end must count them all."""

    begin: SnapshotBegin
    chunks: int = 0
    heard_at: float = 0.0  # when the last chunk came (clock), for `ack_again`

    @property
    def seq(self) -> int:
        return self.begin.seq

    def accepts(self, message: SnapshotChunk | SnapshotEnd) -> bool:
        """Whether a chunk or end belongs to this snapshot (same sequence and stream)."""
        return message.seq == self.begin.seq and message.stream == self.begin.stream

    def arrived(self, chunk: SnapshotChunk) -> str:
        """'next' (write it), 'again' (a duplicate of one written: skip it) or 'gap' (one before it never came).
        Chunks of a source that does not number them (0) are all 'next'."""
        if chunk.number and chunk.number <= self.chunks:
            return "again"
        if chunk.number and chunk.number != self.chunks + 1:
            return "gap"
        self.chunks += 1
        return "next"

    def ack(self, replica: str, now: float) -> list[Reply]:
        """After a chunk: the acknowledgement of every chunk taken so far, every `window // 4` chunks, when the
        source keeps a window (said in the begin); nothing otherwise."""
        self.heard_at = now
        window = self.begin.window
        return [] if not window or self.chunks % max(1, window // 4) else self._taken(replica)

    def ack_again(self, replica: str, now: float) -> list[Reply]:
        """The acknowledgement of every chunk taken, when no chunk came for ACK_AGAIN seconds: an acknowledgement
        lost on the way (a link cut) would otherwise leave the source waiting for it until the request timed out."""
        if not self.begin.window or now - self.heard_at < ACK_AGAIN:
            return []
        self.heard_at = now
        return self._taken(replica)

    def _taken(self, replica: str) -> list[Reply]:
        return [SnapshotAck(self.begin.source, replica, self.begin.stream, self.chunks)]

    def complete(self, end: SnapshotEnd) -> bool:
        """Whether every chunk the end says was sent came (True when the source does not say)."""
        return end.chunks is None or end.chunks == self.chunks


def begin(storage: Storage, applier: Applier, source: str, tables: Tables, message: SnapshotBegin) -> None:
    """Prepare the replica's storage for the snapshot `message` begins."""
    for tx in storage.transactions(source):
        with tx:
            if applier.restarts_journal:
                tx.unjournaled()
            tx.set_origin(applier.source, 0, applier.source)
            tx.set_snapshot_marker(source, message.seq)
            for name in tx.table_names():
                if has_table(tables, name):  # a filtered replica's other tables are not the source's to replace
                    applier.replace(tx, name)
            for name, definition in message.tables.items():
                if not has_table(tables, name):
                    continue
                tx.create_table(name)
                fast_snapshot.set_compression(tx, name, message)
                for index_name, stored in definition.get("indexes", {}).items():
                    tx.ensure_index(name, index_name, stored)


def chunk(storage: Storage, applier: Applier, source: str, taking: SnapshotBegin, message: SnapshotChunk) -> int:
    """Write one chunk of the snapshot `taking`; returns the documents it held."""
    name = message.table
    stored = message.stored
    documents: list[fast_snapshot.Document] = []
    if stored is None:
        documents = _json_documents(message.documents if message.raw is None else orjson.loads(message.raw))
    count = 0
    for tx in storage.transactions(source):
        with tx:
            if applier.restarts_journal:
                tx.unjournaled()
            tx.create_table(name)
            tx.set_origin(applier.source, 0, applier.source)
            if stored is not None:
                count = applier.stored(tx, name, stored, fast_snapshot.source_compressor(taking, name))
            else:
                count = applier.documents(tx, name, documents)
    return count


def end(storage: Storage, applier: Applier, source: str, seq: int) -> None:
    """The snapshot at `seq` is complete: the mark moves there (and the journal starts again after a snapshot
    written without it)."""
    for tx in storage.transactions(source):
        with tx:
            tx.set_mark(source, seq)
            tx.set_snapshot_marker(source, None)
            if applier.restarts_journal:
                tx.restart_journal()


def _json_documents(documents: list[Any]) -> list[fast_snapshot.Document]:
    """A snapshot chunk's documents in the older JSON form ([key, fields or null, [clock, origin, ...] or null])."""
    found: list[fast_snapshot.Document] = []
    for key, fields, version in documents:
        if version is None:
            found.append((key.encode(), fields, 0, None))
        else:
            found.append((key.encode(), fields, version[0], uuid_module.UUID(version[1]).bytes))
    return found
