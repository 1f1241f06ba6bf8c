"""Services plug into a node: the default node serves replication, a bare node none, a custom service its own."""

from __future__ import annotations

import pytest

from pynndb.errors import CommandError
from pynndb.mesh.controller import Controller
from pynndb.mesh.replicator import ReplicationService
from tests.mesh.conftest import Mesh


class Echo:
    """A service with one command, counting its starts and stops."""

    stopped = 0

    def __init__(self, node: Controller) -> None:
        self.node = node
        node.register_command("ECHO", lambda params, context: dict(params, by=context["node"].label))

    def stop(self) -> None:
        Echo.stopped += 1


def test_a_node_serves_replication_by_default(mesh: Mesh) -> None:
    node = mesh.node("default")
    assert isinstance(node.replication, ReplicationService) and node.service("replication") is node.replication
    assert "REGISTER" in node.call("HELP")["commands"]
    assert "databases" in node.call("STATUS")


def test_a_bare_node_has_no_services_and_a_custom_service_its_commands(mesh: Mesh) -> None:
    bare = mesh.node("bare", services={})
    assert bare.replication is None
    with pytest.raises(CommandError) as error:
        bare.call("REGISTER", {"path": "/nowhere"})
    assert error.value.code == "unknown_command"
    custom = mesh.node("custom", services={"echo": Echo})
    custom.connect(bare)
    assert bare.call("ECHO", {"text": "hi"}, target="custom") == {"text": "hi", "by": "custom"}
    assert custom.service("echo") is not None and custom.replication is None
    before = Echo.stopped
    custom.stop()
    assert Echo.stopped == before + 1 and custom.service("echo") is None
