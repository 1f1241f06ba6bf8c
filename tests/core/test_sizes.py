"""Core stays in small pieces (issue 11): no module over 400 lines, no class over 300."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "pynndb" / "core"
MODULE_LINES = 400
CLASS_LINES = 300


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda path: path.name)
def test_core_module_and_its_classes_are_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MODULE_LINES, f"{path.name} is over {MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            assert lines <= CLASS_LINES, f"class {node.name} of {path.name} is {lines} lines (over {CLASS_LINES})"


def test_the_split_classes_keep_their_homes() -> None:
    from pynndb.core.database import TABLE_PREFIX, Database
    from pynndb.core.table import Index, Table, check_name

    assert (Database.__module__, Table.__module__) == ("pynndb.core.database", "pynndb.core.table")
    assert TABLE_PREFIX == b"table:" and callable(check_name) and Index.__name__ == "Index"
    for name in ("_insert", "_insert_stored", "_write", "_read", "_attach", "_detach", "_live", "ensure", "compress"):
        assert callable(getattr(Table, name)), name
    for name in ("_begin", "_run", "_create_table", "_drop_table", "_refresh", "_reload_schema", "table", "drop"):
        assert callable(getattr(Database, name)), name
