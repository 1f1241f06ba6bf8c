"""The replication service's command handlers: REGISTER, UNREGISTER, REPLICATE, UNREPLICATE, STOP, START, DIGEST,
DUMP, DATABASES, VERIFY, RESYNC and the per-database part of STATUS.

Params arrive validated against `pynndb.mesh.command_specs.replication`; handlers run on the node's command
workers and only call the service's public methods (which queue work for its thread, or read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pynndb.errors import CommandError
from pynndb.mesh.commands import BAD_PARAMS, NOT_FOUND, Handler
from pynndb.mesh.pinned_digests import PinnedDigests
from pynndb.replication.digest import sequenced_summary, table_content
from pynndb.replication.replica import check_filter
from pynndb.replication.table_filter import listed, tables_of

if TYPE_CHECKING:
    from pynndb.core.database import Database
    from pynndb.mesh.controller import Controller
    from pynndb.mesh.replication_holdings import Hosted, Source
    from pynndb.mesh.replicator import ReplicationService

Params = dict[str, Any]
DEFAULT_TICKET_WAIT = 10.0  # seconds DIGEST waits for a ticket's digest when not told


def journaled(db: Database) -> None:
    """REGISTER's check: a source must keep a journal."""
    if not db.replication.enabled:
        message = f"{db.path} does not keep a journal: open it with config={{'replication': True}}"
        raise CommandError(message, BAD_PARAMS)


class ReplicationCommands:
    """The handlers of one service; ``install`` registers them on its node."""

    def __init__(self, service: ReplicationService) -> None:
        self.service = service
        self.digests = PinnedDigests(service.node.label)  # DIGEST's pins and tickets
        self._builtin_status: Handler | None = None

    def install(self, node: Controller) -> None:
        """Register every handler (STATUS wraps the node's built-in one)."""
        divergence = self.service.divergence
        for name, handler in [
            ("REGISTER", self.register),
            ("UNREGISTER", self.unregister),
            ("REPLICATE", self.replicate),
            ("UNREPLICATE", self.unreplicate),
            ("STOP", self.stop),
            ("START", self.start),
            ("DIGEST", self.digest),
            ("DUMP", self.dump),
            ("DATABASES", self.databases),
            ("VERIFY", divergence.cmd_verify),
            ("RESYNC", divergence.cmd_resync),
        ]:
            node.register_command(name, handler)
        builtin_status = node.command("STATUS")
        self._builtin_status = builtin_status.handler if builtin_status is not None else None
        node.register_command("STATUS", self.status)

    def register(self, params: Params, context: Params) -> Params:
        """REGISTER {'path'}: serve this database (opened with replication on) as a source to the mesh."""
        with self.service.holdings.open_checked(params["path"], journaled) as db:
            self.service.register(db)
            return {"uuid": db.replication.uuid, "path": db.path, "sequence": db.replication.sequence}

    def unregister(self, params: Params, context: Params) -> Params:
        """UNREGISTER {'path'}: stop serving this database as a source (replicas keep what they have)."""
        with self.service.holdings.opened(params["path"]) as db:  # (not opened for nothing: it would stay open)
            if db is None or not self.service.unregister(db):
                raise CommandError(f"{params['path']} is not registered on this node", NOT_FOUND)
            return {"uuid": db.replication.uuid, "unregistered": True}

    def replicate(self, params: Params, context: Params) -> Params:
        """REPLICATE {'path', 'uuid', 'mode'?, 'tables'?}: make the database at path a replica of database uuid.

        mode: 'one-way' (read-only copy), 'two-way' (a writable pair), or 'auto' (default: two-way when the
        source already replicates this database, which also turns that side into two-way, with the same tables).
        tables: only these tables; another filter for a registered replica is refused (filter_conflict)."""
        service = self.service
        source, mode, tables = params["uuid"], params.get("mode", "auto"), params.get("tables")

        def acceptable(db: Database) -> None:  # (checked before the other side of a pair is changed)
            if source == db.replication.uuid:
                raise CommandError("a database cannot replicate itself", BAD_PARAMS)
            check_filter(db, source, tables_of(tables))

        with service.holdings.open_checked(params["path"], acceptable) as db:
            reverse = service.replica_holder(source, db.replication.uuid)
            if mode == "auto":
                mode = "two-way" if reverse is not None else "one-way"
            if mode == "two-way":
                if not db.replication.enabled:
                    db.replication.enable(True)
                if reverse is not None:
                    node_id, other_path = reverse
                    other = {"path": other_path, "uuid": db.replication.uuid, "mode": "two-way"}
                    if tables is not None:
                        other["tables"] = tables
                    service.node.call("REPLICATE", other, target=node_id)
            replica = service.replicate(db, source, mode, tables)
            result = {"path": db.path, "uuid": db.replication.uuid, "source": source, "mode": replica.mode}
            return {**result, "tables": listed(replica.tables)}

    def unreplicate(self, params: Params, context: Params) -> Params:
        """UNREPLICATE {'path', 'uuid'}: stop replicating database uuid into path (its data stays)."""
        source = params["uuid"]
        with self.service.holdings.opened(params["path"]) as db:  # (not opened for nothing: it would stay open)
            if db is None or not self.service.unreplicate(db, source):
                raise CommandError(f"{params['path']} does not replicate {source} on this node", NOT_FOUND)
            return {"path": db.path, "source": source, "unreplicated": True}

    def stop(self, params: Params, context: Params) -> Params:
        """STOP {'path'?, 'uuid'?}: pause matching replicas (all on this node by default); they keep their mark."""
        chosen = self.service.holdings.select(params)
        for hosted in chosen:
            hosted.paused = True
        return {"paused": len(chosen)}

    def start(self, params: Params, context: Params) -> Params:
        """START {'path'?, 'uuid'?}: resume paused replicas from where they stood."""
        chosen = self.service.holdings.select(params)
        for hosted in chosen:
            if hosted.paused:
                hosted.paused = False
                self.service.queue_requests(hosted.replica.start())
        self.service.wake()
        return {"resumed": len(chosen)}

    def digest(self, params: Params, context: Params) -> Params:
        """DIGEST {'uuid', 'pin'?, 'ticket'?, 'wait'?}: per table index definitions, record count and content digest
        of a database here, and the journal sequence they were taken at (one read transaction). With pin: the
        sequence and a ticket once that transaction is open; with ticket: that digest when done (pinned_digests)."""
        holdings = self.service.holdings
        with holdings.leased(params["uuid"]) as db:
            uuid = db.replication.uuid
            digests = self.digests
            if params.get("ticket") is not None:
                sequence, tables = digests.result(uuid, params["ticket"], params.get("wait") or DEFAULT_TICKET_WAIT)
            elif params.get("pin"):
                holdings.lease(db)  # (the digest goes on after this answer, on a digest worker)
                sequence, ticket = digests.pin(db, lambda: holdings.unlease(db))
                return {"uuid": uuid, "sequence": sequence, "ticket": ticket}
            else:
                sequence, tables = sequenced_summary(db)
            return {"uuid": uuid, "sequence": sequence, "tables": tables}

    def dump(self, params: Params, context: Params) -> Params:
        """DUMP {'uuid', 'table'}: one table's index definitions and documents (for diff)."""
        with self.service.holdings.leased(params["uuid"]) as db:
            return table_content(db, params["table"])

    def databases(self, params: Params, context: Params) -> Params:
        """DATABASES: the databases this node serves and replicates, with their figures."""
        return {"databases": self.figures()}

    def status(self, params: Params, context: Params) -> Params:
        """STATUS: node health, links, message counters, and per database: sequence, journal range, replicas."""
        result = dict(self._builtin_status(params, context)) if self._builtin_status else {}
        result["databases"] = self.figures()
        divergence = self.service.divergence.counters
        result["replication"] = {**self.service.counters, **{f"verify_{k}": v for k, v in divergence.items()}}
        return result

    def figures(self) -> dict[str, Any]:
        """Per database path: uuid, sequence, retained journal range, role, and each replica's status."""
        with self.service.holdings.leased_snapshot() as (databases, served, hosted_list):
            return self._figures(databases, served, hosted_list)

    def _figures(self, databases: list[Database], served: list[Source], hosted_list: list[Hosted]) -> dict[str, Any]:
        sources = {source.publisher.uuid for source in served}
        result: dict[str, Any] = {}
        for db in databases:
            if db.closed:
                continue
            first, last = db.replication.retained
            result[db.path] = {
                "uuid": db.replication.uuid,
                "sequence": last,
                "retained": [first, last],
                "source": db.replication.uuid in sources,
                "read_only": db.replication.read_only,
                "replicas": [],
            }
        for hosted in hosted_list:
            entry = result.get(hosted.replica.db.path)
            if entry is not None:
                status = hosted.replica.status()
                status["paused"] = hosted.paused
                status.update(self.service.divergence.status(hosted.replica))
                entry["replicas"].append(status)
        return result
