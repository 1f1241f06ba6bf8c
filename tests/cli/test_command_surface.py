"""One command surface: the docs' command tables, the spec registry, the Plugin verbs and the CLI verbs agree, and
the CLI verbs work against in-process nodes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pynndb import Database, Manager
from pynndb.cli.main import main
from pynndb.cli.verbs import cli_name
from pynndb.mesh.command_specs import SPECS
from pynndb.mesh.controller import Controller
from pynndb.mesh.verbs import CommandVerbs
from tests.cli.test_cli import invoke
from tests.helpers import wait_until

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent.parent
# Where each group's command table lives: heading -> file.
TABLES = {
    "mesh": (ROOT / "docs" / "mesh.md", "## Commands"),
    "replication": (ROOT / "PROTOCOL.md", "### Replication commands"),
}
CLIENT_OPTIONS = {"target", "node", "keys", "server_key", "as_json"}


def documented(group: str) -> dict[str, str]:
    """Command name -> params cell of the group's table (``STOP / START`` rows name two commands)."""
    path, heading = TABLES[group]
    section = path.read_text().split(heading + "\n", 1)[1]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"[A-Z]+( / [A-Z]+)*", cells[0]):
            for name in cells[0].split(" / "):
                rows[name] = cells[1]
    return rows


@pytest.mark.parametrize("group", sorted(TABLES))
def test_docs_tables_match_the_registry(group: str) -> None:
    rows = documented(group)
    specs = {name: spec for name, spec in SPECS.items() if spec.group == group}
    assert set(rows) == set(specs), f"{TABLES[group][0].name}: documented {sorted(rows)}, registered {sorted(specs)}"
    for name, spec in specs.items():
        cell = rows[name]
        written = {word.strip() for braces in re.findall(r"\{([^}]*)\}", cell) for word in braces.split(",")} - {""}
        for param in spec.params:
            assert param.name in written or param.name + "?" in written, f"{name}: {param.name} not documented"
            if param.required:
                assert param.name + "?" not in written, f"{name}: {param.name} is required, documented optional"
        assert {word.rstrip("?") for word in written} <= {param.name for param in spec.params}, name


def test_every_spec_has_a_plugin_verb_and_a_cli_verb_with_its_params() -> None:
    for spec in SPECS.values():
        assert spec.verb is not None
        assert callable(getattr(CommandVerbs, spec.verb, None)), spec.name
        command = main.commands[cli_name(spec)]
        if cli_name(spec) == "status":
            continue  # the richer `pynndb status` predates the specs (it shows STATUS as tables)
        options = {param.name for param in command.params}
        assert options == {param.name for param in spec.params} | CLIENT_OPTIONS, spec.name
        assert spec.help.splitlines()[0] in (command.help or ""), spec.name


def test_every_generated_cli_verb_maps_to_a_spec() -> None:
    verbs = {cli_name(spec): spec for spec in SPECS.values()}
    generated = [name for name, command in main.commands.items() if _is_generated(command)]
    assert generated and set(generated) <= set(verbs)
    assert set(verbs) - {"status"} <= set(generated)


def _is_generated(command: click.Command) -> bool:
    return command.callback is not None and command.callback.__module__ == "pynndb.cli.verbs"


# --- the verbs against running nodes ---------------------------------------------------------------------------
def as_json(node: Controller, *args: str) -> object:
    result = invoke(node, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _db(manager: Manager, tmp_path: Path, name: str) -> Database:
    return manager.database(name, str(tmp_path / name), config={"replication": True})


def test_mesh_cli_verbs(pair: tuple[Controller, Controller]) -> None:
    a, b = pair
    assert as_json(a, "lookup", "b")["peer"] == b.id  # type: ignore[index]
    assert as_json(a, "ping", "--target", "b")["label"] == "b"  # type: ignore[index]
    assert set(as_json(a, "nodes")) == {a.id, b.id}  # type: ignore[arg-type]
    assert "REPLICATE" in as_json(a, "help")  # type: ignore[operator]
    rendered = invoke(a, "lookup", "b")
    assert rendered.exit_code == 0 and "LOOKUP" in rendered.output
    missing = invoke(a, "lookup", "nobody")
    assert missing.exit_code == 1 and "not_found" in missing.output
    assert invoke(a, "unlink").exit_code == 1  # neither --address nor --peer: bad_params from the node


def test_replication_cli_verbs(pair: tuple[Controller, Controller], manager: Manager, tmp_path: Path) -> None:
    a, b = pair
    source, copy = _db(manager, tmp_path, "source"), _db(manager, tmp_path, "copy")
    source.table("people").append({"name": "Ann"})
    uuid = source.replication.uuid
    assert as_json(a, "register", source.path)["uuid"] == uuid  # type: ignore[index]
    replicated = as_json(a, "replicate", "--path", copy.path, "--uuid", uuid, "--mode", "one-way", "--target", "b")
    assert replicated == {"path": os.path.realpath(copy.path), "uuid": copy.replication.uuid, "source": uuid,
                          "mode": "one-way", "tables": None}  # fmt: skip
    wait_until(lambda: "people" in copy.tables() and copy.table("people").records() == 1, timeout=15)
    assert as_json(a, "digest", uuid)["tables"]["people"]["records"] == 1  # type: ignore[index]
    assert as_json(a, "pause", "--target", "b") == 1
    assert as_json(a, "resume", "--uuid", uuid, "--target", "b") == 1
    assert as_json(a, "unreplicate", "--path", copy.path, "--uuid", uuid, "--target", "b")["unreplicated"]  # type: ignore[index]
    bad_mode = invoke(a, "replicate", "--path", copy.path, "--uuid", uuid, "--mode", "sideways")
    assert bad_mode.exit_code == 2 and "sideways" in bad_mode.output  # click refuses it before any call
    bad_uuid = invoke(a, "replicate", "--path", copy.path, "--uuid", "not-a-uuid", "--target", "b")
    assert bad_uuid.exit_code == 1 and "bad_params" in bad_uuid.output
    assert invoke(a, "replicate", "--uuid", uuid).exit_code == 2  # --path is required
    assert as_json(a, "unregister", source.path)["unregistered"] is True  # type: ignore[index]


def test_cli_verb_without_a_node_fails_fast() -> None:
    result = CliRunner().invoke(main, ["ping", "--node", "tcp://127.0.0.1:9"], catch_exceptions=False)
    assert result.exit_code == 1 and "no node answers" in result.output


@pytest.mark.parametrize("verb", sorted(cli_name(spec) for spec in SPECS.values()))
def test_every_cli_verb_has_help(verb: str) -> None:
    result = CliRunner().invoke(main, [verb, "--help"])
    assert result.exit_code == 0 and "--node" in result.output and "--json" in result.output
