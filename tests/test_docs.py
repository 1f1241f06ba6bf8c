"""The README's examples run as written (with their paths moved to a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.timeout(60)
def test_readme_database_example_runs(tmp_path: Path) -> None:
    block = next(block for block in python_blocks() if 'manager.database("people"' in block)
    code = block.replace('"/tmp/people"', repr(str(tmp_path / "people"))).replace("    ...\n", "    pass\n")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    people = namespace["people"]
    assert people.records() == 2  # type: ignore[attr-defined]
    assert namespace["db"].table("audit").records() == 1  # type: ignore[attr-defined]
    namespace["manager"].close()  # type: ignore[attr-defined]


def test_readme_names_the_two_commands_and_ci_runs_the_check() -> None:
    text = README.read_text()
    assert "./scripts/demo" in text and "./scripts/check" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/check" in ci
