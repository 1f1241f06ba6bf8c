"""Time-ordered 24-hex record ids, ObjectId-style: 4 bytes of seconds, 5 random bytes per process, and a counter
that starts again (at a random value) each second, so that the ids each thread makes sort in the order it made them."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator

LIMIT = 0xFFFFFF  # the counter's largest value (6 hex digits)
_clock = time.time
_random = b""  # this process's 10 hex digits
# The current second, its template (its 8 hex digits and this process's random part, then a %06x for the counter) and
# its counter, in one tuple: it is replaced whole (one assignment), so an id is always made of one second's template
# and that second's own counter, whichever thread makes it. A new one is made under `_lock`, once per second.
_State = tuple[int, bytes, Iterator[int]]
_state: _State = (-1, b"", iter(()))
_lock = threading.Lock()


def _reset() -> None:
    # A forked child must not hand out the parent's ids: a new random part, a new counter at its next id, and a lock
    # that no thread of the parent holds.
    global _random, _state, _lock
    _random = os.urandom(5).hex().encode()
    _state = (-1, b"", iter(()))
    _lock = threading.Lock()


_reset()
os.register_at_fork(after_in_child=_reset)


def _roll(second: int, seen: _State) -> _State:
    """The state of `second`, unless another thread replaced `seen` meanwhile (then its state). A second's counter
    starts at a random value below 2**23: ids from one thread then ascend, always, across seconds by their time and
    within one by the counter, which has more than 8.3M ids to go before its 6 digits are full (then the next second
    is taken early). The second never goes back: a clock set back keeps the last one. (ObjectId's counter runs on
    across seconds instead, and wraps every 16.7M ids out of order.)"""
    global _state
    with _lock:
        if _state is seen:
            second = max(second, seen[0] + 1)
            start = int.from_bytes(os.urandom(3), "big") >> 1
            _state = (second, b"%08x%s%%06x" % (second, _random), itertools.count(start))
        return _state


def new_oid() -> bytes:
    """Return a new 24-hex id as ASCII bytes; the ids a thread makes sort in the order it made them."""
    state = _state
    second = int(_clock())
    if second > state[0]:
        state = _roll(second, state)  # a new second (rare)
    number = next(state[2])
    if number > LIMIT:  # this second's counter is full (8.3M ids or more in it): the next second, early
        state = _roll(state[0] + 1, state)
        number = next(state[2])
    return state[1] % number


def new_oids(count: int) -> list[bytes]:
    """`count` new ids at once, as `count` calls of `new_oid` would give them (one clock read: a bulk append)."""
    state = _state
    second = int(_clock())
    if second > state[0]:
        state = _roll(second, state)
    numbers = tuple(itertools.islice(state[2], count))
    template = state[1]
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
