"""Doc: a dict-like record carrying its key."""

from __future__ import annotations

import copy
import pickle

import pytest

from pynndb import Doc
from pynndb.core.table import Table
from pynndb.errors import InvalidDocument, InvalidKey

KEY = "65a1b2c3d4e5f60718293a4b"


def test_doc_behaves_like_a_dict() -> None:
    doc = Doc({"name": "Fred", "age": 30})
    assert doc["name"] == "Fred"
    doc["city"] = "Paris"
    del doc["age"]
    assert "age" not in doc and "city" in doc
    assert sorted(doc.keys()) == ["city", "name"]
    assert dict(doc.items()) == {"name": "Fred", "city": "Paris"}
    assert doc.get("missing") is None and doc.get("missing", 7) == 7
    assert len(doc) == 2
    with pytest.raises(KeyError):
        doc["age"]


def test_doc_copies_its_input_and_doc_returns_a_copy() -> None:
    source = {"name": "Fred"}
    doc = Doc(source)
    doc["name"] = "Jim"
    assert source == {"name": "Fred"}
    plain = doc.doc
    plain["name"] = "Changed"
    assert doc["name"] == "Jim"
    assert type(plain) is dict


def test_doc_key_and_oid() -> None:
    empty = Doc()
    assert empty.key is None and empty.oid is None and len(empty) == 0
    doc = Doc({"a": 1}, oid=KEY)
    assert doc.key == KEY and doc.oid == KEY.encode()
    assert Doc({"a": 1}, oid=KEY.encode()).key == KEY


def test_doc_equality() -> None:
    assert Doc({"a": 1}, KEY) == Doc({"a": 1}, KEY)
    assert Doc({"a": 1}, KEY) != Doc({"a": 2}, KEY)
    assert Doc({"a": 1}) == {"a": 1}


def test_doc_rejects_non_mappings_and_bad_keys() -> None:
    with pytest.raises(InvalidDocument):
        Doc(["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        Doc({}, oid=12)  # type: ignore[arg-type]
    with pytest.raises(InvalidKey):
        Doc({}, oid="ключ")


def test_docs_pynndb_makes_behave_as_docs_made_by_hand(table: Table) -> None:
    """Reads and appends return Docs built without `Doc.__init__` (core/doc.py, StoredDoc): they must copy, pickle,
    compare, change and save like a Doc built by hand."""
    appended = table.append({"name": "Ann", "tags": ["a"]})
    read = table.get(appended.key)
    scanned = next(table.find())
    by_hand = Doc({"name": "Ann", "tags": ["a"]}, appended.key)
    for doc in (appended, read, scanned):
        assert isinstance(doc, Doc) and doc == by_hand and repr(doc) == repr(by_hand)
        assert copy.copy(doc) == doc and copy.copy(doc).key == doc.key
        deep = copy.deepcopy(doc)
        deep["tags"].append("b")
        assert doc["tags"] == ["a"] and deep.key == doc.key
        assert pickle.loads(pickle.dumps(doc)) == doc
    read["name"] = "Bob"
    del read["tags"]
    table.save(read)
    assert table.get(appended.key).doc == {"name": "Bob"}
    assert [doc.doc for doc in table.find()] == [{"name": "Bob"}]
