"""Time-ordered 24-hex record ids, ObjectId-style: 4 bytes of seconds, 5 random bytes per process, a counter."""

from __future__ import annotations

import itertools
import os
import time

_random = b""
_counter = itertools.count()
_clock = time.time


_second = -1  # the second `_template` was made for
_template = b""  # that second's 8 hex digits and this process's random part, then a %06x for the counter


def _reset() -> None:
    # A forked child must not hand out the parent's ids: new random part, new counter.
    global _random, _counter, _second
    _second = -1
    _random = os.urandom(5).hex().encode()
    _counter = itertools.count(int.from_bytes(os.urandom(3), "big"))


_reset()
os.register_at_fork(after_in_child=_reset)


def _template_now() -> bytes:
    """The id template of the current second (one clock read; the template is made again when the second changes)."""
    global _second, _template
    second = int(_clock())
    if second != _second:
        _template = b"%08x%s%%06x" % (second, _random)
        _second = second
    return _template


def new_oid() -> bytes:
    """Return a new 24-hex id as ASCII bytes; ids from one process sort in creation order within a second, except
    across a wrap of the 24-bit counter (it starts at a random value; once every 16.7M ids)."""
    if int(_clock()) != _second:
        _template_now()  # a new second (rare): a new template
    return _template % (next(_counter) & 0xFFFFFF)


def new_oids(count: int) -> list[bytes]:
    """`count` new ids at once, as `count` calls of `new_oid` would give them (one clock read: a bulk append)."""
    template = _template_now()
    return [template % (number & 0xFFFFFF) for number in itertools.islice(_counter, count)]


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
