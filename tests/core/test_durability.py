"""The durability contract of the README, for every LMDB setting: a commit survives its process being SIGKILLed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pynndb import Manager
from pynndb.errors import ConfigError

WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pynndb import Manager

    path, config = sys.argv[1], eval(sys.argv[2])
    db = Manager().database("crash", path, config=config)
    table = db.table("t")
    table.ensure("by_n", "{n}")
    for n in range(200):
        table.append({"n": n})  # one transaction per call
    with db.write_transaction() as txn:
        table.append_many([{"n": n} for n in range(200, 300)], txn=txn)
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no exit handlers: the commits alone must carry the data
    """
)

SETTINGS = [
    {"writemap": False},
    {"writemap": True},
    {"writemap": True, "durable": True},
    {"writemap": False, "durable": True},
    {"writemap": True, "readahead": True},
]


@pytest.mark.parametrize("config", SETTINGS, ids=lambda config: ",".join(f"{k}={v}" for k, v in config.items()))
def test_commits_survive_the_writer_being_killed(tmp_path: Path, config: dict[str, bool]) -> None:
    path = str(tmp_path / "db")
    done = subprocess.run([sys.executable, "-c", WRITER, path, repr(config)], capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    manager = Manager()
    try:
        table = manager.database("crash", path, config=config).table("t")
        assert table.records() == 300
        assert [doc["n"] for doc in table.find("by_n")] == list(range(300))
    finally:
        manager.close()


@pytest.mark.parametrize("writemap", [False, True])
def test_durable_commits_are_synced_with_either_map(tmp_path: Path, writemap: bool) -> None:
    manager = Manager()
    try:
        db = manager.database("durable", str(tmp_path / "db"), config={"durable": True, "writemap": writemap})
        flags = db._env.flags()
        # map_async would make LMDB's sync an asynchronous msync: durable must never combine with it.
        assert flags["sync"] and flags["metasync"] and not flags["map_async"] and flags["writemap"] == writemap
        fast = manager.database("fast", str(tmp_path / "fast"), config={"writemap": writemap})
        assert not fast._env.flags()["sync"] and fast._env.flags()["map_async"] == writemap
    finally:
        manager.close()


def test_readahead_is_off_by_default_and_can_be_turned_on(tmp_path: Path) -> None:
    """LMDB's read-ahead (on unless MDB_NORDAHEAD): off by default, on with config={'readahead': True}; any other
    value is refused before a file is made."""
    manager = Manager()
    try:
        default = manager.database("default", str(tmp_path / "default"))
        assert default._env.flags()["readahead"] is False
        on = manager.database("on", str(tmp_path / "on"), config={"readahead": True})
        assert on._env.flags()["readahead"] is True
        on.table("t").append({"n": 1})
        assert on.table("t").records() == 1
        with pytest.raises(ConfigError, match="readahead"):
            manager.database("bad", str(tmp_path / "bad"), config={"readahead": 1})
        assert not (tmp_path / "bad").exists()
    finally:
        manager.close()
