"""Links and their handshake without sockets: states of a link, HELLO retries, silent links, handshake bodies."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pynndb.errors import MalformedMessage
from pynndb.mesh.directory import Directory
from pynndb.mesh.handshake import Links, handshake_body, hello_delay, take_handshake
from pynndb.mesh.links import Channel
from tests.mesh.test_directory import Clock, entry

SELF, A, B = "0" * 32, "a" * 32, "b" * 32


def outbound(address: str = "tcp://127.0.0.1:7000") -> Channel:
    socket = cast(Any, object())  # a stand-in: Links never touches the socket, it only keys the link by it
    return Channel(key=("out", socket), address=address, socket=socket)


def test_an_outbound_link_says_hello_with_backoff_until_welcomed_then_is_a_neighbor() -> None:
    links = Links()
    channel = outbound()
    links.add_outbound(channel)
    assert links.connecting() and links.neighbors() == {}
    assert links.by_address(channel.address) is channel
    assert links.hellos_due(0.0, 1.0) == [channel]
    assert links.hellos_due(0.001, 1.0) == []  # the next HELLO waits a little...
    delays = []
    now = 0.0
    for _ in range(12):
        now = channel.next_hello
        assert links.hellos_due(now, 1.0) == [channel]
        delays.append(round(channel.next_hello - now, 9))
    assert delays == sorted(delays) and delays[-1] == 1.0  # ...longer each time, never more than a period
    version = links.version
    waiter = object()
    channel.waiters.append(waiter)
    assert links.welcomed(channel, entry(A, "a"), now) == [waiter] and channel.waiters == []
    assert channel.up and channel.peer == A and channel.hello_attempts == 0 and links.version == version + 1
    assert not links.connecting() and links.neighbors() == {A: channel}
    assert links.hellos_due(now + 10, 1.0) == []


def test_a_link_that_goes_down_leaves_the_neighbors_and_says_hello_again() -> None:
    links = Links()
    channel = outbound()
    links.add_outbound(channel)
    links.welcomed(channel, entry(A, "a"), 0.0)
    assert links.down(channel) and not links.down(channel)  # only the first one is a change
    assert links.neighbors() == {} and links.connecting()
    channel.next_hello = 0.0
    assert links.hellos_due(5.0, 1.0) == [channel]


def test_connecting_is_asked_every_idle_turn_and_follows_every_change_of_the_links() -> None:
    # The answer is kept between changes (an idle node asks at every loop turn); adding or removing a link that
    # never came up changes it without changing `version`, and must not leave a stale answer behind.
    links = Links()
    assert not links.connecting()
    first = outbound()
    links.add_outbound(first)
    assert links.connecting()
    links.remove(first)  # never up: `version` does not move
    assert not links.connecting()
    second = outbound("tcp://127.0.0.1:7001")
    links.add_outbound(second)
    assert links.connecting()
    links.welcomed(second, entry(A, "a"), 0.0)
    assert not links.connecting()
    links.down(second)
    assert links.connecting()


def test_silent_links_are_found_and_removed_links_are_forgotten() -> None:
    links = Links()
    out = outbound()
    links.add_outbound(out)
    links.welcomed(out, entry(A, "a"), 0.0)
    inbound = links.new_inbound(b"identity")
    links.accepted(inbound, entry(B, "b", address="tcp://127.0.0.1:7100"), 2.0)
    assert set(links.neighbors()) == {A, B} and links.inbound_channel(b"identity") is inbound
    assert links.silent(3.0, 2.5) == [out]  # heard 3 s ago; the inbound link 1 s ago
    assert links.remove(out) and links.by_address(out.address) is None and links.outbound(out.key[1]) is None
    assert links.matching("tcp://127.0.0.1:7100", B) == [inbound]
    assert [row["peer"] for row in links.describe()] == [B]
    assert links.describe(lambda peer: "b")[0]["label"] == "b" and "label" not in links.describe()[0]


def test_inbound_links_are_bounded() -> None:
    links = Links()
    for number in range(1024):
        channel = links.new_inbound(number.to_bytes(4, "big"))
        links.accepted(channel, entry(A, "a"), 0.0)
    with pytest.raises(MalformedMessage):
        links.new_inbound(b"one more")


def test_a_handshake_hands_over_the_directory_and_merges_the_peers() -> None:
    clock = Clock()
    theirs = Directory(A, clock)
    theirs.merge(entry(B, "b", address="tcp://127.0.0.1:7100"))
    body = handshake_body(entry(A, "a"), theirs)
    mine = Directory(SELF, clock)
    peer, changes = take_handshake(body, SELF, mine)
    assert peer["id"] == A and sorted(changes) == [(A, "up"), (B, "up")]
    assert mine.is_alive(A) and mine.is_alive(B)
    assert take_handshake(body, SELF, mine)[1] == []  # the same handshake again changes nothing


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"entry": {"id": A}},
        {"entry": entry(SELF, "me"), "directory": []},  # a node cannot link to itself
        {"entry": entry(A, "a"), "directory": {}},
    ],
)
def test_a_bad_handshake_is_refused(body: Any) -> None:
    with pytest.raises(MalformedMessage):
        take_handshake(body, SELF, Directory(SELF, Clock()))


def test_hello_delay_grows_and_is_capped_by_the_period() -> None:
    assert hello_delay(1, 1.0) < hello_delay(2, 1.0) < hello_delay(3, 1.0)
    assert hello_delay(50, 0.1) == 0.1
