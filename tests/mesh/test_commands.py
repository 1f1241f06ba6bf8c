"""The command channel: every kind of bad request gets an error with a stable code, never a hang."""

from __future__ import annotations

import threading

import pytest

from pynndb.errors import CommandError, CommandTimeout
from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin
from tests.mesh.conftest import Mesh

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pair(mesh: Mesh) -> tuple[Controller, Controller, Plugin]:
    a, b = mesh.node("a"), mesh.node("b")
    a.connect(b)
    return a, b, mesh.plugin(a)


@pytest.mark.parametrize(
    ("command", "params", "target", "code"),
    [
        ("NO_SUCH_COMMAND", None, None, "unknown_command"),
        ("NO_SUCH_COMMAND", None, "b", "unknown_command"),
        ("LOOKUP", None, None, "bad_params"),
        ("LOOKUP", {"name": 42}, None, "bad_params"),
        ("LOOKUP", {"name": "nobody"}, "b", "not_found"),
        ("CONNECT", {"address": "http://nowhere"}, None, "bad_params"),
        ("CONNECT", {}, None, "bad_params"),
        ("DISCONNECT", {}, None, "bad_params"),
        ("DISCONNECT", {"peer": "x", "address": "y"}, None, "bad_params"),
        ("PING", None, "no-such-node", "unknown_target"),
        ("HELP", {"command": "nope"}, None, "unknown_command"),
        ("", None, None, "bad_params"),
    ],
)
def test_bad_commands_get_error_codes(
    pair: tuple[Controller, Controller, Plugin], command: str, params: dict | None, target: str | None, code: str
) -> None:
    _, _, plugin = pair
    with pytest.raises(CommandError) as error:
        plugin.call(command, params, target=target, timeout=3)
    assert error.value.code == code
    assert str(error.value)
    assert plugin.call("PING")["pong"] is True


def test_params_must_be_an_object(pair: tuple[Controller, Controller, Plugin]) -> None:
    _, _, plugin = pair
    with pytest.raises(CommandError) as error:
        plugin.call("PING", [1, 2], timeout=3)  # type: ignore[arg-type]
    assert error.value.code == "bad_params"


def test_routed_command_times_out_with_a_reply(pair: tuple[Controller, Controller, Plugin]) -> None:
    a, b, plugin = pair
    release = threading.Event()
    b.register_command("HANG", lambda params, context: {"released": release.wait(3)})
    with pytest.raises(CommandTimeout):
        plugin.call("HANG", target="b", timeout=0.3)
    with pytest.raises(CommandTimeout):
        a.call("HANG", target=b.id, timeout=0.3)
    release.set()
    assert plugin.call("PING", target="b")["peer"] == b.id


def test_plugin_timeout_when_node_is_gone(mesh: Mesh) -> None:
    node = mesh.node("a")
    plugin = mesh.plugin(node)
    node.stop()
    with pytest.raises(CommandTimeout):
        plugin.call("PING", timeout=0.3)


def test_status_nodes_and_help(pair: tuple[Controller, Controller, Plugin]) -> None:
    a, b, plugin = pair
    status = plugin.call("STATUS")
    assert status["health"] == "ok" and status["peer"] == a.id
    assert {"frames_in", "malformed", "dropped", "duplicates"} <= set(status["counters"])
    assert [link["peer"] for link in status["links"]] == [b.id]
    assert set(plugin.call("NODES")["nodes"]) == {a.id, b.id}
    help_texts = plugin.call("HELP")["commands"]
    assert {"PING", "LOOKUP", "NODES", "STATUS", "CONNECT", "DISCONNECT", "HELP"} <= set(help_texts)
    assert all(help_texts.values())
    remote = plugin.call("STATUS", target="b")
    assert remote["peer"] == b.id
