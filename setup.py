"""Build hook: compile the hot path of the mesh and of replication with mypyc (the rest is in pyproject.toml).

A routed command's round trip is mostly the interpreter running a node's loop, and a replica's entry mostly the
interpreter running the replication code around its storage calls (docs/benchmarks.md, rounds 14-17): compiled, the
same modules take a 1-hop round trip from ~3.6x raw ZeroMQ to under 3x, and a replica's apply does the same work
with less of the CPU its node shares with the source's. The modules stay plain, type-checked Python and are
installed beside their compiled form; `pynndb._native` runs the Python ones instead when asked to
(``PYNNDB_PURE=1``), when a compiled module is older than its source (an edited checkout), or when the build left
the compiled modules without their shared library.

``PYNNDB_PURE=1`` at install time builds nothing. Without a C compiler the build warns and installs the pure-Python
package (the extensions are optional), which behaves the same, only slower.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

# The modules every routed frame, command, loop turn and replication entry of a node passes through: mypy-clean,
# single inheritance, no monkeypatching of their classes at run time (what mypyc needs). A compiled function checks
# its arguments' declared types when called, so the public API (`Plugin`, `Controller`, `Database`) stays Python: a
# wrong value a user passes reaches the project's own validation and its errors, as it always has; and what arrives
# from the wire is declared `object` where it is first checked (`messages.decode`). Left out on purpose: the
# replication service's step driver and its holdings (`replicator`, `replication_holdings`: a few calls a step, and
# the tests observe their steps by wrapping methods, which a compiled class does not allow), and a snapshot's intake
# (`snapshot_intake`: a few calls a chunk; tests slow its chunks down); `replication/local.py` (in-process, and an
# attribute named `_thread` becomes a C keyword in mypyc's output).
COMPILED = [
    "pynndb/core/pages.py",
    "pynndb/mesh/commands.py",
    "pynndb/mesh/delivery.py",
    "pynndb/mesh/directory.py",
    "pynndb/mesh/drain.py",
    "pynndb/mesh/engine.py",
    "pynndb/mesh/gossip.py",
    "pynndb/mesh/handshake.py",
    "pynndb/mesh/linking.py",
    "pynndb/mesh/links.py",
    "pynndb/mesh/loop.py",
    "pynndb/mesh/membership.py",
    "pynndb/mesh/requests.py",
    "pynndb/mesh/routing.py",
    "pynndb/mesh/sending.py",
    "pynndb/mesh/wire.py",
    "pynndb/mesh/replication_inbox.py",
    "pynndb/mesh/replication_outbox.py",
    "pynndb/mesh/replication_serving.py",
    "pynndb/replication/appliers.py",
    "pynndb/replication/digest.py",
    "pynndb/replication/fast_snapshot.py",
    "pynndb/replication/message_types.py",
    "pynndb/replication/messages.py",
    "pynndb/replication/ordering.py",
    "pynndb/replication/replica.py",
    "pynndb/replication/source.py",
    "pynndb/replication/stored_frames.py",
    "pynndb/replication/table_filter.py",
]


def extensions() -> list[Extension]:
    if os.environ.get("PYNNDB_PURE"):
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:  # (a build without the build requirements, e.g. `setup.py` run by hand)
        return []
    # Module names come from the paths (src/ has no __init__.py): src/pynndb/mesh/loop.py -> pynndb.mesh.loop.
    # The build environment has only the build requirements: pyzmq, lmdb and orjson are untyped there, so mypy's
    # "unused ignore" findings (an error in this project's configuration) do not apply to it.
    options = ["--no-warn-unused-ignores", "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}"]
    modules = mypycify([*options, *(os.path.join("src", path) for path in COMPILED)], opt_level="3")
    for extension in modules:
        extension.optional = True  # no compiler: warn and install the pure-Python modules
    return modules


setup(ext_modules=extensions())
