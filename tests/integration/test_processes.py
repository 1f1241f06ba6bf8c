"""Real processes on one database: concurrent writers, snapshot readers, a SIGKILLed writer, reopen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pynndb import Database, Manager
from pynndb.core.entries import single_put
from pynndb.errors import ReadOnlyDatabase
from tests.helpers import wait_until
from tests.integration import process_workers

WORKERS = str(Path(process_workers.__file__))


class Worker:
    """A worker process speaking JSON lines on stdout; killed at teardown if still running."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, WORKERS, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read(self) -> dict[str, Any]:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self.process.wait(timeout=30)
            raise AssertionError(f"worker exited ({self.process.returncode}): {self.process.stderr.read()}")  # type: ignore[union-attr]
        return json.loads(line)  # type: ignore[no-any-return]

    def send(self, text: str) -> None:
        self.process.stdin.write(text + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]

    def finish(self, timeout: float = 60) -> None:
        """Wait for a clean exit."""
        _out, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, err

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=30)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "shared")


def start(workers: list[Worker], *args: str) -> Worker:
    worker = Worker(*args)
    workers.append(worker)
    return worker


def run(workers: list[Worker], *args: str) -> dict[str, Any]:
    """Run a worker to completion and return its (single) report."""
    worker = start(workers, *args)
    report = worker.read()
    worker.finish()
    return report


def create(path: str) -> None:
    """Create the database and its tables before processes race to do it."""
    manager, _db = process_workers.open_events(path)
    manager.close()


def append_at_once(workers: list[Worker], path: str, names: tuple[str, ...], count: int) -> None:
    """One `append` worker per name, all appending `count` records at once; returns when each is done."""
    writers = [start(workers, "append", path, name, str(count)) for name in names]
    for writer in writers:
        assert writer.read() == {"event": "ready"}
    for writer in writers:
        assert writer.read() == {"event": "done", "count": count}
        writer.finish()


def journaled_keys(db: Database) -> list[str]:
    """The keys of the `events` records the journal's one-put entries carry, after checking that the journal is
    gapless and its clocks grow strictly."""
    entries = db.replication.entries(1, 10_000_000, max_bytes=1 << 40)
    assert [seq for seq, _clock, _body in entries] == list(range(1, db.replication.sequence + 1))
    clocks = [clock for _seq, clock, _body in entries]
    assert clocks == sorted(set(clocks))
    puts = [single_put(body) for _seq, _clock, body in entries]
    return [put[3] for put in puts if put is not None and put[2] == "events"]


@pytest.mark.timeout(90)
def test_two_processes_appending_concurrently_lose_nothing(workers: list[Worker], path: str) -> None:
    create(path)
    append_at_once(workers, path, ("a", "b"), 1500)
    report = run(workers, "check", path)
    assert len(report["keys"]) == 3000
    assert report["serial_index_ok"] and report["writer_index_ok"]
    with Manager() as manager:
        events = manager.database("events", path).table("events")
        for name in ("a", "b"):
            serials = [doc["serial"] for doc in events.seek("by_writer", {"writer": name})]
            assert sorted(serials) == [f"{name}-{n:06d}" for n in range(1500)]


@pytest.mark.timeout(90)
def test_two_processes_appending_to_a_journaled_database_keep_one_gapless_journal(
    workers: list[Worker], path: str
) -> None:
    """Each process's append journals its entry without reading the journal's end while nothing else wrote since
    its own last one (Replication.write_insert); two processes appending at once interleave all the time. Every
    append is one entry, sequences are gapless, clocks grow, and each record is in exactly one entry."""
    manager = Manager()
    manager.database("events", path, config={"replication": True})
    manager.close()
    create(path)
    append_at_once(workers, path, ("a", "b"), 1500)
    with Manager() as manager:
        db = manager.database("events", path)
        keys = journaled_keys(db)
        assert len(keys) == len(set(keys)) == 3000
        assert sorted(keys) == sorted(doc.key for doc in db.table("events").find())


@pytest.mark.timeout(90)
def test_a_journaled_writer_killed_mid_stream_leaves_records_and_journal_in_step(
    workers: list[Worker], path: str
) -> None:
    """SIGKILL a process in the middle of its per-call appends to a journaled database (each one a bare LMDB
    transaction writing record, index keys and journal entry): what committed has its entry, what has an entry is
    there, and the journal stays gapless; a writer that opens the database next goes on from its end."""
    manager = Manager()
    manager.database("events", path, config={"replication": True})
    manager.close()
    create(path)
    writer = start(workers, "append", path, "k", "1000000")
    assert writer.read() == {"event": "ready"}
    with Manager() as manager:
        events = manager.database("events", path).table("events")
        wait_until(lambda: events.records() >= 500, timeout=30, interval=0.01)
    writer.kill()
    run(workers, "append", path, "after", "50")
    with Manager() as manager:
        db = manager.database("events", path)
        journaled = sorted(journaled_keys(db))
        stored = sorted(doc.key for doc in db.table("events").find())
        assert journaled == stored
        assert len([doc for doc in db.table("events").find() if doc["writer"] == "after"]) == 50


@pytest.mark.timeout(90)
def test_reader_process_sees_consistent_snapshots_while_a_writer_runs(workers: list[Worker], path: str) -> None:
    create(path)
    reader = start(workers, "snapshot_reader", path, "4000")
    assert reader.read() == {"event": "ready"}
    writer = start(workers, "pairs", path, "4000")
    report = reader.read()
    reader.finish()
    assert writer.read() == {"event": "done"}
    writer.finish()
    assert report["event"] == "consistent", report
    assert report["monotonic"] and report["last"] == 4000
    assert report["distinct"] >= 3  # the reader really overlapped the writer
    with Manager() as manager:
        assert manager.database("events", path).table("audit").records() == 4000


@pytest.mark.timeout(60)
def test_held_read_transaction_does_not_see_later_commits(workers: list[Worker], path: str) -> None:
    create(path)
    run(workers, "append", path, "a", "10")
    holder = start(workers, "held_snapshot", path)
    assert holder.read() == {"event": "before", "count": 10}
    run(workers, "append", path, "b", "25")
    holder.send("go")
    assert holder.read() == {"event": "after", "count": 10, "listed": 10}
    assert holder.read() == {"event": "fresh", "count": 35}
    holder.finish()


@pytest.mark.timeout(90)
def test_sigkill_mid_stream_keeps_every_committed_record(workers: list[Worker], path: str) -> None:
    create(path)
    writer = start(workers, "crash_writer", path)
    committed: list[str] = []
    for _ in range(400):
        committed.append(writer.read()["committed"])
    os.kill(writer.process.pid, signal.SIGKILL)
    writer.process.communicate(timeout=30)
    assert writer.process.returncode == -signal.SIGKILL
    report = run(workers, "check", path)
    present = set(report["keys"])
    assert set(committed) <= present
    # The writer went on committing while we read its reports: what it committed since is there too, and the
    # checks below prove those extra records form an unbroken prefix of its stream (no hole, no half transaction).
    assert sorted(report["audit"]) == report["keys"]  # the two tables moved together
    assert report["serial_index_ok"] and report["writer_index_ok"]
    last = len(present) - 1
    assert report["touched"] == [n - 9 for n in range(last + 1) if n % 10 == 9]
    with Manager() as manager:  # still writable after the crash
        events = manager.database("events", path).table("events")
        events.append({"writer": "after", "serial": "after-0", "n": -1})
        assert events.records() == len(present) + 1


@pytest.mark.timeout(60)
def test_reopen_in_a_new_process_gives_the_same_results(workers: list[Worker], path: str) -> None:
    with Manager() as manager:
        process_workers.open_events(path)[0].close()
        db = manager.database("events", path)
        events, audit = db.table("events"), db.table("audit")
        for writer in ("b", "a", "c"):
            for number in range(20):
                doc = events.append({"writer": writer, "serial": f"{writer}-{number:06d}", "n": number})
                audit.append({"event": doc.key})
        events.delete(events.seek_one("by_serial", {"serial": "c-000004"}))
        expected = json.loads(json.dumps(process_workers.queries(db)))
    assert expected["records"] == 59 and len(expected["seek"]) == 20
    assert run(workers, "dump", path) == expected


def test_a_writer_picks_up_an_index_another_process_added(tmp_path: Path) -> None:
    """The schema changes under an open writer's feet (another process adds an index and a table): its next write
    transaction reloads the schema first, so the new record lands in the index it did not know about."""
    path = str(tmp_path / "schema")
    manager = Manager()
    try:
        db = manager.database("schema", path)
        people = db.table("people")
        people.append({"name": "before", "age": 1})
        script = (
            "import sys; from pynndb import Manager; m = Manager(); db = m.database('x', sys.argv[1]); "
            "db.table('people').ensure('by_age', '{age}'); db.table('other').append({'n': 1}); m.close()"
        )
        subprocess.run([sys.executable, "-c", script, path], check=True, timeout=60)
        people.append({"name": "after", "age": 2})  # this process never asked for by_age
        assert [doc["name"] for doc in people.find("by_age")] == ["before", "after"]
        assert "other" in db.tables()
    finally:
        manager.close()


def test_a_writer_sees_a_schema_change_that_follows_its_own_empty_commit(tmp_path: Path) -> None:
    """An append skips the schema check when its transaction's LMDB id follows the last append's commit (nothing
    committed between). A commit without changes takes no id: after one, another process's change takes the id
    the writer's next transaction would otherwise have followed with, and the writer must still see it."""
    path = str(tmp_path / "schema")
    manager = Manager()
    try:
        db = manager.database("schema", path)
        people = db.table("people")
        people.append({"name": "first", "age": 1})  # the fast path: the next id would follow this commit
        with db.write_transaction():
            pass  # an empty commit: LMDB gives it no id
        script = (
            "import sys; from pynndb import Manager; m = Manager(); db = m.database('x', sys.argv[1]); "
            "db.table('people').ensure('by_age', '{age}'); m.close()"
        )
        subprocess.run([sys.executable, "-c", script, path], check=True, timeout=60)
        people.append({"name": "second", "age": 2})
        assert [doc["name"] for doc in people.find("by_age")] == ["first", "second"]
        script = (  # a plain write of another process (no schema change) between two appends of this one
            "import sys; from pynndb import Manager; m = Manager(); db = m.database('x', sys.argv[1]); "
            "db.table('people').append({'name': 'other', 'age': 3}); db.table('people').ensure('by_name', '{name}');"
            " m.close()"
        )
        subprocess.run([sys.executable, "-c", script, path], check=True, timeout=60)
        people.append({"name": "third", "age": 4})
        assert [doc["name"] for doc in people.find("by_name")] == ["first", "other", "second", "third"]
    finally:
        manager.close()


def test_a_journal_less_writer_follows_another_process_turning_the_journal_on(tmp_path: Path) -> None:
    """This process appends to a database without a journal (the path that skips journal bookkeeping); another
    process turns replication on, then makes the database a read-only replica. The next append here is journaled,
    then refused, each time without reopening."""
    path = str(tmp_path / "plain")
    manager = Manager()
    try:
        db = manager.database("plain", path)
        people = db.table("people")
        people.append({"name": "before"})
        script = (
            "import sys; from pynndb import Manager; m = Manager(); "
            "m.database('x', sys.argv[1], config={'replication': True}); m.close()"
        )
        subprocess.run([sys.executable, "-c", script, path], check=True, timeout=60)
        people.append({"name": "journaled"})
        assert db.replication.enabled and db.replication.sequence == 1
        script = (
            "import sys; from pynndb import Manager; m = Manager(); "
            "m.database('x', sys.argv[1]).replication.set_read_only(True); m.close()"
        )
        subprocess.run([sys.executable, "-c", script, path], check=True, timeout=60)
        with pytest.raises(ReadOnlyDatabase):
            people.append({"name": "refused"})
        assert [doc["name"] for doc in people.find()] == ["before", "journaled"]
        assert db.replication.sequence == 1
    finally:
        manager.close()
