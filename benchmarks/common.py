"""What every benchmark shares: the documents of ANCHORS.md, free loopback ports, percentiles."""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome"]


def make_documents(count: int, offset: int = 0) -> list[dict[str, Any]]:
    """Documents of about 120 bytes as JSON, like {'name': 'Name 123', 'age': 42, 'email': ..., 'tags': [...]}."""
    return [
        {
            "name": f"Name {i}",
            "age": 18 + i % 60,
            "email": f"user{i}@example.com",
            "tags": ["a", "b"] if i % 2 else ["c"],
            "city": CITIES[i % 5],
            "active": i % 3 == 0,
            "score": round((i * 7.31) % 100, 2),
        }
        for i in range(offset, offset + count)
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of the samples."""
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


@contextmanager
def frozen_heap() -> Iterator[None]:
    """A timed block in which the cyclic collector does not rescan what exists at its start (the harness's large
    document lists): a collection of them would be timed as lag."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def build_line() -> str:
    """Which form of the mesh's hot path this run's nodes execute (they inherit this process's environment)."""
    import pynndb.mesh  # noqa: F401  (choosing the form happens on import)
    from pynndb import _native

    return f"pynndb mesh build: {_native.MODE} (PYNNDB_PURE=1 runs the Python sources)"
