"""Typed verbs over ``call``: one method per command spec, so ``cmd.replicate(path, uuid, target='b')`` replaces
``cmd.call('REPLICATE', {...}, target='b')``. The node validates the params (``bad_params`` on a mistake).
"""

from __future__ import annotations

from typing import Any, cast

from pynndb.mesh.command_specs.mesh import HelpResult, LinkResult, NodesResult, PingResult, UnlinkResult
from pynndb.mesh.command_specs.replication import (
    DatabasesResult,
    DigestResult,
    DumpResult,
    Mode,
    PauseResult,
    RegisterResult,
    ReplicateResult,
    ResumeResult,
    ResyncResult,
    UnregisterResult,
    UnreplicateResult,
    VerifyResult,
)


class CommandVerbs:
    """Mixed into `Plugin`; ``target`` is a node id or label (default: the node connected to)."""

    def call(
        self, command: str, params: dict[str, Any] | None = None, target: str | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        raise NotImplementedError

    def _run(self, command: str, params: dict[str, Any], target: str | None, timeout: float) -> Any:
        return self.call(command, {name: value for name, value in params.items() if value is not None}, target, timeout)

    # --- mesh -----------------------------------------------------------------------------------------------
    def ping(self, target: str | None = None, timeout: float = 5.0) -> PingResult:
        """The node's id (``peer``), label and clock."""
        return cast(PingResult, self._run("PING", {}, target, timeout))

    def lookup(self, name: str, target: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """The directory entry of the node labelled (or with id) `name`; its id is under ``peer``."""
        return cast(dict[str, Any], self._run("LOOKUP", {"name": name}, target, timeout))

    def nodes(self, target: str | None = None, timeout: float = 5.0) -> dict[str, dict[str, Any]]:
        """The whole directory, keyed by node id."""
        return cast(NodesResult, self._run("NODES", {}, target, timeout))["nodes"]

    def status(self, target: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Health, links, counters and (with replication) per database figures of the node."""
        return cast(dict[str, Any], self._run("STATUS", {}, target, timeout))

    def help(self, command: str | None = None, target: str | None = None, timeout: float = 5.0) -> dict[str, str]:
        """Help text by command name (of one command, or of all)."""
        return cast(HelpResult, self._run("HELP", {"command": command}, target, timeout))["commands"]

    def link(self, address: str, timeout: float | None = None, target: str | None = None) -> str:
        """Link the node to the node at `address` (tcp://HOST:PORT1), waiting up to `timeout` s (default 5) for
        the handshake; returns the new peer's id."""
        reply = self._run("CONNECT", {"address": address, "timeout": timeout}, target, (timeout or 5.0) + 5.0)
        return cast(LinkResult, reply)["peer"]

    def unlink(
        self, address: str | None = None, peer: str | None = None, target: str | None = None, timeout: float = 5.0
    ) -> UnlinkResult:
        """Remove the node's link to `address` or to `peer` (an id or label): give exactly one."""
        return cast(UnlinkResult, self._run("DISCONNECT", {"address": address, "peer": peer}, target, timeout))

    # --- replication ----------------------------------------------------------------------------------------
    def register(self, path: str, target: str | None = None, timeout: float = 10.0) -> RegisterResult:
        """Serve the database at `path` (on the target node) as a source."""
        return cast(RegisterResult, self._run("REGISTER", {"path": path}, target, timeout))

    def unregister(self, path: str, target: str | None = None, timeout: float = 10.0) -> UnregisterResult:
        """Stop serving the database at `path` as a source."""
        return cast(UnregisterResult, self._run("UNREGISTER", {"path": path}, target, timeout))

    def replicate(
        self,
        path: str,
        uuid: str,
        mode: Mode | None = None,
        tables: list[str] | None = None,
        target: str | None = None,
        timeout: float = 10.0,
    ) -> ReplicateResult:
        """Make the database at `path` a replica of database `uuid` (mode: auto, one-way or two-way), of only
        `tables` when given."""
        params = {"path": path, "uuid": uuid, "mode": mode, "tables": None if tables is None else list(tables)}
        return cast(ReplicateResult, self._run("REPLICATE", params, target, timeout))

    def unreplicate(self, path: str, uuid: str, target: str | None = None, timeout: float = 10.0) -> UnreplicateResult:
        """Stop replicating database `uuid` into `path` (its data stays)."""
        return cast(UnreplicateResult, self._run("UNREPLICATE", {"path": path, "uuid": uuid}, target, timeout))

    def pause(
        self, path: str | None = None, uuid: str | None = None, target: str | None = None, timeout: float = 10.0
    ) -> int:
        """Pause the node's replicas (those at `path` / of source `uuid`); returns how many."""
        return cast(PauseResult, self._run("STOP", {"path": path, "uuid": uuid}, target, timeout))["paused"]

    def resume(
        self, path: str | None = None, uuid: str | None = None, target: str | None = None, timeout: float = 10.0
    ) -> int:
        """Resume paused replicas from where they stood; returns how many matched."""
        return cast(ResumeResult, self._run("START", {"path": path, "uuid": uuid}, target, timeout))["resumed"]

    def digest(
        self,
        uuid: str,
        pin: bool = False,
        ticket: int | None = None,
        wait: float | None = None,
        target: str | None = None,
        timeout: float = 30.0,
    ) -> DigestResult:
        """Per table definitions, record count and content digest of database `uuid`, and their sequence. With
        `pin`: the sequence and a ticket at once (the digest is read meanwhile); with `ticket`: that digest."""
        params = {"uuid": uuid, "pin": pin or None, "ticket": ticket, "wait": wait}  # (`_run` drops the Nones)
        return cast(DigestResult, self._run("DIGEST", params, target, timeout))

    def dump(self, uuid: str, table: str, target: str | None = None, timeout: float = 30.0) -> DumpResult:
        """One table's index definitions and documents."""
        return cast(DumpResult, self._run("DUMP", {"uuid": uuid, "table": table}, target, timeout))

    def verify_replicas(
        self, path: str | None = None, uuid: str | None = None, timeout: float | None = None, target: str | None = None
    ) -> list[dict[str, Any]]:
        """Compare the node's one-way replicas (those at `path` / of source `uuid`) with their sources now, waiting
        up to `timeout` s (default 10) for the checks; returns their status."""
        reply = self._run("VERIFY", {"path": path, "uuid": uuid, "timeout": timeout}, target, (timeout or 10.0) + 5.0)
        return cast(VerifyResult, reply)["replicas"]

    def resync(self, path: str, uuid: str, target: str | None = None, timeout: float = 10.0) -> int:
        """Replace the content of the replica at `path` by a fresh snapshot of `uuid`; returns how many replicas."""
        return cast(ResyncResult, self._run("RESYNC", {"path": path, "uuid": uuid}, target, timeout))["resyncing"]

    def databases(self, target: str | None = None, timeout: float = 10.0) -> dict[str, dict[str, Any]]:
        """Figures of the databases the node serves and replicates, by path."""
        return cast(DatabasesResult, self._run("DATABASES", {}, target, timeout))["databases"]
