"""The controller and the engine meet only through `local.NodeLoop` (issue 11); sizes and private names are checked
for every package by tests/test_layering.py."""

from __future__ import annotations

import ast
from pathlib import Path

MESH = Path(__file__).resolve().parents[2] / "src" / "pynndb" / "mesh"


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
