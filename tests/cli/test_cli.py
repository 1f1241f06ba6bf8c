"""The `pynndb` command against a running in-process node: status, call, diff, and help that stays true."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from pynndb import Database, Manager
from pynndb.cli import render
from pynndb.cli.main import main
from pynndb.mesh.controller import Controller
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)


def invoke(node: Controller, *args: str) -> click.testing.Result:
    return CliRunner().invoke(main, [*args, "--node", f"tcp://127.0.0.1:{node.port3}"], catch_exceptions=False)


def open_db(manager: Manager, tmp_path: Path, name: str) -> Database:
    return manager.database(name, str(tmp_path / name), config={"replication": True})


def test_status_json(pair: tuple[Controller, Controller], manager: Manager, tmp_path: Path) -> None:
    a, b = pair
    db = open_db(manager, tmp_path, "db")
    a.call("REGISTER", {"path": db.path})
    result = invoke(a, "status", "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["label"] == "a"
    assert status["databases"][db.path]["uuid"] == db.replication.uuid
    remote = json.loads(invoke(a, "status", "--json", "--target", "b").output)
    assert remote["label"] == "b"
    every = json.loads(invoke(a, "status", "--json", "--all").output)
    assert sorted(entry["label"] for entry in every) == ["a", "b"]


def test_status_rendered(pair: tuple[Controller, Controller]) -> None:
    result = invoke(pair[0], "status")
    assert result.exit_code == 0, result.output
    assert "a" in result.output


def test_status_json_from_a_separate_process(pair: tuple[Controller, Controller]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pynndb", "status", "--json", "--node", f"tcp://127.0.0.1:{pair[0].port3}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["label"] == "a"


def test_call_ping(pair: tuple[Controller, Controller]) -> None:
    a, _ = pair
    result = invoke(a, "call", "PING", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pong"] is True
    routed = invoke(a, "call", "PING", "--target", "b", "--json")
    assert json.loads(routed.output)["label"] == "b"
    assert invoke(a, "call", "PING").exit_code == 0


def test_call_errors_exit_non_zero_with_the_code(pair: tuple[Controller, Controller], tmp_path: Path) -> None:
    a, _ = pair
    missing = json.dumps({"path": str(tmp_path / "missing")})
    result = invoke(a, "call", "REGISTER", missing)
    assert result.exit_code == 1
    assert "not_found" in result.output
    wrong_type = invoke(a, "call", "REGISTER", '{"path": 42}')
    assert wrong_type.exit_code == 1
    assert "bad_params" in wrong_type.output
    unknown = invoke(a, "call", "NO_SUCH_COMMAND")
    assert unknown.exit_code == 1
    assert "unknown_command" in unknown.output
    not_json = invoke(a, "call", "REGISTER", "{not json")
    assert not_json.exit_code == 2
    not_object = invoke(a, "call", "REGISTER", "[1, 2]")
    assert not_object.exit_code == 2
    assert invoke(a, "call", "PING").exit_code == 0


def test_diff_exit_status(pair: tuple[Controller, Controller], manager: Manager, tmp_path: Path) -> None:
    a, b = pair
    source, replica, other = (open_db(manager, tmp_path, name) for name in ("source", "replica", "other"))
    source.table("people").append({"name": "Tom Jones"})
    other.table("people").append({"name": "Someone Else"})
    a.call("REGISTER", {"path": source.path})
    a.call("REGISTER", {"path": other.path})
    b.call("REPLICATE", {"path": replica.path, "uuid": source.replication.uuid})
    uuids = [db.replication.uuid for db in (source, replica, other)]
    wait_until(lambda: invoke(a, "diff", uuids[0], uuids[1]).exit_code == 0, timeout=10)
    identical = invoke(a, "diff", uuids[0], uuids[1])
    assert "identical" in identical.output
    assert json.loads(invoke(a, "diff", uuids[0], uuids[1], "--json").output) == {}
    different = invoke(a, "diff", uuids[0], uuids[2])
    assert different.exit_code == 2
    assert json.loads(invoke(a, "diff", uuids[0], uuids[2], "--json").output) != {}
    unknown = invoke(a, "diff", uuids[0], "00000000-0000-0000-0000-000000000000")
    assert unknown.exit_code == 1
    assert "not_found" in unknown.output


def test_replicate_and_diff_with_tables(pair: tuple[Controller, Controller], manager: Manager, tmp_path: Path) -> None:
    a, b = pair
    source, replica = open_db(manager, tmp_path, "source"), open_db(manager, tmp_path, "replica")
    for name in ("people", "places", "things"):
        source.table(name).append({"name": name})
    a.call("REGISTER", {"path": source.path})
    uuid = source.replication.uuid
    chosen = ["--table", "people", "--table", "places"]
    replicated = invoke(a, "replicate", "--path", replica.path, "--uuid", uuid, *chosen, "--target", "b", "--json")
    assert replicated.exit_code == 0, replicated.output
    assert json.loads(replicated.output)["tables"] == ["people", "places"]
    uuids = [uuid, replica.replication.uuid]
    wait_until(lambda: invoke(a, "diff", *uuids, *chosen).exit_code == 0, timeout=10)
    assert "identical" in invoke(a, "diff", *uuids, *chosen).output
    assert invoke(a, "diff", *uuids).exit_code == 2  # 'things' is not replicated
    assert invoke(a, "diff", *uuids, "--table", "things").exit_code == 2
    status = json.loads(invoke(a, "status", "--json", "--target", "b").output)
    assert status["databases"][replica.path]["replicas"][0]["tables"] == ["people", "places"]
    console = Console(width=200, record=True)
    console.print(render.replicas_table(status["databases"]))
    assert "one-way [people, places]" in console.export_text()
    other = invoke(a, "replicate", "--path", replica.path, "--uuid", uuid, "--table", "people", "--target", "b")
    assert other.exit_code == 1 and "filter_conflict" in other.output


def commands() -> list[str]:
    return sorted(main.commands)


def test_main_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in commands():
        assert name in result.output


@pytest.mark.parametrize("name", commands())
def test_each_command_help_mentions_its_options(name: str) -> None:
    command = main.commands[name]
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    for parameter in command.params:
        if isinstance(parameter, click.Option):
            assert any(option in result.output for option in parameter.opts), (name, parameter.opts)
        else:
            assert parameter.human_readable_name.upper() in result.output, (name, parameter.name)


def test_node_help_documents_running_a_node() -> None:
    output = CliRunner().invoke(main, ["node", "--help"]).output
    for option in ("--label", "--ports", "--connect", "--db", "--keys", "--heartbeat"):
        assert option in output


@pytest.mark.parametrize(
    "args", [["status"], ["status", "--watch", "1"], ["call", "PING"], ["diff", "a" * 32, "b" * 32]]
)
def test_no_node_at_the_address_is_said_at_once(args: list[str]) -> None:
    from tests.mesh.conftest import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, [*args, "--node", address], catch_exceptions=False)
    assert result.exit_code == 1
    # The one-second probe answered, not the command's own 10 s timeout.
    assert f"no node answers at {address} within 1s" in result.output
    assert "pynndb node" in result.output


def test_a_node_process_keeps_the_memory_it_frees_where_malloc_is_glibc() -> None:
    """`pynndb node` tunes glibc's malloc (no give-back after every large free); elsewhere it says it could not."""
    from pynndb.cli.main import _keep_freed_memory

    assert _keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
