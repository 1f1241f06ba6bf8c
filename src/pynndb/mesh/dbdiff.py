"""Compare two databases wherever they are in the mesh: digests first, documents only for tables that differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pynndb.errors import CommandError
from pynndb.mesh.commands import BAD_PARAMS, NOT_FOUND
from pynndb.replication.digest import compare

Call = Callable[..., dict[str, Any]]


def locate(nodes: dict[str, dict[str, Any]], uuid: str) -> str | None:
    """The id of a live node that holds database `uuid` (as a source or a replica)."""
    for node_id, entry in nodes.items():
        if not entry.get("alive", True):
            continue
        info = (entry.get("services") or {}).get("replication") or {}
        if uuid in info.get("sources", {}) or uuid in info.get("replicas", {}):
            return node_id
    return None


def remote_diff(call: Call, uuids: list[str], timeout: float = 30.0) -> dict[str, Any]:
    """{} when the two databases hold the same content, a deepdiff report otherwise."""
    if not isinstance(uuids, (list, tuple)) or len(uuids) != 2 or not all(isinstance(u, str) for u in uuids):
        raise CommandError("diff needs a list of two database UUIDs", BAD_PARAMS)
    nodes = call("NODES", timeout=timeout)["nodes"]
    holders = []
    for uuid in uuids:
        node_id = locate(nodes, uuid)
        if node_id is None:
            raise CommandError(f"no node in the mesh holds database {uuid}", NOT_FOUND)
        holders.append(node_id)
    summaries = [
        call("DIGEST", {"uuid": uuid}, target=node_id, timeout=timeout)["tables"]
        for uuid, node_id in zip(uuids, holders, strict=True)
    ]

    def content(side: int, table: str) -> dict[str, Any]:
        return call("DUMP", {"uuid": uuids[side], "table": table}, target=holders[side], timeout=timeout)

    return compare(summaries[0], summaries[1], content)
