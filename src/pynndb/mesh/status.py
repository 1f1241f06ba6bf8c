"""STATUS of a node as its engine sees it (the `NodeLoop.status` answer; services add their own parts)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pynndb import _native

if TYPE_CHECKING:
    from pynndb.mesh.engine import Engine


def node_status(engine: Engine) -> dict[str, Any]:
    """STATUS of a node: health, links, counters, callback and request figures."""
    with engine.lock:
        nodes = engine.directory.snapshot()
    config = engine.config
    return {
        "peer": config.id,
        "label": config.label,
        "address": config.address,
        "health": "ok",
        "secure": config.keys is not None,
        "build": _native.MODE,  # the mesh's hot path compiled or its Python sources (see pynndb._native)
        "links": engine.links.describe(),
        "nodes": len(nodes),
        "alive": sum(1 for entry in nodes.values() if entry["alive"]),
        "counters": dict(engine.counters),
        "callback_backlog": engine.delivery.pool.backlog(),
        "callbacks_dropped": engine.delivery.pool.dropped,
        "callbacks_failed": engine.delivery.pool.failed,
        "pending_requests": len(engine.requests.pending),
        "command_results": engine.requests.results_by_command(),
        "seen_cache": len(engine.seen),
    }
