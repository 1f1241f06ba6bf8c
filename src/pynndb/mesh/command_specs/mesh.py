"""The mesh's built-in commands (handlers in `pynndb.mesh.commands`): their params, results and help text."""

from __future__ import annotations

from typing import Any, TypedDict

from pynndb.errors import InvalidArgument
from pynndb.mesh.command_specs.base import Spec, command, describe, specs_of

GROUP = "mesh"


class PingResult(TypedDict):
    pong: bool
    peer: str
    label: str
    time: float


class HelpResult(TypedDict):
    commands: dict[str, str]


class NodesResult(TypedDict):
    nodes: dict[str, dict[str, Any]]


class LinkResult(TypedDict):
    peer: str


class UnlinkResult(TypedDict):
    disconnected: bool


@command("PING", GROUP, "`{pong, peer, label, time}`", verb="ping")
class Ping:
    """Answer with the node's id, label and clock: proves the route and the node are alive."""


@command("LOOKUP", GROUP, "the directory entry, its id under `peer`", verb="lookup")
class Lookup:
    """The directory entry of a node (by label or id), its id under 'peer'."""

    name: str = describe("label or id of the node", positional=True)


@command("NODES", GROUP, "`{nodes: {id: entry}}`", verb="nodes")
class Nodes:
    """The whole directory as this node sees it, keyed by node id."""


@command("STATUS", GROUP, "health, links, counters; with replication, per database figures", verb="status")
class Status:
    """Node health, links, message counters; with replication, per database: sequence, journal range, replicas."""


@command("HELP", GROUP, "`{commands: {name: help}}`", verb="help")
class Help:
    """The help text of one command, or of every command the node has (services' commands included)."""

    command: str | None = describe("a command name (default: every command)", default=None, positional=True)


@command("CONNECT", GROUP, "`{peer}`", verb="link")
class Connect:
    """Link this node to another one (waits for the handshake); the result names the new peer."""

    address: str = describe("the other node's tcp://HOST:PORT1", positional=True)
    timeout: float = describe("seconds to wait for the handshake", default=5.0)


@command("DISCONNECT", GROUP, "`{disconnected: true}`", verb="unlink")
class Disconnect:
    """Remove a link, named by the other node's address or by its id or label (exactly one of them)."""

    address: str | None = describe("the other node's tcp://HOST:PORT1", default=None)
    peer: str | None = describe("the other node's id or label", default=None)

    def check(self) -> None:
        if (self.address is None) == (self.peer is None):
            raise InvalidArgument("give exactly one of 'address' or 'peer'")


SPECS: dict[str, Spec] = specs_of(Ping, Lookup, Nodes, Status, Help, Connect, Disconnect)
