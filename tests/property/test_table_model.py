"""Property tests: a Table driven by random operations agrees with a plain dict model on every read path;
encoded index keys sort like the values they encode."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, initialize, invariant, precondition, rule

from pynndb import Doc, Manager
from pynndb.core.keys import encode_key
from pynndb.errors import DocumentDoesNotExist, DuplicateKey

UNIQUE = ("by_email", "{email}", False)
DUPLICATES = ("by_age", "{age}", True)
MISSING_KEY = "ffffffffffffffffffffffff"

emails = st.sampled_from([f"user{i}@x" for i in range(8)])
documents = st.fixed_dictionaries(
    {"name": st.sampled_from(["ann", "bob", "cy"])},
    optional={"email": emails, "age": st.integers(min_value=-3, max_value=5)},
)


class TableModel(RuleBasedStateMachine):
    """Random writes on a table with a unique and a duplicates index, checked against a dict of records."""

    keys = Bundle("keys")

    # Half the runs start without the unique index: then batches of 8 or more go a column at a time (core/columns).
    @initialize(start=st.sampled_from([(UNIQUE, DUPLICATES), (DUPLICATES,)]))
    def open_table(self, start: tuple[tuple[str, str, bool], ...]) -> None:
        self.directory = tempfile.mkdtemp(prefix="pynndb-model-")
        self.manager = Manager()
        self.db = self.manager.database("model", self.directory)
        self.table = self.db.table("t")
        self.model: dict[str, dict[str, Any]] = {}
        self.indexes: dict[str, tuple[str, str, bool]] = {}
        for name, func, duplicates in start:
            self.table.ensure(name, func, duplicates=duplicates)
            self.indexes[name] = (name, func, duplicates)

    def teardown(self) -> None:
        if hasattr(self, "manager"):
            self.manager.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    # --- the model ------------------------------------------------------------------------------------------
    def clashes(self, doc: dict[str, Any], ignore: str | None = None) -> bool:
        """Would `doc` break the unique index (if it exists)?"""
        if "by_email" not in self.indexes or doc.get("email") is None:
            return False
        return any(other.get("email") == doc["email"] for key, other in self.model.items() if key != ignore)

    def order(self, index: str | None) -> list[str]:
        """Record keys in the order of the table or an index (sparse: records lacking the field are absent)."""
        if index is None:
            return sorted(self.model)
        field = "email" if index == "by_email" else "age"
        present = [(doc[field], key) for key, doc in self.model.items() if doc.get(field) is not None]
        return [key for _value, key in sorted(present)]

    # --- rules ----------------------------------------------------------------------------------------------
    @rule(target=keys, doc=documents)
    def append(self, doc: dict[str, Any]) -> str:
        if self.clashes(doc):
            with pytest.raises(DuplicateKey):
                self.table.append(doc)
            return MISSING_KEY
        key = self.table.append(doc).key
        assert key is not None and key not in self.model
        self.model[key] = dict(doc)
        return key

    @rule(docs=st.lists(documents, min_size=1, max_size=12))
    def append_many(self, docs: list[dict[str, Any]]) -> None:
        emails = [doc["email"] for doc in docs if doc.get("email") is not None]
        batch_clash = "by_email" in self.indexes and len(emails) != len(set(emails))
        if batch_clash or any(self.clashes(doc) for doc in docs):
            with pytest.raises(DuplicateKey):
                self.table.append_many(docs)  # atomic: nothing of the batch is kept
            return
        for stored, doc in zip(self.table.append_many(docs), docs, strict=True):
            assert stored.key not in self.model
            self.model[stored.key] = dict(doc)

    @rule(key=keys, doc=documents)
    def save(self, key: str, doc: dict[str, Any]) -> None:
        if key not in self.model:
            with pytest.raises(DocumentDoesNotExist):
                self.table.save(Doc(doc, key))
            return
        if self.clashes(doc, ignore=key):
            with pytest.raises(DuplicateKey):
                self.table.save(Doc(doc, key))
            return
        self.table.save(Doc(doc, key))
        self.model[key] = dict(doc)

    @rule(key=consumes(keys))
    def delete(self, key: str) -> None:
        if key not in self.model:
            with pytest.raises(DocumentDoesNotExist):
                self.table.delete(key)
            return
        self.table.delete(key)
        del self.model[key]

    @precondition(lambda self: len(self.model) > 3)
    @rule()
    def empty(self) -> None:
        self.table.empty()
        self.model.clear()

    @rule(which=st.sampled_from([UNIQUE, DUPLICATES]))
    def ensure(self, which: tuple[str, str, bool]) -> None:
        name, func, duplicates = which
        if name in self.indexes:
            assert self.table.ensure(name, func, duplicates=duplicates) is self.table.index(name)
            return
        values = [doc["email"] for doc in self.model.values() if doc.get("email") is not None]
        if not duplicates and len(values) != len(set(values)):
            with pytest.raises(DuplicateKey):
                self.table.ensure(name, func, duplicates=duplicates)
            return
        self.table.ensure(name, func, duplicates=duplicates)
        self.indexes[name] = which

    @rule(which=st.sampled_from([UNIQUE, DUPLICATES]))
    def drop_index(self, which: tuple[str, str, bool]) -> None:
        if which[0] in self.indexes:
            self.table.drop(which[0])
            del self.indexes[which[0]]

    # --- every read path agrees -----------------------------------------------------------------------------
    @invariant()
    def reads_agree(self) -> None:
        if not hasattr(self, "table"):
            return
        table = self.table
        assert table.records() == len(table) == len(self.model)
        assert sorted(table.indexes()) == sorted(self.indexes)
        for key, doc in self.model.items():
            assert table.get(key).doc == doc
        assert table.get(MISSING_KEY) is None
        assert [(d.key, d.doc) for d in table.find()] == [(k, self.model[k]) for k in sorted(self.model)]
        for index in [None, *self.indexes]:
            order = self.order(index)
            assert [d.key for d in table.find(index)] == order
            assert [r.doc.key for r in table.filter(index)] == order
            first, last = table.first(index), table.last(index)
            assert (first and first.key, last and last.key) == (order[0], order[-1]) if order else (None, None)
        if "by_email" in self.indexes:
            for key, doc in self.model.items():
                if doc.get("email") is not None:
                    assert table.seek_one("by_email", {"email": doc["email"]}).key == key
        if "by_age" in self.indexes:
            for age in range(-3, 6):
                expected = [key for key in self.order("by_age") if self.model[key].get("age") == age]
                assert [d.key for d in table.seek("by_age", {"age": age})] == expected

    @rule(
        low=st.one_of(st.none(), st.integers(-4, 6)),
        high=st.one_of(st.none(), st.integers(-4, 6)),
        inclusive=st.booleans(),
    )
    def check_range(self, low: int | None, high: int | None, inclusive: bool) -> None:
        if "by_age" not in self.indexes:
            return

        def inside(age: int) -> bool:
            above = low is None or (age >= low if inclusive else age > low)
            below = high is None or (age <= high if inclusive else age < high)
            return above and below

        expected = [key for key in self.order("by_age") if inside(self.model[key]["age"])]
        lower = None if low is None else {"age": low}
        upper = None if high is None else {"age": high}
        got = [d.key for d in self.table.range("by_age", lower=lower, upper=upper, inclusive=inclusive)]
        assert got == expected
        got = [r.doc.key for r in self.table.filter("by_age", lower=lower, upper=upper, inclusive=inclusive)]
        assert got == expected

    @rule(index=st.sampled_from([None, "by_email", "by_age"]), page_size=st.integers(1, 5), reverse=st.booleans())
    def check_paging(self, index: str | None, page_size: int, reverse: bool) -> None:
        if index is not None and index not in self.indexes:
            return
        expected = self.order(index)
        if reverse:
            expected.reverse()
        seen: list[str] = []
        context = None
        for _page in range(len(expected) + 2):
            page = list(self.table.filter(index, page_size=page_size, context=context, reverse=reverse))
            if not page:
                break
            assert len(page) <= page_size
            seen += [result.doc.key for result in page]
            context = page[-1]
        assert seen == expected


TableModel.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestTableModel = TableModel.TestCase
TestTableModel = pytest.mark.timeout(120)(TestTableModel)


# --- encode_key preserves order ----------------------------------------------------------------------------
def assert_same_order(values: list[Any]) -> None:
    assert sorted(values, key=encode_key) == sorted(values)
    for a, b in zip(values, values[1:], strict=False):
        if a < b:
            assert encode_key(a) < encode_key(b), (a, b)
        elif a > b:
            assert encode_key(a) > encode_key(b), (a, b)


int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
finite = st.floats(allow_nan=False)


@given(st.lists(int64, min_size=2))
@example([-(2**53) - 1, -(2**53)])
@example([2**53, 2**53 + 1])
def test_int_keys_sort_by_value(values: list[int]) -> None:
    assert_same_order(values)


@given(st.lists(st.integers(min_value=-(2**53), max_value=2**53), min_size=2))
def test_int_keys_within_double_precision_sort_by_value(values: list[int]) -> None:
    assert_same_order(values)


@given(st.lists(finite, min_size=2))
def test_float_keys_sort_by_value(values: list[float]) -> None:
    assert_same_order(values)


@given(st.lists(st.one_of(int64, finite), min_size=2))
@example([2**60 - 1, 2.0**60])
def test_mixed_number_keys_sort_by_value(values: list[float]) -> None:
    assert_same_order(values)


@given(st.lists(st.text(max_size=20), min_size=2))
def test_str_keys_sort_by_value(values: list[str]) -> None:
    assert_same_order(values)


@given(st.lists(st.tuples(st.integers(-(2**40), 2**40), st.text(max_size=10)), min_size=2))
@example([(1, "a\x00"), (1, "a")])
def test_tuple_keys_sort_by_value(values: list[tuple[int, str]]) -> None:
    assert_same_order(values)
