"""One error hierarchy for pynndb: every exception is named for the condition that raised it.

Errors that cross the wire carry a stable ``code`` (the class's ``code`` attribute) and a readable message.
"""

from __future__ import annotations


class PyNNDBError(Exception):
    """Base class of every pynndb error."""

    code = "error"


# --- storage -------------------------------------------------------------------------------------------------
class DatabaseError(PyNNDBError):
    """A database could not be opened or used."""

    code = "database_error"


class DatabaseClosed(DatabaseError):
    """The database (or its manager) has been closed."""

    code = "database_closed"


class NoSuchDatabase(DatabaseError):
    """No open database has that name."""

    code = "no_such_database"


class NoSuchTable(PyNNDBError):
    """The table does not exist."""

    code = "no_such_table"


class InvalidName(PyNNDBError):
    """A table or index name is empty, too long, or uses a reserved prefix."""

    code = "invalid_name"


class NoSuchIndex(PyNNDBError):
    """The index does not exist on that table."""

    code = "no_such_index"


class IndexDefinitionError(PyNNDBError):
    """An index definition is malformed (bad format string, wrong type) or conflicts with the stored one."""

    code = "index_definition"


class IndexFunctionUnavailable(PyNNDBError):
    """A function index was opened without its function: the application must supply it with ``ensure``."""

    code = "index_function_unavailable"


class InvalidIndexKey(PyNNDBError):
    """An index function produced a key that cannot be stored (wrong type, longer than LMDB allows)."""

    code = "invalid_index_key"


class DuplicateKey(PyNNDBError):
    """A unique index (or the primary key) already holds that key."""

    code = "duplicate_key"


class DocumentDoesNotExist(PyNNDBError):
    """No record has that key."""

    code = "document_does_not_exist"


class InvalidDocument(PyNNDBError):
    """The document is not a dict, or holds values JSON cannot represent."""

    code = "invalid_document"


class InvalidKey(PyNNDBError):
    """A record key is not a 24-hex id (str or bytes)."""

    code = "invalid_key"


class TransactionError(PyNNDBError):
    """A transaction was used wrongly (finished, read-only for a write, from another database)."""

    code = "transaction_error"


class ReadOnlyDatabase(PyNNDBError):
    """The database is a read-only replica; only replication may write to it."""

    code = "read_only_database"


class DatabaseInUse(DatabaseError):
    """Another process (or this one) has the database open, so it cannot be replaced."""

    code = "database_in_use"


class BackupError(PyNNDBError):
    """A backup could not be made, read or restored."""

    code = "backup_error"


class ConfigError(PyNNDBError):
    """A configuration value is unknown or of the wrong type."""

    code = "config_error"


class UnsupportedDependency(PyNNDBError, ImportError):
    """An installed library is older than pynndb works with (an install that skipped pyproject.toml's bounds)."""

    code = "unsupported_dependency"


class NotEnoughRecords(PyNNDBError, ValueError):
    """Training a compression dictionary needs more records than the table holds."""

    code = "not_enough_records"


# --- arguments (also the builtin ValueError / TypeError, which callers may catch) -----------------------------
class InvalidArgument(PyNNDBError, ValueError):
    """An argument (or a command's parameter) is malformed, missing or out of range."""

    code = "bad_params"


class InvalidArgumentType(PyNNDBError, TypeError):
    """An argument (or a command's parameter) has the wrong type."""

    code = "bad_params"


class InvalidAddress(InvalidArgument):
    """A node address is not ``tcp://host:port``."""


class InvalidKeys(InvalidArgument):
    """Key material is incomplete: a secret key without its pair, keys without a server key, no allow-list."""


# --- replication ---------------------------------------------------------------------------------------------
class ReplicationError(PyNNDBError):
    """Replication could not proceed."""

    code = "replication_error"


class ReplicationNotEnabled(ReplicationError):
    """The database was not opened with ``config={'replication': True}``."""

    code = "replication_not_enabled"


class JournalGap(ReplicationError):
    """The entries asked for are no longer in the journal (raised as its subclass `JournalTrimmed`)."""

    code = "journal_gap"


class JournalTrimmed(JournalGap):
    """A change feed was asked to resume from a sequence older than the journal still holds (``oldest`` names the
    oldest retained entry, None when it holds none): resuming there would silently skip changes."""

    code = "journal_trimmed"

    def __init__(self, message: str, oldest: int | None = None) -> None:
        super().__init__(message)
        self.oldest = oldest


class InvalidReplication(ReplicationError, InvalidArgument):
    """A replication cannot be set up as asked: unknown mode, a source that is not a UUID, a database replicating
    itself."""

    code = "bad_params"


class FilterConflict(ReplicationError):
    """A replica is already registered with another table filter: UNREPLICATE it first, then REPLICATE anew."""

    code = "filter_conflict"


class NotCaughtUp(ReplicationError, RuntimeError):
    """Replicas did not catch up with their sources within the time allowed."""

    code = "not_caught_up"


class MalformedEntry(ReplicationError):
    """A journal entry or snapshot chunk could not be decoded."""

    code = "malformed_entry"


# --- mesh ----------------------------------------------------------------------------------------------------
class MeshError(PyNNDBError):
    """A mesh operation failed."""

    code = "mesh_error"


class CommandError(MeshError):
    """A command was refused; ``code`` is the stable code sent by the node."""

    def __init__(self, message: str, code: str = "command_error") -> None:
        super().__init__(message)
        self.code = code


class CommandTimeout(MeshError):
    """No reply came before the deadline."""

    code = "timeout"


class NodeUnreachable(MeshError):
    """Nothing answers at a node's command address."""

    code = "unreachable"


class NodeDidNotStart(MeshError, RuntimeError):
    """A node process did not report READY within the time allowed."""

    code = "node_did_not_start"


class MalformedMessage(MeshError):
    """A message on a socket could not be decoded."""

    code = "malformed_message"
