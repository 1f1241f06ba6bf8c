"""A node's lifecycle, links, and the service API the replication layer builds on."""

from __future__ import annotations

import threading

import pytest

from pynndb.errors import CommandError, MeshError, NoSuchTable
from pynndb.mesh import engine as engine_module
from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin
from tests.helpers import wait_until
from tests.mesh.conftest import Mesh, free_port

pytestmark = pytest.mark.timeout(30)


def test_issue_snippet(mesh: Mesh) -> None:
    nodea = mesh.node("nodea", heartbeat=1.0)
    nodeb = mesh.node("nodeb", heartbeat=1.0)
    nodea.connect(nodeb)
    cmd = Plugin(nodea)
    mesh.plugins.append(cmd)
    cmd.connect()
    peer = cmd.call("LOOKUP", {"name": "nodeb"}).get("peer")
    assert peer == nodeb.id
    reply = cmd.call("PING", target=peer)
    assert reply["peer"] == nodeb.id and reply["label"] == "nodeb"


def test_plugin_by_address_and_context_manager(mesh: Mesh) -> None:
    node = mesh.node("solo")
    with Plugin(f"tcp://127.0.0.1:{node.port3}") as plugin:
        assert plugin.call("PING")["peer"] == node.id
        assert plugin.call("PING", target="solo")["label"] == "solo"


def test_start_stop_idempotent_and_restart_gets_new_id() -> None:
    node = Controller(free_port(), free_port(), free_port(), label="cycle", heartbeat=0.1)
    try:
        assert node.start() is node
        assert node.start() is node
        first = node.id
        assert node.address == f"tcp://127.0.0.1:{node.port1}"
        node.stop()
        node.stop()
        assert not [t for t in threading.enumerate() if t.name.startswith("pynndb-cycle")]
        node.start()
        assert node.id != first
    finally:
        node.stop()


def test_bind_conflict_raises_mesh_error(mesh: Mesh) -> None:
    node = mesh.node("first")
    clash = Controller(node.port1, free_port(), free_port(), label="clash")
    with pytest.raises(MeshError):
        clash.start()
    clash.stop()


def test_connect_by_address_and_disconnect(mesh: Mesh) -> None:
    a, b = mesh.node("a"), mesh.node("b")
    assert a.connect(b.address) == b.id
    assert a.connect(b.address) == b.id  # idempotent
    assert wait_until(lambda: a.id in b.directory()[b.id]["links"])
    assert a.disconnect(b) is True
    assert wait_until(lambda: not b.links() and not a.links())
    assert a.disconnect(b) is False


def test_connect_to_nothing_fails_bounded(mesh: Mesh) -> None:
    a = mesh.node("a")
    with pytest.raises(MeshError):
        a.connect(f"tcp://127.0.0.1:{free_port()}", timeout=0.3)


def test_connect_and_disconnect_by_command(mesh: Mesh) -> None:
    a, b = mesh.node("a"), mesh.node("b")
    plugin = mesh.plugin(a)
    assert plugin.call("CONNECT", {"address": b.address})["peer"] == b.id
    assert plugin.call("PING", target="b")["peer"] == b.id
    assert plugin.call("DISCONNECT", {"peer": "b"}) == {"disconnected": True}
    with pytest.raises(CommandError) as error:
        plugin.call("DISCONNECT", {"address": b.address})
    assert error.value.code == "not_found"


def test_publish_subscribe_and_targeted_send(mesh: Mesh) -> None:
    a, b, c = mesh.node("a"), mesh.node("b"), mesh.node("c")
    a.connect(b)
    b.connect(c)
    got: list[tuple[str, bytes, str]] = []
    messages: list[tuple[bytes, str]] = []
    c.subscribe("db1", lambda topic, payload, origin: got.append((topic, payload, origin)))
    c.on_message("catchup", lambda payload, origin: messages.append((payload, origin)))
    assert wait_until(lambda: "db1" in a.directory().get(c.id, {}).get("topics", []))
    big = bytes(range(256)) * 8192  # 2 MB
    for index in range(100):
        a.publish("db1", b"%d" % index)
    a.publish("db1", big)
    a.publish("other", b"nobody wants this")
    a.send(c.id, "catchup", b"hello")
    a.send("c", "catchup", b"by label")
    assert wait_until(lambda: len(got) == 101 and len(messages) == 2)
    assert [p for _, p, _ in got[:100]] == [b"%d" % i for i in range(100)]
    assert got[100] == ("db1", big, a.id)
    assert messages == [(b"hello", a.id), (b"by label", a.id)]
    c.unsubscribe("db1")
    assert wait_until(lambda: "db1" not in a.directory()[c.id]["topics"])


def test_a_node_yields_its_cpu_after_each_loop_turn_that_published(mesh: Mesh, monkeypatch) -> None:
    """A publishing node hands its core to the rest of the machine (os.sched_yield) once per loop turn that sent
    PUBLISH frames: on a machine shared with its subscribers' nodes, a writer's burst otherwise starved them."""
    turns: list[str] = []
    monkeypatch.setattr(engine_module, "_yield", lambda: turns.append(threading.current_thread().name))
    a, b = mesh.node("a"), mesh.node("b")
    a.connect(b)
    got: list[bytes] = []
    b.subscribe("t", lambda topic, payload, origin: got.append(payload))
    assert wait_until(lambda: "t" in a.directory().get(b.id, {}).get("topics", []))
    before = len(turns)
    for index in range(20):
        a.publish("t", b"%d" % index)
    assert wait_until(lambda: len(got) == 20)
    yielded = turns[before:]
    assert 1 <= len(yielded) <= 20  # one per turn that flushed publishes, never more than one per publish
    assert set(yielded) <= {"pynndb-a-loop", "pynndb-b-loop"}  # on the nodes' loop threads


def test_topic_data_only_flows_toward_subscribers(mesh: Mesh) -> None:
    hub, wanted, bystander = mesh.node("hub"), mesh.node("wanted"), mesh.node("bystander")
    hub.connect(wanted)
    hub.connect(bystander)
    got: list[bytes] = []
    wanted.subscribe("t", lambda topic, payload, origin: got.append(payload))
    assert wait_until(lambda: "t" in hub.directory()[wanted.id]["topics"])
    for _ in range(50):
        hub.publish("t", b"x")
    assert wait_until(lambda: len(got) == 50)
    assert bystander.status()["counters"]["publish_frames_in"] == 0


def test_register_command_and_node_to_node_call(mesh: Mesh) -> None:
    a, b = mesh.node("a"), mesh.node("b")
    a.connect(b)

    def echo(params: dict, context: dict) -> dict:
        return {"echo": params, "origin": context["origin"], "node": context["node"].label}

    def missing(params: dict, context: dict) -> dict:
        raise NoSuchTable("no table people")

    def explode(params: dict, context: dict) -> dict:
        raise RuntimeError("boom")

    b.register_command("ECHO", echo, help="Echo the params.")
    b.register_command("MISSING", missing)
    b.register_command("EXPLODE", explode)
    assert a.call("ECHO", {"x": 1}, target=b.id) == {"echo": {"x": 1}, "origin": a.id, "node": "b"}
    with pytest.raises(CommandError) as error:
        a.call("MISSING", target="b")
    assert error.value.code == "no_such_table"
    with pytest.raises(CommandError) as error:
        a.call("EXPLODE", target="b")
    assert error.value.code == "internal_error"
    assert a.call("PING", target="b")["peer"] == b.id
    assert b.call("HELP", {"command": "echo"})["commands"] == {"ECHO": "Echo the params."}


def test_slow_handler_does_not_stall_the_loop(mesh: Mesh) -> None:
    a, b = mesh.node("a"), mesh.node("b")
    a.connect(b)
    release = threading.Event()
    b.register_command("SLOW", lambda params, context: {"done": release.wait(5)})
    b.subscribe("t", lambda topic, payload, origin: release.wait(5))
    results: list[dict] = []
    caller = threading.Thread(target=lambda: results.append(a.call("SLOW", target="b", timeout=5)))
    caller.start()
    assert wait_until(lambda: "t" in a.directory()[b.id]["topics"])
    a.publish("t", b"blocks the callback thread")
    # PING is answered while both a handler and a subscriber callback are blocked.
    assert a.call("PING", target="b", timeout=2)["peer"] == b.id
    release.set()
    caller.join(5)
    assert results == [{"done": True}]


def test_service_info_and_peer_changes(mesh: Mesh) -> None:
    a, b = mesh.node("a"), mesh.node("b")
    changes: list[tuple[str, str]] = []
    a.on_peer_change(lambda node_id, state: changes.append((node_id, state)))
    a.connect(b)
    b.set_service_info("replicates", ["db-uuid-1"])
    assert wait_until(lambda: a.directory()[b.id]["services"].get("replicates") == ["db-uuid-1"])
    entry = a.directory()[b.id]
    assert {"label", "address", "alive", "links", "services", "last_seen"} <= set(entry)
    b_id = b.id
    b.stop()
    assert wait_until(lambda: not a.directory()[b_id]["alive"])
    assert wait_until(lambda: changes == [(b_id, "up"), (b_id, "down")])
