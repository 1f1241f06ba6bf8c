"""Time-ordered 24-hex record ids, ObjectId-style: 4 bytes of seconds, 5 random bytes per process, and a counter
that starts again (at a random value) each second, so that the ids of one process sort in creation order."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

LIMIT = 0xFFFFFF  # the counter's largest value (6 hex digits)
_clock = time.time
_random = b""  # this process's 10 hex digits
_second = -1  # the second of `_template`: it never goes back (see `_roll`)
_template = b""  # that second's 8 hex digits and this process's random part, then a %06x for the counter
_counter: Iterator[int] = iter(())  # that second's counter values


def _reset() -> None:
    # A forked child must not hand out the parent's ids: a new random part (and a new counter at its next id).
    global _random, _second
    _random = os.urandom(5).hex().encode()
    _second = -1


_reset()
os.register_at_fork(after_in_child=_reset)


def _roll(second: int) -> bytes:
    """Start `second`: its template, and a counter from a random value below 2**23. Ids from one process then
    ascend, always: across seconds by their time, within one by the counter, which has more than 8.3M ids to go
    before its 6 digits are full (then the next second is taken early: `_full`). A clock that goes back keeps the
    last second (ObjectId's counter runs on across seconds instead and wraps every 16.7M ids, out of order)."""
    global _second, _template, _counter
    _second = max(second, _second + 1)
    _template = b"%08x%s%%06x" % (_second, _random)
    _counter = itertools.count(int.from_bytes(os.urandom(3), "big") >> 1)
    return _template


def _template_now() -> bytes:
    """The id template of the current second (one clock read; made again when the clock passes the last second)."""
    second = int(_clock())
    return _roll(second) if second > _second else _template


def _full() -> bytes:
    """The counter of the current second is full: the next second's first id (a second taken early)."""
    template = _roll(_second + 1)
    return template % next(_counter)


def new_oid() -> bytes:
    """Return a new 24-hex id as ASCII bytes; the ids of one process sort in creation order."""
    if int(_clock()) > _second:
        _template_now()  # a new second (rare): a new template
    number = next(_counter)
    return _template % number if number <= LIMIT else _full()


def new_oids(count: int) -> list[bytes]:
    """`count` new ids at once, as `count` calls of `new_oid` would give them (one clock read: a bulk append)."""
    template = _template_now()
    numbers = list(itertools.islice(_counter, count))
    if numbers and numbers[-1] > LIMIT:  # (this second's counter filled up inside the call: the rest one by one)
        fitting = [template % number for number in numbers if number <= LIMIT]
        return fitting + [new_oid() for _number in range(count - len(fitting))]
    return [template % number for number in numbers]


def normalise_key(key: object) -> bytes:
    """Turn a key given as str or bytes into the stored form (ASCII bytes)."""
    from pynndb.errors import InvalidKey

    if isinstance(key, str) and key.isascii() and key.isalnum() and 0 < len(key) <= 256:
        return key.encode()
    if isinstance(key, bytes):
        result = key
    elif isinstance(key, str):
        try:
            result = key.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidKey(f"record key {key!r} is not ASCII") from None
    else:
        raise InvalidKey(f"a record key must be str or bytes, not {type(key).__name__}")
    if not 0 < len(result) <= 256 or not _ALLOWED.issuperset(result):
        raise InvalidKey(f"record key {key!r} must be 1 to 256 of the characters A-Z a-z 0-9 - _ . :")
    return result


# Keys are written verbatim into JSON journal entries, so they are limited to characters that need no escaping.
_ALLOWED = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.:")
