"""Filtered replication: which tables a replica takes from its source (None: every table).

Every journal op names its table at index 1, and every snapshot chunk names its table, so one predicate decides
what a filtered replica applies; the replica still advances its mark past the ops it skips.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pynndb.core.table import check_name
from pynndb.errors import InvalidName, InvalidReplication

Tables = frozenset[str] | None  # the tables a replica takes; None: all of them


def tables_of(tables: Iterable[str] | None) -> Tables:
    """A filter from a list of table names (None: no filter); raises InvalidReplication on an empty list, a name
    that is not a valid table name, or a value that is not a list of str."""
    if tables is None:
        return None
    if isinstance(tables, (str, bytes)) or not isinstance(tables, (list, tuple, set, frozenset)):
        raise InvalidReplication(f"tables must be a list of table names, not {type(tables).__name__}")
    if not tables:
        raise InvalidReplication("tables must name at least one table (leave it out to replicate every table)")
    for name in tables:
        try:
            check_name(name, "table")
        except InvalidName as error:
            raise InvalidReplication(f"tables: {error}") from None
    return frozenset(tables)


def listed(tables: Tables) -> list[str] | None:
    """The filter as a sorted list (for STATUS, the registration and the wire), None for every table."""
    return None if tables is None else sorted(tables)


def in_filter(tables: Tables, op: Any) -> bool:
    """Whether a replica with filter `tables` applies journal op `op` (a malformed op is kept: applying it fails)."""
    if tables is None or op.__class__ is not list or len(op) < 2 or op[1].__class__ is not str:
        return True
    return op[1] in tables


def filter_ops(tables: Tables, ops: list[Any]) -> list[Any]:
    """The ops of an entry that a replica with filter `tables` applies, in order."""
    if tables is None:
        return ops
    return [op for op in ops if in_filter(tables, op)]


def has_table(tables: Tables, name: str) -> bool:
    """Whether table `name` is in the filter."""
    return tables is None or name in tables
