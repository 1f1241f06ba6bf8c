"""The storage seam replication uses (core/storage.py, core/bulk.py, core/snapshot_read.py)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pynndb import Database, Manager
from pynndb.core.bulk import CHUNK_PAIRS, StoredPart
from pynndb.core.entries import decode_body
from pynndb.core.journal import VERSION
from pynndb.core.storage import Storage
from pynndb.errors import DatabaseError, JournalTrimmed, MalformedEntry, PyNNDBError

SOURCE = str(uuid.uuid4())
SOURCE_BYTES = uuid.UUID(SOURCE).bytes


@pytest.fixture
def replicated(manager: Manager, tmp_path: Path) -> Database:
    return manager.database("target", str(tmp_path / "target"), config={"replication": True})


def docs(db: Database, table: str) -> dict[str, dict[str, object]]:
    return {doc.key: doc.doc for doc in db[table].find()} if table in db.tables() else {}


def test_an_apply_transaction_commits_everything_or_nothing(replicated: Database) -> None:
    storage = Storage(replicated)
    for tx in storage.transactions(SOURCE):
        with tx:
            tx.set_origin(SOURCE_BYTES, 7, SOURCE_BYTES)
            tx.put_documents("people", [(b"k1", b'{"n":1}', {"n": 1}), (b"k2", b'{"n":2}', {"n": 2})])
            tx.journal(SOURCE, 7)
            tx.set_mark(SOURCE, 3)
    assert docs(replicated, "people") == {"k1": {"n": 1}, "k2": {"n": 2}} and storage.mark(SOURCE) == 3
    entry = decode_body(replicated.replication.entries(1, 10)[-1][2])
    assert entry.origin == SOURCE and entry.version == 7  # a relayed change keeps its origin
    with pytest.raises(MalformedEntry):
        for tx in storage.transactions(SOURCE):
            with tx:
                tx.put("people", b"k3", {"n": 3})
                tx.set_mark(SOURCE, 4)
                tx.create_table(5)  # type: ignore[arg-type]
    assert docs(replicated, "people") == {"k1": {"n": 1}, "k2": {"n": 2}} and storage.mark(SOURCE) == 3


def test_carried_index_keys_are_put_as_given_and_a_unique_clash_is_refused(replicated: Database) -> None:
    people = replicated.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.ensure("by_email", "{email}")  # unique
    storage = Storage(replicated)
    first = (b"k1", b'{"name":"A","email":"a@x"}', ([b"carried-A"], [b"a@x"]))
    for tx in storage.transactions(SOURCE):
        with tx:
            tx.put_documents("people", [first])  # keys as carried: not computed from the document
    assert people.get(b"k1")["name"] == "A" and [doc.key for doc in people.find("by_name")] == ["k1"]
    with replicated._env.begin() as txn:
        assert txn.get(b"carried-A", db=people._indexes["by_name"].dbi) == b"k1"
    clash = (b"k2", b'{"name":"B","email":"a@x"}', ([b"carried-B"], [b"a@x"]))
    with pytest.raises(PyNNDBError, match="by_email"):
        for tx in storage.transactions(SOURCE):
            with tx:
                tx.put_documents("people", [clash])
    assert len(people) == 1 and people.get(b"k2") is None
    with replicated._env.begin() as txn:
        assert txn.get(b"carried-B", db=people._indexes["by_name"].dbi) is None


def test_a_full_map_grows_and_the_body_runs_again(manager: Manager, tmp_path: Path) -> None:
    db = manager.database("small", str(tmp_path / "small"), config={"map_size": 256 * 1024, "replication": True})
    storage = Storage(db)
    documents = [(b"%08d" % n, b'{"pad":"%s"}' % (b"x" * 400), {"pad": "x" * 400}) for n in range(2000)]
    attempts = 0
    for tx in storage.transactions(SOURCE):
        with tx:
            attempts += 1
            tx.put_documents("big", documents)
            tx.set_mark(SOURCE, 1)
    assert attempts > 1 and len(db["big"]) == 2000 and storage.mark(SOURCE) == 1


def test_marks_snapshot_markers_registrations_and_left_filters_round_trip(replicated: Database) -> None:
    storage = Storage(replicated)
    for tx in storage.transactions():
        with tx:
            tx.set_mark(SOURCE, 42)
            tx.set_snapshot_marker(SOURCE, 40)
            tx.set_registration(SOURCE, {"mode": "read-only", "tables": ["a"]})
            tx.set_left_filter(SOURCE, ["a", "b"])
    assert storage.mark(SOURCE) == 42 and storage.snapshot_marker(SOURCE) == 40
    assert storage.registrations() == {SOURCE: {"mode": "read-only", "tables": ["a"]}}
    for tx in storage.transactions():
        with tx:
            assert tx.mark(SOURCE) == 42 and tx.left_filter(SOURCE) == ["a", "b"]
            tx.set_snapshot_marker(SOURCE, None)
            tx.set_registration(SOURCE, None)
            tx.set_left_filter(SOURCE, None)
    assert storage.snapshot_marker(SOURCE) is None and storage.registrations() == {}
    assert replicated.replication.marks() == {SOURCE: 42}


def test_versions_and_tombstones_decide_the_last_writer(replicated: Database) -> None:
    replicated.replication.set_versioned(True)
    storage = Storage(replicated)
    other = uuid.uuid4().bytes
    for tx in storage.transactions(SOURCE):
        with tx:
            tx.set_origin(other, 100, SOURCE_BYTES)
            tx.put("t", b"k", {"v": 1})
            tx.put("t", b"gone", None)  # a delete of what is not there: a tombstone
    version = replicated.replication
    with replicated.read_transaction() as read:
        stored = version.version_of(read.txn, "t", b"k")
        tombstone = version.version_of(read.txn, "t", b"gone")
    assert stored is not None and (stored.clock, stored.origin, stored.deleted, stored.source) == (
        100,
        other,
        False,
        SOURCE_BYTES,
    )
    assert tombstone is not None and tombstone.deleted
    for tx in storage.transactions(SOURCE):
        with tx:
            assert not tx.is_newer("t", b"k", 99, other) and tx.is_newer("t", b"k", 101, other)
            assert not tx.is_newer("t", b"gone", 100, other) and tx.is_newer("t", b"new", 1, other)
            tx.set_origin(other, 200, SOURCE_BYTES)
            tx.empty_older("t", 150, other)  # an empty at 150: k (at 100) goes, and older changes stay out
            assert not tx.is_newer("t", b"k", 120, other) and tx.is_newer("t", b"k", 210, other)
    assert docs(replicated, "t") == {}


def test_bulk_load_of_a_sources_stored_pairs(manager: Manager, tmp_path: Path, replicated: Database) -> None:
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    people = source.table("people")
    people.ensure("by_name", "{name}")
    people.append_many([{"name": f"n{number:03}"} for number in range(300)])
    with Storage(source).read() as view:
        definitions = view.definitions()
        parts = list(view.stored_parts("people", chunk_bytes=2000))
        assert view.count("people") == 300 and view.last_sequence() == source.replication.sequence
    assert len(parts) > 2 and {part.part for part in parts} == {"records", "index"}
    storage = Storage(replicated)
    with pytest.raises(DatabaseError, match="journals nothing"):  # a journal would silently miss these records
        for tx in storage.transactions(SOURCE):
            with tx:
                tx.load_stored("people", parts[0], SOURCE_BYTES, None)
    loaded = 0
    replicated.table("other")  # (journaled: the journal holds an entry before the load)
    before = replicated.replication.sequence
    for tx in storage.transactions(SOURCE):
        with tx:
            tx.unjournaled()
            tx.create_table("people")
            tx.ensure_index("people", "by_name", definitions["people"]["indexes"]["by_name"])
            loaded = sum(tx.load_stored("people", part, SOURCE_BYTES, None) for part in parts)
    assert loaded == 300 and docs(replicated, "people") == docs(source, "people")
    assert [doc["name"] for doc in replicated["people"].find("by_name")] == [f"n{n:03}" for n in range(300)]
    assert replicated.replication.sequence == before  # nothing journaled
    for tx in storage.transactions(SOURCE):
        with tx:
            tx.restart_journal()
    first, last = replicated.replication.retained
    assert first == last == before + 2  # one sequence number skipped: whoever follows from before must resync
    assert [decode_body(body).ops for _seq, _clock, body in replicated.replication.entries(1, 100)] == [[]]
    with pytest.raises(JournalTrimmed):
        next(iter(replicated.changes(since=before, timeout=0)))


@pytest.mark.parametrize(
    ("chunk_bytes", "chunk_pairs"),
    [(1, None), (700, None), (50_000, None), (1 << 20, None), (1 << 20, 1000), (1 << 20, 1024), (50_000, 300)],
)
def test_stored_parts_are_every_pair_in_order_cut_where_a_pair_reaches_the_chunk_size(
    manager: Manager, tmp_path: Path, chunk_bytes: int, chunk_pairs: int | None
) -> None:
    """Keys and values are read by two cursors in step; across reads of what a chunk has room for (2500 records, an
    index with duplicates, tombstones) each part is its sub-database's next pairs, cut after the pair that reaches the
    size or at `chunk_pairs` pairs (CHUNK_PAIRS by default), whichever comes first."""
    source = manager.database("source", str(tmp_path / "source"), config={"replication": True})
    source.replication.set_versioned(True)
    people = source.table("people")
    people.ensure("by_age", "{age}", duplicates=True)
    added = people.append_many([{"name": f"n{number:04}", "age": number % 7} for number in range(2500)])
    people.delete([doc.key for doc in added[::5]])
    with source.read_transaction() as txn:
        expected = {
            "records": list(txn.txn.cursor(db=people._dbi)),
            "index": list(txn.txn.cursor(db=people._indexes["by_age"].dbi)),
        }
    with Storage(source).read() as view:
        limit = {} if chunk_pairs is None else {"chunk_pairs": chunk_pairs}  # (None: the default)
        parts = list(view.stored_parts("people", chunk_bytes=chunk_bytes, **limit))
    most = chunk_pairs or CHUNK_PAIRS
    for kind in ("records", "tombstones", "index"):
        mine = [part for part in parts if part.part == kind]
        pairs = [pair for part in mine for pair in zip(part.keys, part.values, strict=True)]
        if kind == "tombstones":
            assert [key for key, _value in pairs] == sorted(doc.oid for doc in added[::5])  # (in key order)
        else:
            assert pairs == expected[kind]
        assert all(len(part.keys) <= most for part in mine)
        for part in mine:  # the lengths measured go with each part (a snapshot chunk's frame lists them)
            assert part.key_lengths == list(map(len, part.keys))
            assert part.value_lengths == list(map(len, part.values))
        for part in mine[:-1]:
            size = sum(map(len, part.keys)) + sum(map(len, part.values))
            last = len(part.keys[-1]) + len(part.values[-1])
            assert size - last < chunk_bytes or len(part.keys) == 1  # not cut later than the size says
            assert size >= chunk_bytes or len(part.keys) == most  # nor earlier, unless it holds the most pairs
        assert sum(map(len, mine[-1].keys)) + sum(map(len, mine[-1].values)) > 0


@pytest.mark.parametrize(
    "part",
    [
        StoredPart("records", [b"b", b"a"], [b"{}", b"{}"]),  # out of key order
        StoredPart("records", [b"a"], [b"{}", b"{}"]),  # more values than keys
        StoredPart("records", [b"a"], [b"not json"]),
        StoredPart("index", [b"x"], [b"a"], None, "no_such_index"),
        StoredPart("nonsense", [b"a"], [b"{}"]),
        StoredPart("records", [b"a"], [b"{}"], [b"short"]),
        StoredPart("tombstones", [b"a"], [b"short"]),
    ],
)
def test_bad_stored_pairs_raise_malformed_entry(replicated: Database, part: StoredPart) -> None:
    replicated.replication.set_versioned(True)
    with pytest.raises(MalformedEntry):
        for tx in Storage(replicated).transactions(SOURCE):
            with tx:
                tx.unjournaled()
                tx.create_table("t")
                tx.load_stored("t", part, SOURCE_BYTES, None)
    assert docs(replicated, "t") == {}


@pytest.mark.parametrize(
    "work",
    [
        lambda tx: tx.ensure_index("t", "i", "not an object"),
        lambda tx: tx.set_compression("t", 99, None),
        lambda tx: tx.put_documents(None, [(b"k", b"{}", {})]),
    ],
)
def test_bad_ops_raise_pynndb_errors(replicated: Database, work) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PyNNDBError):
        for tx in Storage(replicated).transactions(SOURCE):
            with tx:
                work(tx)


def test_version_layout_is_what_bulk_tombstones_expect() -> None:
    assert VERSION.size == 41  # clock 8, origin 16, tombstone flag 1 (offset 24), source 16
