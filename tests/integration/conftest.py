"""The `deployment` fixture: every scenario that takes it runs with in-process nodes and with node processes; the
`nodes` fixture: `pynndb node` processes (tests/chaos/cluster.py's `Node`) a test starts, stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.cluster import Node
from tests.conftest import no_thread_left
from tests.integration.deployment import Deployment, InProcess, Processes, Writer


@pytest.fixture(params=[InProcess, Processes], ids=["in-process", "processes"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """Nodes of one test (in this process, or as `pynndb node` processes), all stopped at teardown."""
    with no_thread_left():
        created: Deployment = request.param(tmp_path)
        try:
            yield created
        finally:
            created.close()


@pytest.fixture
def writers() -> Iterator[list[Writer]]:
    """Application writer threads of one test, halted at teardown."""
    started: list[Writer] = []
    yield started
    for writer in started:
        writer.halt.set()
        writer.join(timeout=10)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    """Node processes of one test (append each one started); every one still alive is stopped at teardown."""
    started: list[Node] = []
    try:
        yield started
    finally:
        for node in started:
            node.close_plugin()
            if node.alive():
                node.terminate()
