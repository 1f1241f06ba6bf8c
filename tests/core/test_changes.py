"""Change feeds: `Database.changes` / `Table.watch` semantics, trimming, replicas, and consumer processes that are
killed and resume from their saved sequence."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynndb import Database, Manager
from pynndb.core.changes import Change
from pynndb.errors import JournalGap, JournalTrimmed, ReplicationNotEnabled
from pynndb.replication import LocalReplicator
from tests.helpers import wait_until

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def journaled(manager: Manager, tmp_path: Path) -> Database:
    return manager.database("d", str(tmp_path / "db"), config={"replication": True})


def summary(changes: Iterator[Change]) -> list[tuple[str, str, str | None, dict | None]]:
    return [(c.table, c.op, c.key, None if c.doc is None else dict(c.doc)) for c in changes]


def test_every_kind_of_change_in_order(journaled: Database) -> None:
    people = journaled.table("people")
    people.ensure("by_name", "{name}")  # schema ops are not changes
    tom = people.append({"name": "tom"})
    tom["age"] = 3
    people.save(tom)
    people.delete(tom)
    other = journaled.table("other")
    kept = other.append({"n": 1})
    other.empty()
    journaled.drop("other")
    assert summary(journaled.changes(since=0, timeout=0)) == [
        ("people", "put", tom.key, {"name": "tom"}),
        ("people", "put", tom.key, {"name": "tom", "age": 3}),
        ("people", "delete", tom.key, None),
        ("other", "put", kept.key, {"n": 1}),
        ("other", "empty", None, None),
        ("other", "drop", None, None),
    ]
    changes = list(journaled.changes(since=0, timeout=0))
    assert [c.sequence for c in changes] == sorted({c.sequence for c in changes})
    assert {c.origin for c in changes} == {journaled.replication.uuid}
    assert changes[0].doc is not None and changes[0].doc.key == tom.key


def test_since_none_zero_and_n(journaled: Database) -> None:
    table = journaled.table("t")
    first = [table.append({"n": n}) for n in range(3)]
    feed = journaled.changes(timeout=0)  # only what is committed after the call
    later = table.append({"n": 3})
    assert [c.key for c in feed] == [later.key]
    assert [c.key for c in journaled.changes(since=0, timeout=0)] == [d.key for d in [*first, later]]
    after = next(c for c in journaled.changes(since=0, timeout=0) if c.key == first[0].key).sequence
    assert [c.key for c in journaled.changes(since=after, timeout=0)] == [d.key for d in [*first[1:], later]]
    assert list(journaled.changes(since=journaled.replication.sequence + 5, timeout=0)) == []


def test_tables_filter_and_table_watch(journaled: Database) -> None:
    a, b = journaled.table("a"), journaled.table("b")
    for n in range(3):
        a.append({"n": n})
        b.append({"n": n})
    assert {c.table for c in journaled.changes(since=0, tables=["b"], timeout=0)} == {"b"}
    assert {c.table for c in journaled.changes(since=0, tables="a", timeout=0)} == {"a"}
    assert [c.doc["n"] for c in a.watch(since=0, timeout=0) if c.doc] == [0, 1, 2]


def test_one_transaction_shares_a_sequence_and_resumes_by_position(journaled: Database) -> None:
    table = journaled.table("t")
    with journaled.write_transaction() as txn:
        docs = [table.append({"n": n}, txn=txn) for n in range(4)]
    changes = list(journaled.changes(since=0, timeout=0))
    assert len({c.sequence for c in changes}) == 1
    assert [c.last for c in changes] == [False, False, False, True]
    assert [c.key for c in journaled.changes(since=changes[1].position, timeout=0)] == [d.key for d in docs[2:]]
    assert list(journaled.changes(since=changes[-1].sequence, timeout=0)) == []


def test_iteration_blocks_until_another_thread_commits(journaled: Database) -> None:
    table = journaled.table("t")
    feed = journaled.changes(timeout=30)
    started = threading.Event()

    def write() -> None:
        started.wait(10)
        table.append({"n": 1})

    writer = threading.Thread(target=write)
    writer.start()
    started.set()
    change = next(feed)
    writer.join(10)
    assert change.doc is not None and change.doc["n"] == 1
    feed.close()  # type: ignore[attr-defined]


def test_no_read_transaction_is_held_while_waiting(journaled: Database) -> None:
    table = journaled.table("t")
    table.append({"n": 0})
    feed = journaled.changes(since=0, timeout=0.2)
    assert next(feed).doc is not None
    assert {line.split()[-1] for line in journaled._env.readers().splitlines()[1:]} <= {"-"}  # no reader active
    assert list(feed) == []  # waited 0.2 s for more, then ended


def test_resuming_past_retention_raises_journal_trimmed(manager: Manager, tmp_path: Path) -> None:
    db = manager.database("d", str(tmp_path / "db"), config={"replication": True, "journal": {"max_entries": 50}})
    table = db.table("t")
    for n in range(200):
        table.append({"n": n})
    first, last = db.replication.retained
    assert first > 10
    with pytest.raises(JournalTrimmed) as raised:
        db.changes(since=5)
    assert raised.value.oldest == first and str(first) in str(raised.value)
    assert isinstance(raised.value, JournalGap) and raised.value.code == "journal_trimmed"
    replayed = list(db.changes(since=0, timeout=0))
    assert replayed[0].sequence == first and replayed[-1].sequence == last
    assert [c.sequence for c in db.changes(since=first - 1, timeout=0)] == [c.sequence for c in replayed]


def test_a_database_without_a_journal_refuses(manager: Manager, tmp_path: Path) -> None:
    plain = manager.database("plain", str(tmp_path / "plain"))
    with pytest.raises(ReplicationNotEnabled):
        plain.changes()
    with pytest.raises(ReplicationNotEnabled):
        plain.table("t").watch()


@pytest.mark.parametrize("since", [-1, True, "3", (1,), 1.5])
def test_bad_arguments(journaled: Database, since: object) -> None:
    with pytest.raises(ValueError):
        journaled.changes(since=since)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        journaled.changes(timeout=-1)
    with pytest.raises(ValueError):
        journaled.changes(tables=[1])  # type: ignore[list-item]


def test_a_replica_feed_shows_the_source_changes_with_their_origin(manager: Manager, tmp_path: Path) -> None:
    source = manager.database("s", str(tmp_path / "s"), config={"replication": True})
    replica = manager.database("r", str(tmp_path / "r"), config={"replication": True})
    people = source.table("people")
    early = people.append({"name": "early"})
    replicator = LocalReplicator(source, replica)
    replicator.sync()
    feed = replica.changes(timeout=10)
    late = people.append({"name": "late"})
    people.delete(early)
    replicator.sync()
    seen = [next(feed), next(feed)]
    assert [(c.op, c.key) for c in seen] == [("put", late.key), ("delete", early.key)]
    assert {c.origin for c in seen} == {source.replication.uuid}
    assert {c.origin for c in replica.changes(since=0, timeout=0)} == {source.replication.uuid}


# --- consumer processes, killed and resumed --------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import random, sys, time
    from pynndb import Manager
    path, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(name)
    with Manager() as manager:
        table = manager.database("d", path, config={"replication": True}).table("events")
        mine = []
        for number in range(count):
            choice = rng.random()
            if mine and choice < 0.2:
                table.delete(mine.pop(rng.randrange(len(mine))))
            elif mine and choice < 0.5:
                doc = table.get(rng.choice(mine))
                doc["n"] = number
                table.save(doc)
            else:
                mine.append(table.append({"writer": name, "n": number}).key)
            time.sleep(0.003)  # paced, so that the consumer is killed while they write
    """
)

CONSUMER = textwrap.dedent(
    """
    import json, os, sys
    from pynndb import Manager
    path, output = sys.argv[1], sys.argv[2]
    since = 0
    fd = os.open(output, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    text = os.read(fd, 1 << 30)
    complete = text[: text.rfind(b"\\n") + 1]
    os.truncate(output, len(complete))  # (a line cut short by the kill, if any: it is seen again)
    if complete:
        since = json.loads(complete.splitlines()[-1])["seq"]  # the saved sequence: the last change written out
    with Manager() as manager:
        db = manager.database("d", path)
        print("following", flush=True)
        for change in db.changes(since=since, timeout=3):
            line = {"seq": change.sequence, "op": change.op, "key": change.key}
            os.write(fd, (json.dumps(line) + "\\n").encode())  # one write: a kill never leaves half a line
    """
)


def run(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)


def lines(path: Path) -> list[dict]:
    """The complete lines written so far (the consumer may be in the middle of one)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


@pytest.mark.timeout(120)
def test_a_killed_and_resumed_consumer_sees_every_change_once_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    output = tmp_path / "seen.ndjson"
    with Manager() as manager:
        manager.database("d", path, config={"replication": True}).table("events")
    writers = [run(WRITER, path, f"w{n}", "300") for n in range(3)]
    consumer = run(CONSUMER, path, str(output))
    try:
        for round_number in range(4):  # killed three times while the writers write, then left to finish
            assert consumer.stdout is not None and consumer.stdout.readline().strip() == "following"
            if round_number == 3:
                break
            target = len(lines(output)) + 40
            wait_until(lambda: len(lines(output)) >= target or all(w.poll() is not None for w in writers), 30)  # noqa: B023
            consumer.send_signal(signal.SIGKILL)
            consumer.wait(10)
            consumer = run(CONSUMER, path, str(output))
        for writer in writers:
            assert writer.wait(60) == 0
        assert consumer.wait(60) == 0  # ends 3 s after the last change
    finally:
        for process in [*writers, consumer]:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    seen = [(line["seq"], line["op"], line["key"]) for line in lines(output)]
    with Manager() as manager:
        db = manager.database("d", path)
        expected = [(c.sequence, c.op, c.key) for c in db.changes(since=0, timeout=0)]
    assert len(expected) == 900
    assert seen == expected  # every change exactly once, in sequence order
    assert os.listdir(os.path.join(path, ".bell")) == ["generation"]  # killed consumers' FIFOs were cleaned up


def test_the_readme_consumer_resumes_where_it_stopped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if "changes(since" in b)
    code = block.replace('"/tmp/orders"', repr(str(tmp_path / "orders")))
    code = code.replace('"/tmp/orders-consumer.seq"', repr(str(tmp_path / "seq")))
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102
    first = capsys.readouterr().out.splitlines()
    assert len(first) == 1 and "put" in first[0] and "tea" in first[0]
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102  (run again: only the new order is printed)
    second = capsys.readouterr().out.splitlines()
    assert len(second) == 1 and int(second[0].split()[0]) > int(first[0].split()[0])
