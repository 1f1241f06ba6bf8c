"""The replication service's commands (handlers in `pynndb.mesh.replicator` and `pynndb.mesh.divergence`).

STATUS (a mesh command) is extended by the service with per database figures.
"""

from __future__ import annotations

import uuid as uuid_module
from typing import Any, Literal, TypedDict

from pynndb.errors import InvalidReplication
from pynndb.mesh.command_specs.base import Spec, command, describe, specs_of
from pynndb.replication.table_filter import tables_of

GROUP = "replication"
Mode = Literal["auto", "one-way", "two-way"]


class RegisterResult(TypedDict):
    uuid: str
    path: str
    sequence: int


class UnregisterResult(TypedDict):
    uuid: str
    unregistered: bool


class ReplicateResult(TypedDict):
    path: str
    uuid: str
    source: str
    mode: str
    tables: list[str] | None


class UnreplicateResult(TypedDict):
    path: str
    source: str
    unreplicated: bool


class PauseResult(TypedDict):
    paused: int


class ResumeResult(TypedDict):
    resumed: int


class DigestResult(TypedDict, total=False):
    uuid: str
    sequence: int
    tables: dict[str, Any]  # (not with pin)
    ticket: int  # (with pin)


class DumpResult(TypedDict):
    indexes: dict[str, Any]
    documents: dict[str, Any]  # key -> fields


class VerifyResult(TypedDict):
    replicas: list[dict[str, Any]]


class ResyncResult(TypedDict):
    resyncing: int


class DatabasesResult(TypedDict):
    databases: dict[str, dict[str, Any]]


PATH = "the database directory on the target node"
SOURCE = "the UUID of the source database"


@command("REGISTER", GROUP, "`{uuid, path, sequence}`: serve the database as a source", verb="register")
class Register:
    """Serve this database (opened with replication on) as a source to the mesh."""

    path: str = describe(PATH, positional=True)


@command("UNREGISTER", GROUP, "`{uuid, unregistered}`", verb="unregister")
class Unregister:
    """Stop serving this database as a source (replicas keep what they have)."""

    path: str = describe(PATH, positional=True)


@command("REPLICATE", GROUP, "`{path, uuid, source, mode, tables}`", verb="replicate")
class Replicate:
    """Make the database at path a replica of database uuid.

    mode: 'one-way' (read-only copy), 'two-way' (a writable pair), or 'auto' (default: two-way when the source
    already replicates this database, which also turns that side into two-way). tables: replicate only these
    tables (default: every table); another filter for the same replica is refused (filter_conflict)."""

    path: str = describe(PATH)
    uuid: str = describe(SOURCE)
    mode: Mode = describe("auto, one-way or two-way", default="auto")
    tables: list[str] | None = describe("only these tables (a non-empty list of names; default: all)", default=None)

    def check(self) -> None:
        try:
            uuid_module.UUID(self.uuid)
        except ValueError:
            raise InvalidReplication(f"{self.uuid!r} is not a database UUID") from None
        tables_of(self.tables)


@command("UNREPLICATE", GROUP, "`{path, source, unreplicated}`", verb="unreplicate")
class Unreplicate:
    """Stop replicating database uuid into path (its data stays)."""

    path: str = describe(PATH)
    uuid: str = describe(SOURCE)


@command("STOP", GROUP, "`{paused}`", verb="pause")
class Stop:
    """Pause matching replicas (every replica on the node by default); they keep their mark."""

    path: str | None = describe("only the replica at this path", default=None)
    uuid: str | None = describe("only replicas of this source", default=None)


@command("START", GROUP, "`{resumed}`", verb="resume")
class Start:
    """Resume paused replicas from where they stood (every replica on the node by default)."""

    path: str | None = describe("only the replica at this path", default=None)
    uuid: str | None = describe("only replicas of this source", default=None)


@command(
    "DIGEST",
    GROUP,
    "`{uuid, sequence, tables: {name: {indexes, records, digest}}}`; with pin: `{uuid, sequence, ticket}`",
    verb="digest",
)
class Digest:
    """Per table index definitions, record count and content digest of a database on the node, and the journal
    sequence they were taken at (one read transaction). With pin, the sequence and a ticket as soon as that
    transaction is open (the digest is taken meanwhile); with ticket, that digest once done."""

    uuid: str = describe("the database's UUID", positional=True)
    pin: bool = describe("answer the sequence and a ticket at once; the digest is taken meanwhile", default=False)
    ticket: int | None = describe("the digest a pin started (waits up to `wait` seconds for it)", default=None)
    wait: float | None = describe("seconds to wait for a ticket's digest (default 10)", default=None)

    def check(self) -> None:
        if self.pin and self.ticket is not None:
            raise InvalidReplication("DIGEST takes pin or ticket, not both")
        if self.wait is not None and not 0 < self.wait <= 600:
            raise InvalidReplication("wait must be between 0 and 600 seconds")


@command("DUMP", GROUP, "`{indexes, documents}`", verb="dump")
class Dump:
    """One table's index definitions and documents (for diff)."""

    uuid: str = describe("the database's UUID")
    table: str = describe("the table's name")


@command("VERIFY", GROUP, "`{replicas: [status]}`", verb="verify_replicas")
class Verify:
    """Compare matching one-way replicas with their sources now (waits up to timeout, default 10 s)."""

    path: str | None = describe("only the replica at this path", default=None)
    uuid: str | None = describe("only replicas of this source", default=None)
    timeout: float | None = describe("seconds to wait for the checks (default 10)", default=None)


@command("RESYNC", GROUP, "`{resyncing: n}`", verb="resync")
class Resync:
    """Replace a replica's content by a fresh snapshot of its source."""

    path: str = describe(PATH)
    uuid: str = describe(SOURCE)


@command("DATABASES", GROUP, "`{databases: {path: figures}}`", verb="databases")
class Databases:
    """The databases this node serves and replicates, with their figures."""


SPECS: dict[str, Spec] = specs_of(
    Register, Unregister, Replicate, Unreplicate, Stop, Start, Digest, Dump, Verify, Resync, Databases
)
