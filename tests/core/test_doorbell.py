"""The commit doorbell: listeners woken by commits of any process, for every LMDB setting, never blocked by the dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynndb import Database, Manager
from pynndb.core.doorbell import BELL_DIRECTORY, SUFFIX, Doorbell, remove_stale
from pynndb.errors import DatabaseError

WRITER = textwrap.dedent(
    """
    import sys
    from pynndb import Manager
    path, writemap, count = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
    with Manager() as manager:
        table = manager.database("d", path, config={"replication": True, "writemap": writemap}).table("t")
        print("ready", flush=True)
        sys.stdin.readline()
        for number in range(count):
            table.append({"n": number})
        print("done", flush=True)
    """
)

LISTENER = textwrap.dedent(
    """
    import sys, time
    from pynndb.core.doorbell import Doorbell
    bell = Doorbell(sys.argv[1])
    print(bell.file, flush=True)
    time.sleep(60)
    """
)


@pytest.fixture
def journaled(tmp_path: Path) -> Iterator[Database]:
    with Manager() as manager:
        yield manager.database("d", str(tmp_path / "db"), config={"replication": True})


def start(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def follow(bell: Doorbell, db: Database, count: int) -> None:
    """Wait until the journal reaches `count` entries, woken only by the doorbell (every wait must be rung)."""
    for _ in range(2 * count + 2):  # a ring may cover several commits, and a drained ring may arrive late
        bell.drain()
        if db.replication.sequence >= count:
            return
        assert bell.wait(10.0), f"a commit went unnoticed: sequence {db.replication.sequence} of {count}"
    raise AssertionError(f"the journal never reached {count}")


@pytest.mark.parametrize("writemap", [False, True])
@pytest.mark.parametrize("count", [1, 300])
def test_a_commit_in_another_process_wakes_the_listener(tmp_path: Path, writemap: bool, count: int) -> None:
    path = str(tmp_path / "db")
    writer = start(WRITER, path, "1" if writemap else "0", str(count))
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        with Manager() as manager, Doorbell(path) as bell:
            db = manager.database("d", path, config={"writemap": writemap})
            start_sequence = db.replication.sequence
            assert not bell.wait(0.0)
            writer.stdin.write("go\n")
            writer.stdin.flush()
            follow(bell, db, start_sequence + count)
            assert db.table("t").records() == count
        assert writer.stdout.readline().strip() == "done"
    finally:
        writer.kill()
        writer.wait(10)


def test_a_burst_in_threads_leaves_no_commit_unnoticed(journaled: Database) -> None:
    table = journaled.table("t")
    with Doorbell(journaled.path) as bell:
        base = journaled.replication.sequence

        def write() -> None:
            for number in range(200):
                table.append({"n": number})

        writers = [threading.Thread(target=write) for _ in range(3)]
        for writer in writers:
            writer.start()
        follow(bell, journaled, base + 600)
        for writer in writers:
            writer.join(10)
    assert table.records() == 600


def test_a_dead_listener_blocks_nothing_and_is_removed(journaled: Database) -> None:
    table = journaled.table("t")
    listener = start(LISTENER, journaled.path)
    assert listener.stdout is not None
    file = listener.stdout.readline().strip()
    assert os.path.exists(file)
    listener.send_signal(signal.SIGKILL)
    listener.wait(10)
    with Doorbell(journaled.path) as live:  # binding first removes files of dead processes
        assert not os.path.exists(file)
        table.append({"n": 1})
        assert live.wait(10.0)


def test_a_listener_killed_after_the_scan_is_dropped_by_the_ringer(journaled: Database) -> None:
    table = journaled.table("t")
    listener = start(LISTENER, journaled.path)
    assert listener.stdout is not None
    file = listener.stdout.readline().strip()
    table.append({"n": 0})  # the ringer now knows the listener
    listener.send_signal(signal.SIGKILL)
    listener.wait(10)
    for number in range(50):
        table.append({"n": number})  # connection refused: the file goes, writes never block
    assert not os.path.exists(file)
    assert table.records() == 51


def test_a_listener_that_never_drains_blocks_no_writer(journaled: Database) -> None:
    table = journaled.table("t")
    with Doorbell(journaled.path) as bell:
        for number in range(100):
            table.append({"n": number})
        for _ in range(70_000):
            journaled._bell.ring()  # its pipe fills at 64 KiB; later rings are dropped, never waited for
        table.append({"n": 100})
        assert bell.drain() == 65536
        assert not bell.wait(0.0)


def test_close_removes_the_fifo_and_the_context_manager_closes(journaled: Database) -> None:
    with Doorbell(journaled.path) as bell:
        assert os.path.exists(bell.file)
        assert os.path.dirname(bell.file) == os.path.join(journaled.path, BELL_DIRECTORY)
    assert bell.closed and not os.path.exists(bell.file)
    bell.close()  # twice is harmless
    with pytest.raises(DatabaseError, match="closed"):
        bell.wait(0)
    forgotten = Doorbell(journaled.path)
    file = forgotten.file
    del forgotten
    assert not os.path.exists(file)


def test_stale_files_of_dead_processes_are_removed(tmp_path: Path) -> None:
    directory = tmp_path / BELL_DIRECTORY
    directory.mkdir()
    (directory / f"999999999-abc{SUFFIX}").write_bytes(b"")
    (directory / f"{os.getpid()}-abc{SUFFIX}").write_bytes(b"")
    (directory / "notes.txt").write_bytes(b"")
    assert remove_stale(str(directory)) == 1
    assert sorted(os.listdir(directory)) == sorted([f"{os.getpid()}-abc{SUFFIX}", "notes.txt"])


def test_bad_paths_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no database directory"):
        Doorbell(str(tmp_path / "missing"))
    file = tmp_path / "file"
    file.write_bytes(b"")
    with pytest.raises(DatabaseError, match="no database directory"):
        Doorbell(str(file))
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / BELL_DIRECTORY).write_bytes(b"")  # a file where the listeners' directory should be
    with pytest.raises(DatabaseError, match="cannot listen"):
        Doorbell(str(blocked))


def test_long_paths_work(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    with Manager() as manager:
        db = manager.database("d", str(deep), config={"replication": True})
        assert len(os.path.join(db.path, BELL_DIRECTORY, "x" * 20)) > 108
        with Doorbell(db.path) as bell:
            db.table("t").append({"n": 1})
            assert bell.wait(10.0)


def test_databases_without_a_journal_do_not_ring(manager: Manager, tmp_path: Path) -> None:
    db = manager.database("plain", str(tmp_path / "plain"))
    with Doorbell(db.path) as bell:
        db.table("t").append({"n": 1})
        assert not bell.wait(0.05)


def test_a_ring_never_writes_into_a_descriptor_another_thread_closes(
    journaled: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads of one process commit one after the other but ring at the same time; the database's close (or a ring
    dropping a dead listener) closes descriptors another ring may be writing to. The close waits for the ring: a
    write never goes into a closed descriptor, or whatever file reuses its number."""
    from pynndb.core import doorbell

    with Doorbell(journaled.path):
        bell = doorbell.Bell(journaled.path)
        bell.ring()  # it knows the listener now
        closing = threading.Thread(target=bell.close)
        open_when_written: list[bool] = []
        real_write = os.write

        def write_while_closing(descriptor: int, data: bytes) -> int:
            closing.start()
            closing.join(0.2)  # (bounded: with the lock the close cannot finish before this write)
            try:
                os.fstat(descriptor)
                open_when_written.append(True)
            except OSError:
                open_when_written.append(False)
            return real_write(descriptor, data)

        monkeypatch.setattr(doorbell.os, "write", write_while_closing)
        bell.ring()
        monkeypatch.setattr(doorbell.os, "write", real_write)
        closing.join(5)
        assert open_when_written == [True] and not closing.is_alive()
