"""Compare two databases wherever they are in the mesh: digests first, documents only for tables that differ."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from pynndb.errors import CommandError, CommandTimeout
from pynndb.mesh.commands import BAD_PARAMS, NOT_FOUND
from pynndb.mesh.replication_info import holders
from pynndb.replication.digest import compare, only

Call = Callable[..., dict[str, Any]]
LOCATE_WAIT = 3.0


def locate(nodes: dict[str, dict[str, Any]], uuid: str) -> str | None:
    """The id of the live node most recently heard from that holds database `uuid`."""
    found = holders(nodes, uuid)
    return found[0] if found else None


def remote_diff(
    call: Call, uuids: list[str], timeout: float = 30.0, tables: Iterable[str] | None = None
) -> dict[str, Any]:
    """{} when the two databases hold the same content (of `tables` only, when given), a deepdiff report otherwise."""
    if not isinstance(uuids, (list, tuple)) or len(uuids) != 2 or not all(isinstance(u, str) for u in uuids):
        raise CommandError("diff needs a list of two database UUIDs", BAD_PARAMS)
    chosen = None if tables is None else list(tables)
    if chosen is not None and (not chosen or not all(isinstance(name, str) for name in chosen)):
        raise CommandError("diff's tables must be a non-empty list of table names", BAD_PARAMS)
    # The directory is spread by heartbeats: a database registered a moment ago may not be listed yet.
    deadline = time.monotonic() + min(timeout, LOCATE_WAIT)
    while True:
        nodes = call("NODES", timeout=timeout)["nodes"]
        missing = [uuid for uuid in uuids if locate(nodes, uuid) is None]
        if not missing:
            break
        if time.monotonic() >= deadline:
            raise CommandError(f"no node in the mesh holds database {missing[0]}", NOT_FOUND)
        time.sleep(0.05)
    answers = [_digest(call, holders(nodes, uuid), uuid, timeout) for uuid in uuids]

    def content(side: int, table: str) -> dict[str, Any]:
        return call("DUMP", {"uuid": uuids[side], "table": table}, target=answers[side][1], timeout=timeout)

    return compare(only(answers[0][0], chosen), only(answers[1][0], chosen), content)


def _digest(call: Call, candidates: list[str], uuid: str, timeout: float) -> tuple[dict[str, Any], str]:
    """DIGEST from the first holder that answers (a node that just died may still be listed as alive)."""
    for number, node_id in enumerate(candidates):
        last = number == len(candidates) - 1
        try:
            reply = call("DIGEST", {"uuid": uuid}, target=node_id, timeout=timeout if last else min(timeout, 3.0))
        except (CommandTimeout, CommandError):
            if last:
                raise
            continue
        return reply["tables"], node_id
    raise CommandError(f"no node in the mesh holds database {uuid}", NOT_FOUND)
