"""The layers point one way (cli -> mesh -> replication -> core); only core imports lmdb, only mesh imports zmq.

Each layer uses the others only through their public names, and every module and class stays small enough to read.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pynndb"
ORDER = ["core", "replication", "mesh", "cli"]
OWNERS = {"lmdb": "core", "zmq": "mesh"}
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300


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
        assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines: split it"


def test_every_class_stays_small() -> None:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path.relative_to(PACKAGE)}::{node.name}"
                assert lines <= MAX_CLASS_LINES, f"{where} has {lines} lines: split it"


# Outside core (whose classes share one private implementation), a module reads no private name of another object.
STRICT = ["replication", "mesh", "cli"]
RAW_LMDB = {"cursor", "putmulti", "open_db", "set_range", "set_mapsize", "iternext"}  # core's business alone


@pytest.mark.parametrize("layer", STRICT)
def test_no_private_name_of_another_object_outside_core(layer: str) -> None:
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if _foreign_private(node):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert not found, "private names of other objects:\n" + "\n".join(found)


def test_replication_makes_no_raw_lmdb_call() -> None:
    """Replication reaches storage through core's seam (`core/storage.py`), never through LMDB handles."""
    for path in sorted((PACKAGE / "replication").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in RAW_LMDB, f"{path.name}:{node.lineno}: {ast.unparse(node.func)}"


def _package(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else "pynndb"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _foreign_private(node: ast.AST) -> bool:
    """`x._name` where x is not self or cls."""
    if not isinstance(node, ast.Attribute) or not _private(node.attr):
        return False
    return not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))


def _private_definitions(trees: dict[Path, ast.Module]) -> dict[str, set[str]]:
    """Which packages define each private name (a def, a class, or an assignment to it)."""
    defined: dict[str, set[str]] = defaultdict(set)
    for path, tree in trees.items():
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                name = node.attr
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                name = node.id
            if name is not None and _private(name):
                defined[name].add(_package(path))
    return defined


def test_no_package_reaches_into_another_packages_private_names() -> None:
    """`x._name` (x not self/cls) and `from pynndb.p import _name` only for names the same package defines.

    Names are matched, not types: a private name that two packages both define is not caught (keep names distinct).
    """
    trees = {path: ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}
    defined = _private_definitions(trees)
    found = []
    for path, tree in trees.items():
        package = _package(path)
        for node in ast.walk(tree):
            if _foreign_private(node):
                assert isinstance(node, ast.Attribute)
                owners = defined.get(node.attr, set())
                if owners and package not in owners:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)} ({sorted(owners)})")
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pynndb."):
                target = node.module.split(".")[1]
                target = target if target in ORDER else "pynndb"
                private = [alias.name for alias in node.names if _private(alias.name)]
                if target != package and private:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {private} from {node.module}")
    assert not found, "private names used across packages:\n" + "\n".join(found)
