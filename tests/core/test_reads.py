"""get / find / seek / seek_one / range / filter / first / last / records / len."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pynndb import Doc, Table
from pynndb.core.ids import normalise_key
from pynndb.errors import InvalidKey, NoSuchIndex
from tests.helpers import person


@pytest.fixture
def people(table: Table) -> list[Doc]:
    """40 records: ages 20..26 (duplicates), unique emails."""
    return [table.append(person(i)) for i in range(40)]


def by_age(docs: list[Doc]) -> list[str]:
    """Keys in the order of the duplicates index: age, then record key."""
    return [d.key for d in sorted(docs, key=lambda d: (d["age"], d.key))]


def test_get(table: Table, people: list[Doc]) -> None:
    assert table.get(people[3].key) == people[3]
    assert table.get(people[3].oid) == people[3]
    assert table.get("ffffffffffffffffffffffff") is None
    assert people[3].key in table and "ffffffffffffffffffffffff" not in table
    with pytest.raises(InvalidKey):
        table.get(None)  # type: ignore[arg-type]


BAD_KEYS = ["", "a" * 257, "a" * 600, "bad key!", "\ud800", "é", b"", b"x" * 257, b"x" * 600, b"bad key", 5, None, 1.5]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_get_of_a_key_no_record_can_have_raises_invalid_key(table: Table, people: list[Doc], key: object) -> None:
    """`get` looks a key up as given and checks it only when nothing is found: a key no record can have still gets
    InvalidKey (not None, not an LMDB error), outside and inside a read transaction, and through `in`."""
    with pytest.raises(InvalidKey):
        table.get(key)  # type: ignore[arg-type]
    with table._db.read_transaction() as txn, pytest.raises(InvalidKey):
        table.get(key, txn=txn)  # type: ignore[arg-type]
    if isinstance(key, (str, bytes)):
        with pytest.raises(InvalidKey):
            _ = key in table
    assert table.records() == len(people)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_get_answers_none_for_a_valid_missing_key_and_raises_for_any_other(
    table: Table, people: list[Doc], key: str | bytes
) -> None:
    try:
        normalise_key(key)
    except InvalidKey:
        with pytest.raises(InvalidKey):
            table.get(key)
        return
    found = table.get(key)
    assert found is None or found.key in {doc.key for doc in people}


def test_reads_return_docs_with_keys(table: Table, people: list[Doc]) -> None:
    for doc in table.find("by_age"):
        assert isinstance(doc, Doc) and table.get(doc.key) == doc


def test_records_and_len(table: Table, people: list[Doc]) -> None:
    assert table.records() == 40 and len(table) == 40


def test_find_in_key_and_index_order(table: Table, people: list[Doc]) -> None:
    assert [d.key for d in table.find()] == [d.key for d in people]
    assert [d.key for d in table.find("by_age")] == by_age(people)
    emails = sorted(people, key=lambda d: d["email"])
    assert [d.key for d in table.find("by_email")] == [d.key for d in emails]


def test_find_with_expression_and_limit(table: Table, people: list[Doc]) -> None:
    old = [d.key for d in people if d["age"] > 24]
    assert [d.key for d in table.find(expression=lambda d: d["age"] > 24)] == old
    # limit counts results, not records examined
    assert [d.key for d in table.find(expression=lambda d: d["age"] > 24, limit=3)] == old[:3]
    assert [d.key for d in table.find("by_age", limit=5)] == by_age(people)[:5]
    assert list(table.find(limit=0)) == []
    with pytest.raises(ValueError):
        list(table.find(limit=-1))


def test_find_on_unknown_index(table: Table) -> None:
    with pytest.raises(NoSuchIndex):
        table.find("nope")


def test_seek_and_seek_one(table: Table, people: list[Doc]) -> None:
    aged_22 = [d.key for d in people if d["age"] == 22]
    assert [d.key for d in table.seek("by_age", Doc({"age": 22}))] == aged_22
    assert [d.key for d in table.seek("by_age", {"age": 22}, limit=2)] == aged_22[:2]
    assert table.seek_one("by_age", {"age": 22}).key == aged_22[0]
    assert table.seek_one("by_email", {"email": "user7@example.com"}) == people[7]
    assert table.seek_one("by_email", {"email": "nobody@example.com"}) is None
    assert list(table.seek("by_age", {"age": 99})) == []


def test_range_inclusive_exclusive_and_open_ended(table: Table, people: list[Doc]) -> None:
    def expected(low: int | None, high: int | None, inclusive: bool = True) -> list[str]:
        chosen = [
            d
            for d in people
            if (low is None or (d["age"] >= low if inclusive else d["age"] > low))
            and (high is None or (d["age"] <= high if inclusive else d["age"] < high))
        ]
        return by_age(chosen)

    def keys(**kwargs: object) -> list[str]:
        return [d.key for d in table.range("by_age", **kwargs)]

    assert keys(lower=Doc({"age": 22}), upper=Doc({"age": 24})) == expected(22, 24)
    assert keys(lower={"age": 22}, upper={"age": 24}, inclusive=False) == expected(22, 24, False)
    assert keys(lower={"age": 25}) == expected(25, None)
    assert keys(upper={"age": 21}) == expected(None, 21)
    assert keys() == expected(None, None)
    assert keys(lower={"age": 21}, upper={"age": 25}, limit=4) == expected(21, 25)[:4]
    # bounds between stored values
    assert keys(lower={"age": 21.5}, upper={"age": 23.5}) == expected(22, 23)
    assert keys(lower={"age": 30}) == []


def test_range_on_the_table_by_key(table: Table, people: list[Doc]) -> None:
    keys = [d.key for d in people]
    got = [d.key for d in table.range(None, lower=people[5], upper=people[9])]
    assert got == keys[5:10]
    got = [d.key for d in table.range(lower=people[5].key, upper=people[9].key, inclusive=False)]
    assert got == keys[6:9]


def test_first_and_last(table: Table, people: list[Doc]) -> None:
    assert table.first() == people[0] and table.last() == people[-1]
    order = by_age(people)
    assert table.first("by_age").key == order[0]
    assert table.last("by_age").key == order[-1]
    emails = sorted(people, key=lambda d: d["email"])
    assert table.first("by_email") == emails[0] and table.last("by_email") == emails[-1]


def test_first_and_last_of_an_empty_table(table: Table) -> None:
    assert table.first() is None and table.last("by_age") is None


def collect_pages(table: Table, page_size: int, reverse: bool = False, **kwargs: object) -> list[list[str]]:
    pages: list[list[str]] = []
    context = None
    counts: list[int] = []
    for _ in range(100):
        page = list(table.filter(page_size=page_size, context=context, reverse=reverse, **kwargs))
        if not page:
            break
        assert len(page) <= page_size
        counts += [result.count for result in page]
        pages.append([result.doc.key for result in page])
        context = page[-1]
    assert counts == list(range(1, len(counts) + 1))
    return pages


@pytest.mark.parametrize("index", [None, "by_age", "by_email"])
@pytest.mark.parametrize("page_size", [1, 3, 7, 40])
def test_filter_pages_forward_and_backward(table: Table, people: list[Doc], index: str | None, page_size: int) -> None:
    full = [d.key for d in table.find(index)]
    forward = collect_pages(table, page_size, index_name=index)
    assert [key for page in forward for key in page] == full
    assert all(len(page) == page_size for page in forward[:-1])
    backward = collect_pages(table, page_size, reverse=True, index_name=index)
    assert [key for page in backward for key in page] == full[::-1]


def test_filter_with_bounds_expression_and_paging(table: Table, people: list[Doc]) -> None:
    def wanted(d: Doc) -> bool:
        return d["name"] != "Name 3"

    chosen = by_age([d for d in people if 21 <= d["age"] <= 24 and wanted(d)])
    bounds = {"lower": {"age": 21}, "upper": {"age": 24}, "expression": wanted}
    pages = collect_pages(table, 4, index_name="by_age", **bounds)
    assert [key for page in pages for key in page] == chosen
    pages = collect_pages(table, 4, reverse=True, index_name="by_age", **bounds)
    assert [key for page in pages for key in page] == chosen[::-1]
    exclusive = by_age([d for d in people if 21 < d["age"] < 24])
    got = [r.doc.key for r in table.filter("by_age", lower={"age": 21}, upper={"age": 24}, inclusive=False)]
    assert got == exclusive


def test_filter_results_carry_index_key_doc_and_count(table: Table, people: list[Doc]) -> None:
    results = list(table.filter("by_email", page_size=2))
    assert [r.count for r in results] == [1, 2]
    assert results[0].doc == table.first("by_email")
    assert isinstance(results[0].key, bytes)


def test_filter_paging_survives_deletion_of_the_context_record(table: Table, people: list[Doc]) -> None:
    full = [d.key for d in table.find("by_age")]
    page = list(table.filter("by_age", page_size=10))
    table.delete(page[-1].doc.key)
    rest = [r.doc.key for r in table.filter("by_age", context=page[-1])]
    assert rest == full[10:]


def test_reads_without_indexes_on_a_plain_table(db) -> None:  # noqa: ANN001
    plain = db.table("plain")
    assert plain.records() == 0 and list(plain.find()) == [] and plain.first() is None
    doc = plain.append({"x": 1})
    assert list(plain.find()) == [doc]
