"""Which form of the compiled modules runs: what the build compiled (mypyc, see setup.py), or their Python sources.

A compiled module sits beside its source and Python imports it first. `choose` runs before any of them is imported
(from ``pynndb/__init__.py``) and makes the sources win instead when

- ``PYNNDB_PURE`` is set (non-empty) in the environment: to compare, or to rule the compiled form out; or
- a compiled module is older than its source: a checkout edited (or switched to another commit) and not rebuilt
  since. Running code older than the source would be wrong, so the sources run and a warning says so
  (``./scripts/setup`` rebuilds); or
- the library the compiled modules load their code from is missing (a build that failed part-way: mypyc puts the
  code of every compiled module in one shared library, and each module's own extension only loads it).

All or nothing: compiled modules call each other natively, so either every one of them runs compiled or none does.
``MODE`` says which was chosen; a node's STATUS reports it and the benchmarks print it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

# A wheel's files are written one after another when it is installed: a source a little newer than its compiled
# module is not an edit.
STALE_SLACK = 2.0
MODE = "pure (not built)"
# The subpackages whose modules setup.py may compile.
PACKAGES = ("core", "mesh", "replication")
# How a compiled module names the shared library it loads (mypyc: 20 hex digits of a hash, then "__mypyc").
LIBRARY = re.compile(rb"[0-9a-f]{20}__mypyc")


def installed() -> list[tuple[str, str]]:
    """(directory, package name) of each subpackage of this installation that may hold compiled modules."""
    root = os.path.dirname(os.path.abspath(__file__))
    return [(os.path.join(root, name), f"pynndb.{name}") for name in PACKAGES]


def compiled_modules(directory: str, package: str) -> dict[str, tuple[str, str]]:
    """{module name: (compiled file, source file)} for the extension modules in ``directory`` with a source beside."""
    found: dict[str, tuple[str, str]] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for name in names:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if name.endswith(suffix):
                stem = name[: -len(suffix)]
                source = os.path.join(directory, stem + ".py")
                if os.path.exists(source):
                    found[f"{package}.{stem}"] = (os.path.join(directory, name), source)
                break
    return found


def stale(modules: Mapping[str, tuple[str, str]]) -> list[str]:
    """The modules whose source was changed after they were compiled."""
    return sorted(
        name
        for name, (compiled, source) in modules.items()
        if os.path.getmtime(source) > os.path.getmtime(compiled) + STALE_SLACK
    )


def missing_library(modules: Mapping[str, tuple[str, str]]) -> str | None:
    """The shared library the compiled modules name when it cannot be found (None: found, or none named). One
    module tells: a build names one library for all of them."""
    if not modules:
        return None
    compiled, _source = next(iter(modules.values()))
    with open(compiled, "rb") as file:
        named = LIBRARY.search(file.read())
    if named is None:
        return None
    library = named.group().decode()
    return None if importlib.util.find_spec(library) is not None else library


class SourceFinder(MetaPathFinder):
    """Finds the given modules' Python sources ahead of their compiled form."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = dict(sources)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


def choose(places: Sequence[tuple[str, str]] | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """Decide which form of the compiled modules in ``places`` ((directory, package) pairs; default: this
    installation's) runs (see the module's docstring); the mode chosen."""
    global MODE
    modules: dict[str, tuple[str, str]] = {}
    for directory, package in installed() if places is None else places:
        modules.update(compiled_modules(directory, package))
    if not modules:
        MODE = "pure (not built)"
        return MODE
    if environ.get("PYNNDB_PURE"):
        MODE = "pure (PYNNDB_PURE)"
    else:
        outdated = stale(modules)
        library = None if outdated else missing_library(modules)
        if not outdated and library is None:
            MODE = "compiled"
            return MODE
        if outdated:
            MODE = f"pure (compiled modules older than their sources: {', '.join(outdated)})"
        else:
            MODE = f"pure (the compiled modules' library {library} is missing: a build that failed part-way)"
        warnings.warn(
            f"pynndb: {MODE}; running the Python sources. Rebuild with ./scripts/setup (or pip install -e .).",
            RuntimeWarning,
            stacklevel=2,
        )
    sources = {name: source for name, (_, source) in modules.items()}
    for finder in sys.meta_path:
        if isinstance(finder, SourceFinder):
            finder.sources.update(sources)
            break
    else:
        sys.meta_path.insert(0, SourceFinder(sources))
    return MODE
