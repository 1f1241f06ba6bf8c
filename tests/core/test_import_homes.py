"""The split Table and Database (issue 11) keep their import homes and the method names other code calls."""

from __future__ import annotations


def test_the_split_classes_keep_their_homes() -> None:
    from pynndb.core.database import TABLE_PREFIX, Database
    from pynndb.core.table import Index, Table, check_name

    assert (Database.__module__, Table.__module__) == ("pynndb.core.database", "pynndb.core.table")
    assert TABLE_PREFIX == b"table:" and callable(check_name) and Index.__name__ == "Index"
    for name in ("_insert", "_insert_stored", "_write", "_read", "_attach", "_detach", "_live", "ensure", "compress"):
        assert callable(getattr(Table, name)), name
    for name in ("_begin", "_run", "_create_table", "_drop_table", "_refresh", "_reload_schema", "table", "drop"):
        assert callable(getattr(Database, name)), name
