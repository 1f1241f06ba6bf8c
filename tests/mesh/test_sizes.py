"""The mesh stays in small pieces (issue 11): no module over 400 lines, no class over 300; the controller and the
engine meet only through `local.NodeLoop`, and no mesh module reads another object's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MESH = Path(__file__).resolve().parents[2] / "src" / "pynndb" / "mesh"
MODULE_LINES = 400
CLASS_LINES = 300
MODULES = sorted(MESH.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(MESH)))
def test_mesh_module_and_its_classes_are_small(path: Path) -> None:
    text = path.read_text()
    assert len(text.splitlines()) <= MODULE_LINES, f"{path.name} is over {MODULE_LINES} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            assert lines <= CLASS_LINES, f"class {node.name} of {path.name} is {lines} lines (over {CLASS_LINES})"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(MESH)))
def test_no_private_name_of_another_object_is_used(path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            assert isinstance(owner, ast.Name) and owner.id in ("self", "cls"), (
                f"{path.name}:{node.lineno} reads {ast.unparse(node)}"
            )


def test_the_controller_drives_its_engine_only_through_the_node_loop_interface() -> None:
    from pynndb.mesh.engine import Engine
    from pynndb.mesh.local import NodeLoop

    interface = {name for name in vars(NodeLoop) if not name.startswith("_")}
    assert interface <= set(dir(Engine))
    used = set()
    for node in ast.walk(ast.parse((MESH / "controller.py").read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "engine":
            used.add(node.attr)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr == "_running_engine"
        ):
            used.add(node.attr)
    assert used and used <= interface, used - interface
