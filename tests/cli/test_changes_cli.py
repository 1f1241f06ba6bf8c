"""`pynndb changes`: NDJSON of the change feed through the CLI runner, errors, and a `--follow` process woken by
commits of the test process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pynndb import Database, Manager
from pynndb.cli.main import main
from tests.integration.deployment import read_line

pytestmark = pytest.mark.timeout(60)


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(main, ["changes", *args], catch_exceptions=False)


def lines(result: click.testing.Result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@pytest.fixture
def journaled(manager: Manager, tmp_path: Path) -> Database:
    return manager.database("d", str(tmp_path / "db"), config={"replication": True})


def test_prints_every_change_as_ndjson(journaled: Database) -> None:
    people = journaled.table("people")
    tom = people.append({"name": "tom"})
    people.delete(tom)
    journaled.table("other").append({"n": 1})
    result = run(journaled.path)
    assert result.exit_code == 0, result.output
    printed = lines(result)
    assert [(c["table"], c["op"], c["key"], c["doc"]) for c in printed] == [
        ("people", "put", tom.key, {"name": "tom"}),
        ("people", "delete", tom.key, None),
        ("other", "put", printed[2]["key"], {"n": 1}),
    ]
    assert {c["origin"] for c in printed} == {journaled.replication.uuid}
    assert [c["table"] for c in lines(run(journaled.path, "--table", "other"))] == ["other"]
    after = printed[0]["sequence"]
    assert [c["op"] for c in lines(run(journaled.path, "--since", str(after)))] == ["delete", "put"]
    assert [c["op"] for c in lines(run(journaled.path, "--since", f"{after}:0"))] == ["delete", "put"]
    assert lines(run(journaled.path, "--since", "now")) == []


def test_errors_are_clear(journaled: Database, manager: Manager, tmp_path: Path) -> None:
    missing = run(str(tmp_path / "missing"))
    assert missing.exit_code != 0 and "no database" in missing.output
    plain = manager.database("plain", str(tmp_path / "plain"))
    plain.table("t").append({"n": 1})
    refused = run(plain.path)
    assert refused.exit_code == 1 and "ReplicationNotEnabled" in refused.output
    bad = run(journaled.path, "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.output


def test_resuming_past_retention_names_the_oldest_entry(manager: Manager, tmp_path: Path) -> None:
    db = manager.database("d", str(tmp_path / "db"), config={"replication": True, "journal": {"max_entries": 50}})
    table = db.table("t")
    for number in range(200):
        table.append({"n": number})
    oldest = db.replication.retained[0]
    result = run(db.path, "--since", "3")
    assert result.exit_code == 1
    assert "JournalTrimmed" in result.output and str(oldest) in result.output


def test_follow_prints_changes_of_another_process_as_they_commit(journaled: Database) -> None:
    table = journaled.table("t")
    start = journaled.replication.sequence
    command = [sys.executable, "-m", "pynndb", "changes", journaled.path, "--follow", "--since", str(start)]
    follower = subprocess.Popen([*command, "--timeout", "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        for number in range(3):
            written = table.append({"n": number})
            line = json.loads(read_line(follower.stdout, time.monotonic() + 20))
            assert (line["key"], line["doc"]) == (written.key, {"n": number})
        assert follower.wait(20) == 0  # ends 2 s after the last change
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
