"""Replication engine (sans-IO): journal publisher, replica applier, snapshots, digests; no sockets here."""

from pynndb.replication.digest import diff, digest, summary
from pynndb.replication.local import LocalReplicator
from pynndb.replication.messages import (
    Entries,
    Request,
    SnapshotAck,
    SnapshotBegin,
    SnapshotChunk,
    SnapshotEnd,
    decode,
    encode,
)
from pynndb.replication.replica import Replica, register, registrations, unregister
from pynndb.replication.source import Publisher, snapshot

__all__ = [
    "Entries",
    "LocalReplicator",
    "Publisher",
    "Replica",
    "Request",
    "SnapshotAck",
    "SnapshotBegin",
    "SnapshotChunk",
    "SnapshotEnd",
    "decode",
    "diff",
    "digest",
    "encode",
    "register",
    "registrations",
    "snapshot",
    "summary",
    "unregister",
]
