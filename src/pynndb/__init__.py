"""pynndb: an embedded document database on LMDB, with mesh replication over ZeroMQ."""

from __future__ import annotations

from typing import Any

from pynndb import _native

# Before anything imports a module setup.py may have compiled: which form of them runs (pynndb._native).
_native.choose()

from pynndb.core.database import Database  # noqa: E402
from pynndb.core.doc import Doc  # noqa: E402
from pynndb.core.manager import Manager  # noqa: E402
from pynndb.core.reads import FilterResult  # noqa: E402
from pynndb.core.table import Table  # noqa: E402
from pynndb.errors import PyNNDBError  # noqa: E402

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
