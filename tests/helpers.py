"""Shared test helpers: polling with a deadline, sample documents, index functions importable by name."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def person(number: int) -> dict[str, Any]:
    """A sample document like the ones the benchmark and the README use."""
    return {
        "name": f"Name {number % 50}",
        "age": 20 + number % 7,
        "email": f"user{number}@example.com",
        "tags": ["a", "b"] if number % 2 else ["c"],
    }


def upper_name(doc: dict[str, Any]) -> Any:
    """Function index: the upper-cased name, or None (not indexed) when there is none."""
    name = doc.get("name")
    return None if name is None else name.upper()


def tag_keys(doc: dict[str, Any]) -> Any:
    """Function index returning several keys: one per tag."""
    return doc.get("tags")
