"""Secondary index definitions: a format string or a function of the document, turned into index keys.

A definition is stored as data (the format string, or the function's import name). Opening a database never
imports or runs code named in it unless the caller opted in with ``config={'trust_functions': True}``.
"""

from __future__ import annotations

import hashlib
import importlib
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pynndb.core.keys import EXACT, MAX_KEY_SIZE, TAG_STR, checked, encode_key, number_key, pack_exact
from pynndb.errors import IndexDefinitionError, IndexFunctionUnavailable, InvalidIndexKey

IndexFunction = Callable[[dict[str, Any]], Any]
_formatter = string.Formatter()


def function_name(func: IndexFunction) -> str:
    """The import name ('module:qualname') recorded for a function index."""
    return f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', repr(func))}"


def _import_function(name: str) -> IndexFunction | None:
    module_name, _, qualname = name.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError):
        return None
    return target if callable(target) else None


@dataclass
class IndexDefinition:
    """What an index indexes: `func` (format string) or `function` (import name), and whether keys repeat."""

    name: str
    func: str | None = None
    function: str | None = None
    duplicates: bool = False
    callable: IndexFunction | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"func": self.func, "function": self.function, "duplicates": self.duplicates}

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> IndexDefinition:
        return cls(name, data.get("func"), data.get("function"), bool(data.get("duplicates")))

    @classmethod
    def build(cls, name: str, func: str | IndexFunction, duplicates: bool) -> IndexDefinition:
        """Validate a definition given by the application."""
        if not isinstance(duplicates, bool):
            raise IndexDefinitionError("duplicates must be True or False")
        if isinstance(func, str):
            parse_format(func)
            return cls(name, func=func, duplicates=duplicates)
        if callable(func):
            return cls(name, function=function_name(func), duplicates=duplicates, callable=func)
        raise IndexDefinitionError(f"index {name!r}: func must be a format string or a function")

    def same_as(self, other: IndexDefinition) -> bool:
        return self.to_json() == other.to_json()


def parse_format(text: str) -> list[tuple[str, str, str | None]]:
    """Check a format string: at least one field, every field named; return (literal, field, spec) parts."""
    try:
        parsed = list(_formatter.parse(text))
    except ValueError as error:
        raise IndexDefinitionError(f"bad index format string {text!r}: {error}") from None
    if any(conversion not in (None, "r", "s", "a") for _literal, _name, _spec, conversion in parsed):
        raise IndexDefinitionError(f"bad conversion in index format string {text!r} (use !r, !s or !a)")
    parts = [
        (literal, name + ("!" + conversion if conversion else "") if name is not None else None, spec)
        for literal, name, spec, conversion in parsed
    ]
    names = [name for _literal, name, _spec in parts if name is not None]
    if not names or any(name == "" or name.isdigit() for name in names):
        raise IndexDefinitionError(f"index format string {text!r} must name fields, like '{{name}}'")
    return [(literal, name or "", spec) for literal, name, spec in parts]


KEYS_VERSION = 1  # bump when the keys a definition makes of a document change (core/keys.py, the functions below)


def index_token(definitions: Iterable[IndexDefinition]) -> bytes:
    """A short digest (16 hex digits) of a table's index definitions, in order. A journal entry carries the index
    keys its writer computed, with this token; a replica whose table has the same token uses them as they are."""
    described = orjson.dumps([KEYS_VERSION, [[each.name, each.to_json()] for each in definitions]])
    return hashlib.blake2b(described, digest_size=8).hexdigest().encode()


def key_function(definition: IndexDefinition, trust_functions: bool) -> Callable[[dict[str, Any]], list[bytes]]:
    """Compile a definition into: document fields -> list of encoded keys (empty when not indexed)."""
    if definition.func is not None:
        return _format_keys(definition.func)
    function = definition.callable
    if function is None and trust_functions and definition.function:
        function = _import_function(definition.function)
        definition.callable = function
    if function is None:
        return _unavailable(definition)
    return _function_keys(function)


def _format_keys(text: str) -> Callable[[dict[str, Any]], list[bytes]]:
    parts = parse_format(text)
    literal, name, spec = parts[0]
    if len(parts) == 1 and not literal and not spec and name.isidentifier():
        # A lone '{field}' keeps the value's type, so numbers sort by value rather than as text.
        def single(data: dict[str, Any]) -> list[bytes]:
            value: Any = data.get(name)
            kind = value.__class__
            if kind is str:
                key = TAG_STR + value.encode()
                if len(key) <= MAX_KEY_SIZE:
                    return [key]
            elif kind is int or kind is float:
                if 0 < value <= EXACT:
                    return [pack_exact(0x10, -value, 0x8000)]  # number_key's common case, without a call
                return [number_key(value)]  # at most 11 bytes: no size check
            elif value is None:
                return []
            return [checked(encode_key(value))]

        return single
    format_map = text.format_map

    def formatted(data: dict[str, Any]) -> list[bytes]:
        try:
            return [checked(encode_key(format_map(data)))]
        except (KeyError, IndexError):
            return []  # a record lacking an indexed field is not indexed (sparse index)
        except (ValueError, TypeError, AttributeError) as error:
            raise InvalidIndexKey(f"index format {text!r} cannot format this document: {error}") from None

    return formatted


def _function_keys(function: IndexFunction) -> Callable[[dict[str, Any]], list[bytes]]:
    def keys(data: dict[str, Any]) -> list[bytes]:
        value = function(data)
        if value is None:
            return []
        if isinstance(value, list):
            return list(dict.fromkeys(checked(encode_key(item)) for item in value if item is not None))
        return [checked(encode_key(value))]

    return keys


def _unavailable(definition: IndexDefinition) -> Callable[[dict[str, Any]], list[bytes]]:
    def keys(data: dict[str, Any]) -> list[bytes]:
        raise IndexFunctionUnavailable(
            f"index {definition.name!r} is a function index ({definition.function}); supply the function with "
            f"table.ensure({definition.name!r}, function) before writing, or open the database with "
            "config={'trust_functions': True}"
        )

    return keys
