"""Services plug into a node: each is made by a factory given the started `Controller` (before its loop runs, so
its commands answer from the first request) and stopped before the node leaves the mesh.

A service uses only the Controller's service API (`register_command`, `subscribe`, `on_message`, `send`,
`publish`, `set_service_info`, `directory`, `call`, `on_peer_change`, and `run_task`/`stop_task` for work that runs
on the node's socket loop, see `loop.LoopTask`). Every node runs the default services
unless it is given others: ``Controller(..., services={})`` is a bare mesh node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pynndb.mesh.controller import Controller


class Service(Protocol):
    """A running service of one node."""

    def stop(self) -> None:
        """Release the service's threads and resources (the node is stopping)."""


ServiceFactory = Callable[["Controller"], Service]
Services = Mapping[str, ServiceFactory]


def default_services() -> dict[str, ServiceFactory]:
    """What every node serves unless told otherwise: replication (REGISTER, REPLICATE, STATUS figures, ...)."""
    from pynndb.mesh.replicator import ReplicationService  # imported when a node starts: it pulls in replication/

    return {"replication": ReplicationService}
