"""`Doc`: the dict-like record every read returns, carrying its key."""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from pynndb.core.ids import normalise_key


class Doc(MutableMapping[str, Any]):
    """A document: a mapping of its fields plus the record key (`key` as str, `oid` as bytes)."""

    __slots__ = ("_data", "_oid")

    def __init__(self, dict: Mapping[str, Any] | None = None, oid: str | bytes | None = None) -> None:  # noqa: A002
        if dict is None:
            self._data: builtins.dict[str, Any] = {}
        elif isinstance(dict, Mapping):
            self._data = {**dict}
        else:
            from pynndb.errors import InvalidDocument

            raise InvalidDocument(f"a document must be a dict, not {type(dict).__name__}")
        self._oid: bytes | None = None if oid is None else normalise_key(oid)

    @property
    def key(self) -> str | None:
        """The record key as a str, or None before the document is stored."""
        return None if self._oid is None else self._oid.decode()

    @property
    def oid(self) -> bytes | None:
        """The record key as bytes, or None before the document is stored."""
        return self._oid

    @oid.setter
    def oid(self, value: str | bytes | None) -> None:
        self._oid = None if value is None else normalise_key(value)

    @property
    def doc(self) -> builtins.dict[str, Any]:
        """A plain dict copy of the fields."""
        return {**self._data}

    def __getitem__(self, name: str) -> Any:
        return self._data[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._data[name] = value

    def __delitem__(self, name: str) -> None:
        del self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def get(self, name: str, default: Any = None) -> Any:
        return self._data.get(name, default)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Doc):
            return self._oid == other._oid and self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment, unused-ignore]  # mutable, so unhashable (as dict is)

    def __repr__(self) -> str:
        return f"Doc({self._data!r}, oid={self.key!r})"


class StoredDoc(Doc):
    """The Docs pynndb makes itself (reads, what an append returns): a `Doc` in every respect but its constructor,
    which takes nothing and runs no Python; the maker sets `_data` (a dict it owns, not copied) and `_oid`.

    `Doc(...)` runs `Doc.__init__` (its checks and its copy of the fields); `Doc.__new__(Doc)` skips it but still
    costs a Python-level call with argument tuples. A class whose `__init__` is `object.__init__` is built by C alone:
    ~25 ns less a document, on a full scan of ~0.6 µs a document."""

    __slots__ = ()
    __init__ = object.__init__


_new_doc = StoredDoc


def make_doc(data: dict[str, Any], oid: bytes) -> Doc:
    """Wrap a decoded dict without copying it (the hot read path)."""
    doc = _new_doc()
    doc._data = data
    doc._oid = oid
    return doc
