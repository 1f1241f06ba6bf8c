"""One error hierarchy: everything src/ raises to users is a `pynndb.errors` class, named for the condition."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pynndb import errors
from pynndb.mesh.links import split_address

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pynndb"
# Builtins that are not errors for users: protocol signals and "cannot happen" markers.
PROTOCOL = {"AttributeError", "AssertionError", "NotImplementedError", "StopIteration", "KeyboardInterrupt"}
# The CLI fails a command with click's usage errors (exit status 2); data.py catches its own BadInput (a bad line).
CLICK = {"BadParameter", "ClickException", "UsageError", "BadInput"}


def raised_names(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            function = node.exc.func
            name = function.id if isinstance(function, ast.Name) else getattr(function, "attr", "")
            found.append((node.lineno, name))
    return found


def test_src_raises_only_errors_of_the_hierarchy() -> None:
    ours = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}
    strays = [
        f"{path.relative_to(PACKAGE)}:{line} raises {name}"
        for path in PACKAGE.rglob("*.py")
        for line, name in raised_names(path)
        if name not in ours | PROTOCOL and name[:1].isupper() and not (path.parent.name == "cli" and name in CLICK)
    ]
    assert strays == []


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.InvalidArgument, ValueError),
        (errors.InvalidArgumentType, TypeError),
        (errors.InvalidAddress, ValueError),
        (errors.InvalidKeys, ValueError),
        (errors.InvalidReplication, ValueError),
        (errors.NotEnoughRecords, ValueError),
        (errors.NodeDidNotStart, RuntimeError),
        (errors.NotCaughtUp, RuntimeError),
    ],
)
def test_argument_errors_are_also_the_builtin_callers_expect(error: type, builtin: type) -> None:
    assert issubclass(error, errors.PyNNDBError) and issubclass(error, builtin)


def test_a_bad_address_names_the_condition() -> None:
    with pytest.raises(errors.InvalidAddress) as raised:
        split_address("http://nowhere")
    assert raised.value.code == "bad_params" and isinstance(raised.value, ValueError)
