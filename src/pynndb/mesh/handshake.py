"""Links and their handshake, loop-free: which links exist and are up, what HELLO and WELCOME carry and what they
change in the directory, when to say HELLO again, and which links went silent.

No sockets and no clock of its own: the engine passes the time and does the sending. A link is up once its
handshake completed (HELLO answered by WELCOME), down when reset or silent, and removed on BYE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pynndb.errors import MalformedMessage
from pynndb.mesh import wire
from pynndb.mesh.directory import Change, Directory, Entry, validate_entry
from pynndb.mesh.links import Channel

MAX_INBOUND_LINKS = 1024
MAX_HANDSHAKE_ENTRIES = 10_000
FIRST_HELLO_DELAY = 0.005  # seconds; doubled per unanswered HELLO, up to one probe period


def handshake_body(own: Entry, directory: Directory) -> dict[str, Any]:
    """What HELLO and WELCOME carry: this node's entry and every entry it believes alive."""
    return {"entry": own, "directory": directory.alive_entries()}


def take_handshake(body: Any, self_id: str, directory: Directory) -> tuple[Entry, list[Change]]:
    """Check a HELLO or WELCOME body and merge its entries (the caller holds the directory's lock); the peer's
    entry and the liveness changes."""
    body = wire.require_dict(body, "handshake")
    entry = validate_entry(body.get("entry"))
    if entry["id"] == self_id:
        raise MalformedMessage("a node cannot link to itself")
    others = body.get("directory")
    if not isinstance(others, list):
        raise MalformedMessage("handshake directory must be a list")
    entries = [validate_entry(raw) for raw in others[:MAX_HANDSHAKE_ENTRIES]]
    changes: list[Change] = []
    for other in [entry, *entries]:
        if other["id"] != self_id:
            changes += directory.merge(other)
    return entry, changes


def hello_delay(attempts: int, period: float) -> float:
    """Wait before the next HELLO of a link not up yet: short at first, never longer than a period."""
    return min(FIRST_HELLO_DELAY * 2 ** min(attempts, 10), period)


class Links:
    """Every link of one node: outbound ones by socket and by address, inbound ones by ROUTER identity.

    ``version`` changes whenever a link comes up or goes down (routes and the announced entry depend on it)."""

    def __init__(self) -> None:
        self.channels: dict[tuple[str, Any], Channel] = {}
        self.inbound: dict[bytes, Channel] = {}
        self.version = 0
        self._neighbors: dict[str, Channel] = {}
        self._neighbors_version = -1
        self._connecting: tuple[tuple[int, int], bool] = ((-1, -1), False)
        self._edits = 0  # links added or removed so far

    def __iter__(self) -> Iterator[Channel]:
        """Every link (outbound and inbound, up or not)."""
        return (channel for key, channel in list(self.channels.items()) if key[0] != "address")

    def by_address(self, address: str) -> Channel | None:
        return self.channels.get(("address", address))

    def outbound(self, key: Any) -> Channel | None:
        """The outbound link whose socket is ``key``."""
        return self.channels.get(("out", key))

    def add_outbound(self, channel: Channel) -> None:
        self._edits += 1
        self.channels[channel.key] = channel
        self.channels[("address", channel.address)] = channel

    def inbound_channel(self, identity: bytes) -> Channel | None:
        return self.inbound.get(identity)

    def new_inbound(self, identity: bytes) -> Channel:
        """A channel for a peer's first HELLO on our ROUTER (not kept until its handshake is taken)."""
        if len(self.inbound) >= MAX_INBOUND_LINKS:
            raise MalformedMessage("too many inbound links")
        return Channel(key=("in", identity), address="", identity=identity)

    def accepted(self, channel: Channel, entry: Entry, now: float) -> None:
        """An inbound HELLO was taken: keep the channel and mark it up."""
        channel.peer = entry["id"]
        channel.address = entry["address"]
        self.inbound[channel.identity or b""] = channel
        self.channels[channel.key] = channel
        self.up(channel, now)

    def welcomed(self, channel: Channel, entry: Entry, now: float) -> list[Any]:
        """An outbound link got WELCOME: mark it up; the waiters to wake."""
        channel.peer = entry["id"]
        self.up(channel, now)
        waiters, channel.waiters = channel.waiters, []
        return waiters

    def up(self, channel: Channel, now: float) -> None:
        channel.up = True
        channel.last_rx = now
        channel.hello_attempts = 0
        self.version += 1

    def down(self, channel: Channel) -> bool:
        """Mark a link down (it stays, and says HELLO again if outbound); True if it was up."""
        if not channel.up:
            return False
        channel.up = False
        self.version += 1
        return True

    def remove(self, channel: Channel) -> bool:
        """Forget a link; True if it was up. The caller closes its socket."""
        was_up = self.down(channel)
        self._edits += 1
        self.channels.pop(channel.key, None)
        if self.channels.get(("address", channel.address)) is channel:
            del self.channels[("address", channel.address)]
        if channel.identity is not None and not channel.outbound:
            self.inbound.pop(channel.identity, None)
        return was_up

    def matching(self, name: str, peer: str) -> list[Channel]:
        """The links to address ``name`` or node ``peer``; their address entries are dropped already."""
        found = []
        for key, channel in list(self.channels.items()):
            if channel.address == name or channel.peer == peer:
                if key[0] == "address":
                    self.channels.pop(key, None)
                else:
                    found.append(channel)
        return found

    def neighbors(self) -> dict[str, Channel]:
        """Peer id -> channel for every link that is up (cached until a link changes)."""
        if self._neighbors_version != self.version:
            result: dict[str, Channel] = {}
            for key, channel in self.channels.items():
                if key[0] != "address" and channel.up and channel.peer is not None:
                    result.setdefault(channel.peer, channel)
            self._neighbors = result
            self._neighbors_version = self.version
        return self._neighbors

    def connecting(self) -> bool:
        """True while an outbound link waits for its handshake (HELLOs need a finer timer than the period).

        Asked at every turn of an idle node's loop: the answer is kept until a link is added or removed, or comes up
        or goes down (which changes ``version``)."""
        state = (self.version, self._edits)
        if state != self._connecting[0]:
            waiting = any(key[0] == "out" and not channel.up for key, channel in self.channels.items())
            self._connecting = (state, waiting)
        return self._connecting[1]

    def hellos_due(self, now: float, period: float) -> list[Channel]:
        """Outbound links not up whose next HELLO is due; their next HELLO is scheduled."""
        due = []
        for key, channel in list(self.channels.items()):
            if key[0] == "out" and not channel.up and now >= channel.next_hello:
                channel.hello_attempts += 1
                channel.next_hello = now + hello_delay(channel.hello_attempts, period)
                due.append(channel)
        return due

    def silent(self, now: float, limit: float) -> list[Channel]:
        """Links up that carried nothing for ``limit`` seconds (outbound ones go down, inbound ones go away)."""
        return [channel for channel in self if channel.up and now - channel.last_rx > limit]

    def describe(self, label_of: Callable[[str | None], str | None] | None = None) -> list[dict[str, Any]]:
        """Every link: peer, address, direction, up (for STATUS), and its label when ``label_of`` is given."""
        result = []
        for channel in self:
            row: dict[str, Any] = {"peer": channel.peer}
            if label_of is not None:
                row["label"] = label_of(channel.peer)
            row.update(address=channel.address, direction="out" if channel.outbound else "in", up=channel.up)
            result.append(row)
        return result
