"""Crash safety: a process applying entries (or a snapshot) killed with SIGKILL mid-stream; a fresh handle resumes
from the stored high-water mark with nothing lost and nothing applied twice."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from pynndb import Manager
from pynndb.core.entries import decode_body
from pynndb.replication import LocalReplicator, diff
from tests.helpers import person

TIMEOUT = 60

APPLIER = """
import sys
from pynndb import Manager
from pynndb.replication import Publisher, Replica

manager = Manager()
source = manager.database("source", sys.argv[1])
target = manager.database("target", sys.argv[2], config={"replication": True})
publisher = Publisher(source, batch_entries=int(sys.argv[3]))
replica = Replica(target, source.replication.uuid).register()
for request in replica.start():
    for message in publisher.serve(request):
        replica.receive(message)
        print(type(message).__name__, replica.hwm, flush=True)
print("done", flush=True)
"""


def progress_lines(process: subprocess.Popen, count: int, timeout: float = TIMEOUT) -> list[str]:
    """Read `count` lines of the child's output, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    buffer = b""
    while buffer.count(b"\n") < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the applier gave only {buffer!r} in {timeout}s"
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"the applier ended early: {buffer!r} {process.stderr.read()!r}"
            buffer += chunk
    return buffer.decode().splitlines()


def kill_applier_after(source_path: str, target_path: str, lines: int, batch_entries: int = 50) -> list[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", APPLIER, source_path, target_path, str(batch_entries)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        seen = progress_lines(process, lines)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=TIMEOUT)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert "done" not in seen, "the applier finished before it was killed: make the source bigger"
    return seen


def test_killed_applier_resumes_without_loss_or_double_apply(tmp_path: Path) -> None:
    source_path, target_path = str(tmp_path / "source"), str(tmp_path / "target")
    with Manager() as manager:
        source = manager.database("source", source_path, config={"replication": True})
        people = source.table("people")
        people.ensure("by_email", "{email}")  # unique: a document applied twice under another key would fail
        for number in range(20_000):
            people.append(person(number))
        total = source.replication.sequence
    kill_applier_after(source_path, target_path, lines=5)
    with Manager() as manager:
        source = manager.database("source", source_path)
        target = manager.database("target", target_path)
        killed_at = target.replication.marks()[source.replication.uuid]
        assert 0 < killed_at < total
        # Exactly once so far: one target journal entry per source entry applied, nothing past the mark.
        assert target.replication.sequence == killed_at
        assert len(target["people"]) == killed_at - 2  # create and ensure carry no document
        replicator = LocalReplicator(source, target)
        assert replicator.sync() == total - killed_at
        replica = replicator.replicas[0]
        assert replica.counters["full_resyncs"] == 0
        assert replica.counters["duplicates"] == 0
        assert diff(source, target) == {}
        assert target.replication.marks()[source.replication.uuid] == total
        assert len(target["people"]) == 20_000
        source_versions = [decode_body(body).version for _s, _c, body in source.replication.entries(1, 100_000)]
        target_versions = [decode_body(body).version for _s, _c, body in target.replication.entries(1, 100_000)]
        assert target_versions == source_versions, "each source entry applied exactly once, in order"


def test_killed_snapshot_apply_restarts_the_snapshot(tmp_path: Path) -> None:
    source_path, target_path = str(tmp_path / "source"), str(tmp_path / "target")
    with Manager() as manager:
        source = manager.database("source", source_path, config={"replication": True, "journal": {"max_entries": 5}})
        people = source.table("people")
        people.append_many([person(number) for number in range(60_000)])
        for number in range(60_000, 60_600):
            people.append(person(number))
        assert source.replication.retained[0] > 1, "the journal must be trimmed so the replica needs a snapshot"
    seen = kill_applier_after(source_path, target_path, lines=3)
    assert seen[0].startswith("SnapshotBegin") and seen[2].startswith("SnapshotChunk")
    with Manager() as manager:
        source = manager.database("source", source_path)
        target = manager.database("target", target_path)
        assert source.replication.uuid not in target.replication.marks(), "a broken snapshot sets no mark"
        replicator = LocalReplicator(source, target)
        replicator.sync()
        replica = replicator.replicas[0]
        assert replica.counters["full_resyncs"] == 1
        assert diff(source, target) == {}
        assert len(target["people"]) == 60_600
        assert target.replication.marks()[source.replication.uuid] == source.replication.sequence
