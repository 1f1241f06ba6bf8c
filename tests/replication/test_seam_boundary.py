"""replication/ uses core only through its published seam: no `x._name` of another object, no raw LMDB calls."""

from __future__ import annotations

import ast
from pathlib import Path

REPLICATION = Path(__file__).resolve().parents[2] / "src" / "pynndb" / "replication"
RAW_LMDB = {"cursor", "putmulti", "open_db", "set_range", "set_mapsize", "iternext"}


def test_replication_touches_no_private_attribute_of_another_object() -> None:
    for path in sorted(REPLICATION.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            owner = node.value
            assert isinstance(owner, ast.Name) and owner.id in ("self", "cls"), (
                f"{path.name}:{node.lineno}: {ast.unparse(node)} reaches into another object's private attribute"
            )


def test_replication_makes_no_raw_lmdb_calls() -> None:
    for path in sorted(REPLICATION.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in RAW_LMDB, f"{path.name}:{node.lineno}: {ast.unparse(node.func)}"
