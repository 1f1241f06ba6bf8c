"""The compiled hot path (setup.py, pynndb._native): built whole, used unless told or outdated, sources otherwise."""

from __future__ import annotations

import ast
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pynndb import _native

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def listed() -> list[str]:
    """The modules setup.py compiles, as module names."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMPILED":
            paths = ast.literal_eval(node.value)
            return sorted(path.removesuffix(".py").replace("/", ".") for path in paths)
    raise AssertionError("setup.py lists no COMPILED modules")


def built() -> dict[str, tuple[str, str]]:
    """The compiled modules of this checkout's build, every package's."""
    return {name: files for place in _native.installed() for name, files in _native.compiled_modules(*place).items()}


def environment(**env: str) -> dict[str, str]:
    """This process's environment without PYNNDB_PURE (the check's second pass sets it), plus ``env``."""
    return {**{key: value for key, value in os.environ.items() if key != "PYNNDB_PURE"}, **env}


def run(code: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment(**env), capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_every_listed_module_exists_and_is_in_the_package() -> None:
    names = listed()
    assert names, "nothing compiled"
    for name in names:
        assert (ROOT / "src" / (name.replace(".", "/") + ".py")).is_file(), name


def test_a_build_compiles_every_listed_module_or_none() -> None:
    assert sorted(built()) in ([], listed())  # (an optional extension that failed would leave a mix)


def test_compiled_form_runs_unless_told_otherwise() -> None:
    code = (
        "import pynndb.mesh.engine as m, pynndb.replication.replica as r; from pynndb import _native; "
        "print(_native.MODE, m.__file__, r.__file__)"
    )
    mode = run(code)
    compiled = built()
    if not compiled:
        assert mode.startswith("pure (not built) ") and mode.endswith(
            "engine.py " + str(ROOT / "src/pynndb/replication/replica.py")
        )
        return
    if _native.stale(compiled):
        pytest.fail("compiled modules older than their sources: run ./scripts/setup before the tests")
    assert mode.startswith("compiled ") and mode.count(SUFFIX) == 2, mode


def test_pure_runs_every_source_and_mode_says_so() -> None:
    code = (
        "import importlib, sys; from pynndb import _native; "
        f"files = [importlib.import_module(name).__file__ for name in {listed()!r}]; "
        "print(_native.MODE); print(all(f.endswith('.py') for f in files))"
    )
    assert run(code, PYNNDB_PURE="1").splitlines() == ["pure (PYNNDB_PURE)", "True"]


def test_outdated_compiled_modules_give_way_to_their_sources(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fresh.py").write_text("FORM = 'source'\n")
    (package / "edited.py").write_text("FORM = 'source'\n")
    (package / "alone.py").write_text("")
    for stem in ("fresh", "edited", "orphan"):
        (package / (stem + SUFFIX)).write_bytes(b"not a real extension")
    os.utime(package / ("edited" + SUFFIX), (1_000_000, 1_000_000))
    os.utime(package / "fresh.py", (1_000_000, 1_000_000))
    modules = _native.compiled_modules(str(package), "pkg")
    assert sorted(modules) == ["pkg.edited", "pkg.fresh"]  # no source beside it: not ours to replace
    assert _native.stale(modules) == ["pkg.edited"]
    code = (
        "import sys, warnings; warnings.simplefilter('error'); sys.path.insert(0, sys.argv[1]); "
        "from pynndb import _native; "
        "print(_native.choose([(sys.argv[1] + '/pkg', 'pkg')]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "older than their sources: pkg.edited" in done.stderr  # warned, loudly
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pynndb import _native; "
        "print(_native.choose([(sys.argv[1] + '/pkg', 'pkg')])); import pkg.edited, pkg.fresh; "
        "print(pkg.edited.FORM, pkg.fresh.FORM)"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code, str(tmp_path)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[0].startswith("pure (compiled modules older than their sources: pkg.edited)")
    assert lines[1] == "source source"  # both from source: all or nothing (the fake extensions would not load)


def test_a_build_missing_its_shared_library_runs_the_sources(tmp_path: Path) -> None:
    """mypyc puts every compiled module's code in one shared library that each module's extension loads: a build
    that failed part-way can leave the extensions without it, and importing them would fail."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "alpha.py").write_text("FORM = 'source'\n")
    os.utime(package / "alpha.py", (1_000_000, 1_000_000))
    (package / ("alpha" + SUFFIX)).write_bytes(b"\0import 0123456789abcdef0123__mypyc\0")
    modules = _native.compiled_modules(str(package), "pkg")
    assert _native.stale(modules) == [] and _native.missing_library(modules) == "0123456789abcdef0123__mypyc"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pynndb import _native; "
        "print(_native.choose([(sys.argv[1] + '/pkg', 'pkg')])); import pkg.alpha; print(pkg.alpha.FORM)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], env=environment(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "pure (the compiled modules' library 0123456789abcdef0123__mypyc is missing: a build that failed part-way)",
        "source",
    ]
    assert "RuntimeWarning" in done.stderr and "./scripts/setup" in done.stderr
    # The library present (here: any module of that name on the path), the compiled form would run.
    (tmp_path / "0123456789abcdef0123__mypyc.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        assert _native.missing_library(modules) is None
    finally:
        sys.path.remove(str(tmp_path))
