"""The layers point one way (cli -> mesh -> replication -> core); only core imports lmdb, only mesh imports zmq."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pynndb"
ORDER = ["core", "replication", "mesh", "cli"]
OWNERS = {"lmdb": "core", "zmq": "mesh"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("layer", ORDER)
def test_layer_imports_only_layers_below(layer: str) -> None:
    allowed = set(ORDER[: ORDER.index(layer) + 1])
    for path in (PACKAGE / layer).rglob("*.py"):
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "pynndb" and len(parts) > 1 and parts[1] in ORDER:
                assert parts[1] in allowed, f"{path.name} ({layer}) imports {name}"
            if parts[0] in OWNERS:
                assert OWNERS[parts[0]] == layer, f"{path.name} ({layer}) imports {parts[0]}"


def test_every_module_stays_small() -> None:
    for path in PACKAGE.rglob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 700, f"{path.relative_to(PACKAGE)} has {lines} lines: split it"
