"""The replication info a node advertises in its directory entry (``services.replication``), as typed values.

One place reads and writes its shape (PROTOCOL.md, "directory"): the service announces a `ReplicationInfo`, and
everyone who looks for a source's owner, a source's latest sequence or a database's holders reads it from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

SERVICE = "replication"  # the key under ``services`` of a directory entry


@dataclass(frozen=True)
class SourceInfo:
    """A database a node serves: its path there, the last sequence published and that entry's clock."""

    path: str
    seq: int = 0
    clock: int = 0


@dataclass(frozen=True)
class ReplicaSourceInfo:
    """One source a replica database follows: the mode and the replica's mark."""

    mode: str
    hwm: int = 0


@dataclass(frozen=True)
class ReplicaInfo:
    """A replica database a node hosts: its path there and the sources it follows, by source uuid."""

    path: str
    sources: dict[str, ReplicaSourceInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplicationInfo:
    """What a node serves (``sources`` by uuid) and replicates (``replicas`` by replica database uuid)."""

    sources: dict[str, SourceInfo] = field(default_factory=dict)
    replicas: dict[str, ReplicaInfo] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape announced in the directory entry."""
        return {
            "sources": {
                uuid: {"path": source.path, "seq": source.seq, "clock": source.clock}
                for uuid, source in self.sources.items()
            },
            "replicas": {
                uuid: {
                    "path": replica.path,
                    "sources": {name: {"mode": s.mode, "hwm": s.hwm} for name, s in replica.sources.items()},
                }
                for uuid, replica in self.replicas.items()
            },
        }

    @classmethod
    def from_wire(cls, raw: Any) -> ReplicationInfo:
        """Read an announced value; parts of the wrong shape (another version, a damaged entry) are left out."""
        if not isinstance(raw, Mapping):
            return EMPTY
        sources: dict[str, SourceInfo] = {}
        for uuid, value in _mapping(raw.get("sources")).items():
            if isinstance(value, Mapping):
                sources[uuid] = SourceInfo(str(value.get("path", "")), _int(value.get("seq")), _int(value.get("clock")))
        replicas: dict[str, ReplicaInfo] = {}
        for uuid, value in _mapping(raw.get("replicas")).items():
            if not isinstance(value, Mapping):
                continue
            followed = {
                name: ReplicaSourceInfo(str(state.get("mode", "")), _int(state.get("hwm")))
                for name, state in _mapping(value.get("sources")).items()
                if isinstance(state, Mapping)
            }
            replicas[uuid] = ReplicaInfo(str(value.get("path", "")), followed)
        return cls(sources, replicas)

    @classmethod
    def of_entry(cls, entry: Mapping[str, Any]) -> ReplicationInfo:
        """The replication info in a directory entry (empty if the node advertises none)."""
        services = entry.get("services")
        return cls.from_wire(services.get(SERVICE) if isinstance(services, Mapping) else None)


EMPTY = ReplicationInfo()


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


Directory = Mapping[str, Mapping[str, Any]]  # node id -> directory entry, as ``Controller.directory()`` returns


def advertised(nodes: Directory, alive_only: bool = False) -> Iterator[tuple[str, Mapping[str, Any], ReplicationInfo]]:
    """(node id, entry, replication info) of every node in a directory (live ones only with ``alive_only``)."""
    for node_id, entry in nodes.items():
        if alive_only and not entry.get("alive", True):
            continue
        yield node_id, entry, ReplicationInfo.of_entry(entry)


def source_owners(nodes: Directory) -> dict[str, str]:
    """Source uuid -> id of the live node serving it; a restarted node's old entry lingers: the one heard from last
    wins."""
    owners: dict[str, str] = {}
    heard: dict[str, float] = {}
    for node_id, entry, info in advertised(nodes, alive_only=True):
        seen = float(entry.get("last_seen", 0.0))
        for uuid in info.sources:
            if seen >= heard.get(uuid, -1.0):
                owners[uuid], heard[uuid] = node_id, seen
    return owners


def source_progress(nodes: Directory) -> tuple[dict[str, int], dict[str, int]]:
    """Source uuid -> the highest sequence, and the highest clock, any node advertises for it."""
    sequences: dict[str, int] = {}
    clocks: dict[str, int] = {}
    for _node_id, _entry, info in advertised(nodes):
        for uuid, source in info.sources.items():
            sequences[uuid] = max(sequences.get(uuid, 0), source.seq)
            clocks[uuid] = max(clocks.get(uuid, 0), source.clock)
    return sequences, clocks


def replica_holder(nodes: Directory, target: str, source: str) -> tuple[str, str] | None:
    """(node id, path) of database ``target`` if some node advertises it replicating ``source``."""
    for node_id, _entry, info in advertised(nodes):
        replica = info.replicas.get(target)
        if replica is not None and source in replica.sources:
            return node_id, replica.path
    return None


def holders(nodes: Directory, uuid: str) -> list[str]:
    """Ids of the live nodes that hold database ``uuid`` (as a source or a replica), most recently heard first.

    A node that restarted has a new id; its old entry stays in directories until it is marked gone."""
    found = [
        (float(entry.get("last_seen", 0.0)), node_id)
        for node_id, entry, info in advertised(nodes, alive_only=True)
        if uuid in info.sources or uuid in info.replicas
    ]
    return [node_id for _seen, node_id in sorted(found, reverse=True)]
