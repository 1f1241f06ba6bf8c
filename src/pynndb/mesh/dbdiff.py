"""Compare two databases wherever they are in the mesh: digests first, documents only for tables that differ."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pynndb.errors import CommandError
from pynndb.mesh.commands import BAD_PARAMS, NOT_FOUND
from pynndb.replication.digest import compare

Call = Callable[..., dict[str, Any]]
LOCATE_WAIT = 3.0


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
    # The directory is spread by heartbeats: a database registered a moment ago may not be listed yet.
    deadline = time.monotonic() + min(timeout, LOCATE_WAIT)
    while True:
        nodes = call("NODES", timeout=timeout)["nodes"]
        holders = [locate(nodes, uuid) for uuid in uuids]
        missing = [uuid for uuid, holder in zip(uuids, holders, strict=True) if holder is None]
        if not missing:
            break
        if time.monotonic() >= deadline:
            raise CommandError(f"no node in the mesh holds database {missing[0]}", NOT_FOUND)
        time.sleep(0.05)
    summaries = [
        call("DIGEST", {"uuid": uuid}, target=node_id, timeout=timeout)["tables"]
        for uuid, node_id in zip(uuids, holders, strict=True)
    ]

    def content(side: int, table: str) -> dict[str, Any]:
        return call("DUMP", {"uuid": uuids[side], "table": table}, target=holders[side], timeout=timeout)

    return compare(summaries[0], summaries[1], content)
