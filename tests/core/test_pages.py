"""A snapshot's stored pairs read from LMDB's own pages (core/pages.py) are exactly those py-lmdb's cursors read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynndb import Database, Doc, Manager
from pynndb.core import pages
from pynndb.core.bulk import stored_parts
from pynndb.core.storage import Storage
from pynndb.errors import MalformedEntry

PSIZE = 4096


def flattened(parts: list) -> list[tuple[str, str | None, bytes, bytes]]:
    return [
        (part.part, part.index, key, value) for part in parts for key, value in zip(part.keys, part.values, strict=True)
    ]


def both_ways(db: Database, table: str, chunk_bytes: int = 1 << 20, chunk_pairs: int = 2048) -> tuple[list, list]:
    """(pairs read from pages, pairs read through cursors) of `table`, in one read transaction."""
    with Storage(db).read() as view:
        assert view.pages_readable()
        from_pages = list(view.stored_parts(table, chunk_bytes, chunk_pairs))
        assert view.pages_readable(), "the pages were not read: the pairs came through cursors"
        through_cursors = list(
            stored_parts(view._txn, db.replication, db[table], chunk_bytes, chunk_pairs)  # noqa: SLF001
        )
    return from_pages, through_cursors


def open_db(manager: Manager, path: Path, **config: object) -> Database:
    return manager.database(str(path), str(path), config={"replication": True, **config})


def test_every_kind_of_leaf_reads_as_the_cursors_read_it(manager: Manager, tmp_path: Path) -> None:
    """Plain leaves, a key's few duplicates in its leaf (a sub-page), a key's many duplicates (a tree of their own),
    values in overflow pages, and a compressed table."""
    db = open_db(manager, tmp_path / "db")
    table = db.table("people")
    table.ensure("by_city", "{city}", duplicates=True)  # 3 cities: trees of duplicates
    table.ensure("by_pair", "{pair}", duplicates=True)  # 2 documents a key: sub-pages
    table.ensure("by_name", "{name}")
    documents = []
    for number in range(3000):
        fields: dict[str, object] = {"name": f"name {number:05}", "city": f"city {number % 3}", "pair": number // 2}
        if number % 97 == 0:
            fields["blob"] = "x" * (5000 + number)  # a value in overflow pages
        documents.append(fields)
    table.append_many(documents)
    packed = db.table("packed")
    packed.compress(3)
    packed.append_many([{"n": number, "text": "y" * (number % 300)} for number in range(500)])
    for name in ("people", "packed"):
        from_pages, through_cursors = both_ways(db, name)
        assert flattened(from_pages) == flattened(through_cursors)
        assert [len(part.keys) for part in from_pages] == [len(part.keys) for part in through_cursors]  # batches
        for part in from_pages:  # (the frame lists the lengths measured while reading)
            assert part.key_lengths == list(map(len, part.keys))
            assert part.value_lengths == list(map(len, part.values))
        assert len(flattened(from_pages)) == len(db[name]) * (1 + len(db[name]._index_list))  # noqa: SLF001
        assert all(len(part.keys) <= 2048 for part in from_pages)  # chunk_pairs at most a batch


def test_empty_and_one_document_tables(manager: Manager, tmp_path: Path) -> None:
    db = open_db(manager, tmp_path / "db")
    db.table("empty").ensure("by_a", "{a}", duplicates=True)
    db.table("one").append(Doc({"a": 1}))
    for name in ("empty", "one"):
        from_pages, through_cursors = both_ways(db, name)
        assert flattened(from_pages) == flattened(through_cursors)
    assert len(flattened(both_ways(db, "one")[0])) == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=9000), min_size=1, max_size=300),
    cities=st.integers(min_value=1, max_value=400),
    chunk_pairs=st.sampled_from([1, 7, 2048]),
)
def test_drawn_tables_read_the_same_both_ways(
    manager: Manager, tmp_path_factory: pytest.TempPathFactory, sizes: list[int], cities: int, chunk_pairs: int
) -> None:
    db = open_db(manager, tmp_path_factory.mktemp("drawn"))
    table = db.table("t")
    table.ensure("by_city", "{city}", duplicates=True)
    table.append_many([{"city": number % cities, "text": "z" * size} for number, size in enumerate(sizes)])
    from_pages, through_cursors = both_ways(db, "t", chunk_pairs=chunk_pairs)
    assert flattened(from_pages) == flattened(through_cursors)
    assert [len(part.keys) for part in from_pages] == [len(part.keys) for part in through_cursors]


def test_a_versioned_database_reads_through_cursors(manager: Manager, tmp_path: Path) -> None:
    db = open_db(manager, tmp_path / "db")
    db.table("t").append(Doc({"a": 1}))
    with Storage(db).read() as view:
        assert view.pages_readable()
    db.replication.set_versioned(True)  # (as a two-way replica's registration does)
    with Storage(db).read() as view:
        assert not view.pages_readable()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.large_base_example])
@given(
    st.binary(min_size=512, max_size=512),
    st.integers(min_value=0, max_value=600),
    st.integers(min_value=0, max_value=600),
)
def test_a_malformed_page_raises_and_is_never_read_past(noise: bytes, lower: int, upper: int) -> None:
    page = bytearray(noise)
    page[10:16] = bytes([pages.P_LEAF, 0, lower & 0xFF, lower >> 8, upper & 0xFF, upper >> 8])
    sink = pages.Pairs(1 << 30, 1 << 30)
    try:
        pages.leaf_pairs(bytes(page), 0, 512, 512, sink)
    except MalformedEntry:
        return
    assert all(key and len(key) < 512 for key in sink.keys) and all(0 < len(value) < 512 for value in sink.values)
    assert sink.key_lengths == list(map(len, sink.keys)) and sink.value_lengths == list(map(len, sink.values))


def test_a_data_file_that_is_not_what_the_record_says_raises(tmp_path: Path) -> None:
    path = tmp_path / "data.mdb"
    path.write_bytes(os.urandom(PSIZE * 4))
    with pages.PageFile(str(path), PSIZE) as file:
        with pytest.raises(MalformedEntry):
            file.leaves(2, 2, 5)  # page 2 does not carry its number
        with pytest.raises(MalformedEntry):
            file.read([9])  # past the end of the file
    with pytest.raises(MalformedEntry):
        pages.Tree(b"short")


def test_pages_that_cannot_be_read_give_way_to_cursors(
    manager: Manager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The data file is not where it was (moved away while open: LMDB keeps its handle): the pairs are read
    through cursors, and so are that database's later reads."""
    db = open_db(manager, tmp_path / "db")
    db.table("t").append_many([{"n": number} for number in range(100)])
    path = os.path.join(db.path, "data.mdb")
    with Storage(db).read() as view:
        expected = flattened(list(stored_parts(view._txn, db.replication, db["t"], 1 << 20)))  # noqa: SLF001
    os.rename(path, path + ".away")
    try:
        with Storage(db).read() as view:
            assert view.pages_readable()
            assert flattened(list(view.stored_parts("t", 1 << 20))) == expected
            assert not view.pages_readable() and path in pages.refused
        assert "reading through cursors" in caplog.text
    finally:
        os.rename(path + ".away", path)
        pages.refused.discard(path)
