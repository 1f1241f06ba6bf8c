"""The typed command surface: specs validate params in one place, nodes answer bad params with `bad_params` and keep
answering, and every `Plugin` verb works against an in-process mesh."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pynndb import Database, Manager
from pynndb.errors import CommandError, InvalidArgument, InvalidReplication
from pynndb.mesh.command_specs import SPECS, VERBS
from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin
from pynndb.mesh.verbs import CommandVerbs
from tests.helpers import wait_until
from tests.mesh.conftest import Mesh

pytestmark = pytest.mark.timeout(60)
UUID = "00000000-0000-0000-0000-000000000000"


# --- validation, without a node --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "params", "message"),
    [
        ("LOOKUP", {}, "missing parameter 'name'"),
        ("LOOKUP", {"name": 42}, "wrong type"),
        ("LOOKUP", {"name": True}, "wrong type"),
        ("LOOKUP", {"name": "a", "nmae": "b"}, "no parameter 'nmae'"),
        ("CONNECT", {"address": "tcp://127.0.0.1:1", "timeout": "soon"}, "wrong type"),
        ("CONNECT", {"address": "tcp://127.0.0.1:1", "timeout": False}, "wrong type"),
        ("DISCONNECT", {}, "exactly one"),
        ("DISCONNECT", {"address": "a", "peer": "b"}, "exactly one"),
        ("REPLICATE", {"path": "p", "uuid": UUID, "mode": "sideways"}, "must be one of"),
        ("REPLICATE", {"path": "p", "uuid": "not-a-uuid"}, "not a database UUID"),
        ("REPLICATE", {"uuid": UUID}, "missing parameter 'path'"),
        ("DUMP", {"uuid": UUID}, "missing parameter 'table'"),
        ("VERIFY", {"timeout": [1]}, "wrong type"),
        ("PING", {"extra": 1}, "no parameter 'extra'"),
    ],
)
def test_specs_reject_bad_params(command: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as raised:
        SPECS[command].validate(params)
    assert raised.value.code == "bad_params"
    assert isinstance(raised.value, ValueError)  # callers catching the builtin still catch it


def test_specs_fill_defaults_and_accept_ints_for_floats() -> None:
    assert SPECS["REPLICATE"].validate({"path": "p", "uuid": UUID}) == {"path": "p", "uuid": UUID, "mode": "auto"}
    assert SPECS["CONNECT"].validate({"address": "a", "timeout": 3}) == {"address": "a", "timeout": 3.0}
    assert SPECS["STOP"].validate(None) == {}  # an absent optional param without a default stays absent
    assert SPECS["STOP"].validate({"path": None}) == {}
    request = SPECS["REPLICATE"].parse({"path": "p", "uuid": UUID, "mode": "two-way"})
    assert (request.path, request.uuid, request.mode) == ("p", UUID, "two-way")
    with pytest.raises(AttributeError):
        request.mode = "one-way"  # requests are frozen
    with pytest.raises(InvalidReplication):
        SPECS["REPLICATE"].parse({"path": "p", "uuid": "x"})


def test_every_spec_has_help_and_a_verb_of_the_plugin() -> None:
    for spec in SPECS.values():
        assert spec.help and spec.result, spec.name
        assert all(param.help for param in spec.params), spec.name
        assert spec.verb is not None and callable(getattr(CommandVerbs, spec.verb, None)), spec.name
    assert len(VERBS) == len(SPECS)


# --- on a node -------------------------------------------------------------------------------------------------
@pytest.fixture
def pair(mesh: Mesh) -> tuple[Controller, Controller, Plugin]:
    a, b = mesh.node("a"), mesh.node("b")
    a.connect(b)
    wait_until(lambda: mesh.converged([a, b]), timeout=10)
    return a, b, mesh.plugin(a)


@pytest.mark.parametrize(
    ("command", "params"),
    [
        ("REPLICATE", {"path": "/nowhere", "uuid": UUID, "mode": "sideways"}),
        ("REPLICATE", {"path": 3, "uuid": UUID}),
        ("REPLICATE", {"path": "/nowhere"}),
        ("STOP", {"path": ["a"]}),
        ("VERIFY", {"timeout": "ten"}),
        ("RESYNC", {"uuid": UUID}),
        ("DIGEST", {"uuid": UUID, "table": "x"}),
        ("CONNECT", {"address": "tcp://127.0.0.1:1", "timeout": "x"}),
        ("HELP", {"command": 1}),
    ],
)
@pytest.mark.parametrize("target", [None, "b"])
def test_nodes_answer_bad_params_and_keep_answering(
    pair: tuple[Controller, Controller, Plugin], command: str, params: dict[str, Any], target: str | None
) -> None:
    _, _, plugin = pair
    with pytest.raises(CommandError) as raised:
        plugin.call(command, params, target=target, timeout=5)
    assert raised.value.code == "bad_params", str(raised.value)
    assert plugin.ping(target=target)["pong"] is True


def test_help_shows_the_spec_help(pair: tuple[Controller, Controller, Plugin]) -> None:
    _, _, plugin = pair
    texts = plugin.help()
    assert set(SPECS) <= set(texts)
    assert texts["REPLICATE"].startswith("REPLICATE {'path', 'uuid', 'mode'?, 'tables'?}: Make the database")
    assert plugin.help("ping") == {"PING": texts["PING"]}


def test_mesh_verbs(mesh: Mesh, pair: tuple[Controller, Controller, Plugin]) -> None:
    a, b, plugin = pair
    assert plugin.ping()["peer"] == a.id
    assert plugin.ping(target="b")["label"] == "b"
    assert plugin.lookup("b")["peer"] == b.id
    assert set(plugin.nodes()) == {a.id, b.id}
    assert plugin.status(target="b")["peer"] == b.id
    c = mesh.node("c")
    peer = plugin.link(f"tcp://{c.host}:{c.port1}", timeout=5, target="b")
    assert peer == c.id
    assert plugin.unlink(peer="c", target="b") == {"disconnected": True}
    with pytest.raises(CommandError) as raised:
        plugin.unlink(peer="c", target="b")
    assert raised.value.code == "not_found"
    with pytest.raises(CommandError) as raised:
        plugin.unlink(target="b")
    assert raised.value.code == "bad_params"


def _db(manager: Manager, tmp_path: Path, name: str) -> Database:
    return manager.database(name, str(tmp_path / name), config={"replication": True})


def test_replication_verbs(pair: tuple[Controller, Controller, Plugin], manager: Manager, tmp_path: Path) -> None:
    _, b, plugin = pair
    source, copy = _db(manager, tmp_path, "source"), _db(manager, tmp_path, "copy")
    source.table("people").append({"name": "Ann"})
    registered = plugin.register(source.path)
    assert registered["uuid"] == source.replication.uuid and registered["sequence"] >= 1
    uuid = source.replication.uuid
    replicated = plugin.replicate(copy.path, uuid, mode="one-way", target="b")
    assert replicated == {"path": os.path.realpath(copy.path), "uuid": copy.replication.uuid, "source": uuid,
                          "mode": "one-way", "tables": None}  # fmt: skip
    wait_until(lambda: "people" in copy.tables() and copy.table("people").records() == 1, timeout=15)
    assert plugin.digest(uuid)["tables"]["people"]["records"] == 1
    assert [doc["name"] for doc in plugin.dump(uuid, "people")["documents"].values()] == ["Ann"]
    databases = plugin.databases(target="b")
    assert databases[os.path.realpath(copy.path)]["replicas"][0]["source"] == uuid
    assert plugin.pause(path=copy.path, target="b") == 1
    assert plugin.resume(uuid=uuid, target="b") == 1
    wait_until(lambda: _state(plugin, copy) == "live", timeout=15)
    verified = plugin.verify_replicas(path=copy.path, timeout=10, target="b")
    assert [replica["verification"] for replica in verified] == ["match"]
    assert plugin.resync(copy.path, uuid, target="b") == 1
    assert plugin.unreplicate(copy.path, uuid, target="b")["unreplicated"] is True
    assert plugin.unregister(source.path) == {"uuid": uuid, "unregistered": True}
    with pytest.raises(CommandError) as raised:
        plugin.unregister(source.path)
    assert raised.value.code == "not_found"
    with pytest.raises(CommandError) as raised:
        plugin.replicate(copy.path, uuid, mode="sideways", target="b")  # type: ignore[arg-type]
    assert raised.value.code == "bad_params"


def _state(plugin: Plugin, copy: Database) -> str:
    return str(plugin.databases(target="b")[os.path.realpath(copy.path)]["replicas"][0]["state"])
