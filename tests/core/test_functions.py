"""Function indexes: opening a database never runs code stored in it unless the application opts in."""

from __future__ import annotations

from pathlib import Path

import pytest

from pynndb import Manager
from pynndb.errors import IndexFunctionUnavailable
from tests.helpers import person, upper_name


def create(manager: Manager, path: str) -> list[str]:
    table = manager.database("f", path).table("t")
    table.ensure("upper", upper_name)
    keys = [table.append(person(i)).key for i in range(5)]
    manager.close("f")
    return keys


def test_reopen_does_not_run_the_stored_function(manager: Manager, tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    create(manager, path)
    table = manager.database("f", path).table("t")
    assert table.indexes() == ["upper"]
    assert len(list(table.find("upper"))) == 5  # reading the index needs no function
    with pytest.raises(IndexFunctionUnavailable):
        table.append(person(10))
    assert table.records() == 5
    first = table.first()
    first["name"] = "changed"
    with pytest.raises(IndexFunctionUnavailable):
        table.save(first)
    with pytest.raises(IndexFunctionUnavailable):
        table.delete(first.key)
    assert table.records() == 5 and table.get(first.key)["name"] != "changed"


def test_ensure_with_the_same_function_reattaches_it(manager: Manager, tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    create(manager, path)
    table = manager.database("f", path).table("t")
    index = table.ensure("upper", upper_name)
    assert table.indexes() == ["upper"] and index is table.index("upper")
    doc = table.append({"name": "zoe"})
    assert table.seek_one("upper", {"name": "ZOE"}) == doc
    assert table.records() == 6


def test_trust_functions_imports_the_function_by_name(manager: Manager, tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    create(manager, path)
    table = manager.database("f", path, config={"trust_functions": True}).table("t")
    doc = table.append({"name": "amy"})
    assert table.seek_one("upper", {"name": "Amy"}) == doc
    assert table.first("upper") == doc
