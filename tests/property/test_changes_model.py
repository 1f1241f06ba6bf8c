"""Property test: the change feed of random writes, replayed onto an empty dict model, equals the tables; so does
a replay that stops anywhere and resumes from the last change's position."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from pynndb import Manager
from pynndb.core.changes import Change

TABLES = ("a", "b")
documents = st.fixed_dictionaries({"n": st.integers(-5, 5)}, optional={"s": st.text(max_size=3)})
actions = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.sampled_from(TABLES), documents),
        st.tuples(st.just("save"), st.sampled_from(TABLES), st.integers(0, 50), documents),
        st.tuples(st.just("delete"), st.sampled_from(TABLES), st.integers(0, 50)),
        st.tuples(st.just("batch"), st.sampled_from(TABLES), st.lists(documents, min_size=1, max_size=4)),
        st.tuples(st.just("empty"), st.sampled_from(TABLES)),
        st.tuples(st.just("drop"), st.sampled_from(TABLES)),
    ),
    max_size=40,
)


def replay(changes: list[Change]) -> dict[str, dict[str, dict[str, Any]]]:
    model: dict[str, dict[str, dict[str, Any]]] = {}
    for change in changes:
        if change.op == "put":
            assert change.key is not None and change.doc is not None
            model.setdefault(change.table, {})[change.key] = dict(change.doc)
        elif change.op == "delete":
            model[change.table].pop(str(change.key))
        elif change.op == "empty":
            model[change.table] = {}
        elif change.op == "drop":
            model.pop(change.table, None)
    return {name: content for name, content in model.items() if content}  # created-but-empty tables look alike


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.integers(0, 200))
def test_the_replayed_feed_equals_the_tables(steps: list[tuple[Any, ...]], cut: int) -> None:
    directory = tempfile.mkdtemp(prefix="pynndb-feed-model-")
    try:
        with Manager() as manager:
            db = manager.database("m", directory, config={"replication": True})
            for step in steps:
                kind, name = step[0], step[1]
                table = db.table(name)
                keys = [doc.key for doc in table.find()]
                if kind == "append":
                    table.append(step[2])
                elif kind == "batch":
                    table.append_many(step[2])
                elif kind in ("save", "delete") and keys:
                    doc = table.get(keys[step[2] % len(keys)])
                    if kind == "save":
                        doc.update(step[3])
                        table.save(doc)
                    else:
                        table.delete(doc)
                elif kind == "empty":
                    table.empty()
                elif kind == "drop":
                    db.drop(name)
            actual = {name: {str(doc.key): dict(doc) for doc in db.table(name).find()} for name in db.tables()}
            actual = {name: content for name, content in actual.items() if content}
            changes = list(db.changes(since=0, timeout=0))
            assert replay(changes) == actual
            cut = min(cut, len(changes))
            if cut:
                resumed = list(db.changes(since=changes[cut - 1].position, timeout=0))
                assert changes[:cut] + resumed == changes
    finally:
        shutil.rmtree(directory, ignore_errors=True)
