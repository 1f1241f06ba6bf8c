"""pynndb: an embedded document database on LMDB, with mesh replication over ZeroMQ."""

from __future__ import annotations

from typing import Any

from pynndb.core.database import Database
from pynndb.core.doc import Doc
from pynndb.core.manager import Manager
from pynndb.core.reads import FilterResult
from pynndb.core.table import Table
from pynndb.errors import PyNNDBError

__all__ = ["Controller", "Database", "Doc", "FilterResult", "Manager", "Plugin", "PyNNDBError", "Table"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The mesh layer imports pyzmq; load it only when it is asked for.
    if name == "Controller":
        from pynndb.mesh.controller import Controller

        return Controller
    if name == "Plugin":
        from pynndb.mesh.plugin import Plugin

        return Plugin
    raise AttributeError(name)
