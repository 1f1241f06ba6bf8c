"""Membership traffic of one node: announcing its entry on change, probes and their answers, suspicions, deaths,
and the full-directory SYNC between neighbors whose digests differ.

Loop-free: no sockets, no threads. The decisions live in ``Directory`` and ``Membership``; this class turns them
into messages (handed to ``send(type, body, target)``) and liveness changes (handed to ``notify``), and messages
back into calls. The engine calls it on its loop thread; tests call it with plain values and a fake clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from pynndb.errors import MalformedMessage
from pynndb.mesh import wire
from pynndb.mesh.directory import Change, Directory, Entry, is_node_id, validate_entry
from pynndb.mesh.handshake import Links
from pynndb.mesh.local import Endpoints, NodeConfig
from pynndb.mesh.membership import Action, Membership
from pynndb.mesh.routing import Routes

Send = Callable[[int, bytes, "str | None"], None]  # (message type, body, target node id or None: the neighbors)

DIGEST_MISSES = 2  # consecutive probe answers with another digest before a neighbor is sent a full SYNC
SYNC_EVERY_PERIODS = 5  # at most one SYNC per neighbor this often
MAX_SYNC_ENTRIES = 100_000


class Gossip:
    """Announces, probes, suspects and syncs for one node."""

    def __init__(
        self,
        config: NodeConfig,
        endpoints: Endpoints,
        directory: Directory,
        links: Links,
        routes: Routes,
        send: Send,
        notify: Callable[[list[Change]], None],
        refresh_routes: Callable[[], None] = lambda: None,
        lock: threading.RLock | None = None,
        clock: Callable[[], float] = time.monotonic,
        counters: dict[str, int] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config, self.endpoints = config, endpoints
        self.directory, self.links, self.routes = directory, links, routes
        self.send, self.notify, self.refresh_routes = send, notify, refresh_routes
        self.lock = lock if lock is not None else threading.RLock()
        self.clock = clock
        self.period = config.heartbeat
        self.membership = Membership(config.id, self.period, clock)
        self.counters = counters if counters is not None else {"suspicions": 0, "syncs": 0}
        self.seq = 0  # our incarnation: raised on every announcement and refutation
        self.started = time.time()
        self.stopping = stopping
        self.members: tuple[int, frozenset[str]] = (-1, frozenset())
        self.announced = b""
        self.digest_misses: dict[str, int] = {}
        self.synced_at: dict[str, float] = {}
        self.nearby_cache: tuple[Any, frozenset[str]] = (None, frozenset())
        self.reach_key: Any = None
        self.unreachable: dict[str, float] = {}

    # --- our own entry --------------------------------------------------------------------------------------
    def own_entry(self) -> Entry:
        config, endpoints = self.config, self.endpoints
        return Entry(
            id=config.id,
            label=config.label,
            address=config.address,
            links=sorted(self.links.neighbors()),
            services=dict(endpoints.service_info),
            topics=sorted(endpoints.topics),
            public_key=config.public_key,
            heartbeat=config.heartbeat,
            seq=self.seq,
            started=self.started,
        )

    def announce(self, force: bool = False) -> None:
        """Flood our entry under a new seq if it changed since it was last announced (or ``force``: a refutation)."""
        with self.lock:
            entry = self.own_entry()
            content = orjson.dumps([entry["links"], entry["services"], entry["topics"]])
            if content == self.announced and not force:
                return
            self.announced = content
            self.seq += 1
            entry["seq"] = self.seq
            self.directory.merge(entry)
        self.send(wire.HEARTBEAT, orjson.dumps(entry), None)

    def refute(self, seq: int) -> None:
        """Someone suspects us, or declared us dead, at incarnation ``seq``: announce a newer one."""
        if self.stopping():
            return
        self.seq = max(self.seq, seq)
        self.announce(force=True)

    # --- the probe schedule ---------------------------------------------------------------------------------
    def live_members(self) -> frozenset[str]:
        directory = self.directory
        if self.members[0] != directory.version:
            alive = frozenset(n for n, up in directory.alive.items() if up and n != self.config.id)
            self.members = (directory.version, alive)
        return self.members[1]

    def links_of(self, node_id: str) -> list[str]:
        entry = self.directory.entries.get(node_id)
        return entry["links"] if entry is not None else []

    def nearby(self) -> frozenset[str]:
        """Members two hops away (neighbors of neighbors): a random probe reaches them through one relay."""
        self.refresh_routes()
        routes = self.routes
        if self.nearby_cache[0] != routes.key:
            own = set(self.links.neighbors())
            found: set[str] = set()
            for neighbor in own:
                found |= routes.graph.get(neighbor, set())
            self.nearby_cache = (routes.key, frozenset(found - own - {self.config.id}))
        return self.nearby_cache[1]

    def unreachable_members(self) -> list[Action]:
        """Suspect live members the link graph has not reached for two periods: across a partition nobody on our
        side probes them, and they cannot refute."""
        self.refresh_routes()
        now = self.clock()
        if self.reach_key != self.routes.key:
            self.reach_key = self.routes.key
            reached = self.routes.reachable()
            with self.lock:
                lost = self.live_members() - reached
            self.unreachable = {node_id: self.unreachable.get(node_id, now) for node_id in lost}
        return [Action("suspect", n) for n, since in self.unreachable.items() if now - since >= 2 * self.period]

    def tick(self) -> None:
        """Probe when due, chase late answers, and settle suspicions whose time is over."""
        due = self.clock() >= self.membership.next_round
        nearby = self.nearby() if due else None
        with self.lock:
            members = self.live_members()
            neighbors = list(self.links.neighbors())
            heard = self.directory.heard
            actions = self.membership.tick(neighbors, members, self.links_of, heard, nearby)
        if due:
            actions += self.unreachable_members()
        self.act(actions)
        if self.directory.suspects:
            self.settle()

    def settle(self) -> None:
        with self.lock:
            changes = self.directory.expire(self.period)
            confirmed, self.directory.confirmed = self.directory.confirmed, []
        self.notify(changes)
        for node_id, seq in confirmed:
            self.send(wire.DEAD, orjson.dumps({"id": node_id, "seq": seq}), None)

    def busy(self) -> bool:
        return self.membership.busy() or bool(self.directory.suspects)

    def act(self, actions: list[Action]) -> None:
        for action in actions:
            if action.kind == "probe":
                self.send(wire.PROBE, orjson.dumps({"n": action.number}), action.peer)
            elif action.kind == "probe_req":
                body = {"n": action.number, "target": action.target}
                self.send(wire.PROBE_REQ, orjson.dumps(body), action.peer)
            elif action.kind == "ack":
                self.send(wire.ACK, orjson.dumps({"n": action.number}), action.peer)
            elif action.kind == "suspect":
                with self.lock:
                    entry = self.directory.entries.get(action.peer)
                    seq = entry["seq"] if entry is not None else 0
                    news = entry is not None and self.directory.suspect(action.peer, seq, self.period, mine=True)
                if news:
                    self.counters["suspicions"] += 1
                    self.send(wire.SUSPECT, orjson.dumps({"id": action.peer, "seq": seq}), None)

    # --- messages -------------------------------------------------------------------------------------------
    @staticmethod
    def decode_fact(frame: bytes, offset: int) -> tuple[str, int]:
        """The ``{id, seq}`` body of SUSPECT and DEAD."""
        body = wire.require_dict(wire.decode_json_body(frame, offset), "fact")
        node_id = body.get("id")
        if not is_node_id(node_id):
            raise MalformedMessage("fact needs a node id")
        return str(node_id), wire.require_field(body, "seq", int)

    def on_fact(self, kind: int, origin: str, frame: bytes, offset: int) -> bool:
        """Take a flooded HEARTBEAT (an entry), SUSPECT or DEAD; True if it was news, to be passed on."""
        if kind == wire.HEARTBEAT:
            entry = validate_entry(wire.decode_json_body(frame, offset))
            if entry["id"] != origin:
                raise MalformedMessage("heartbeat entry does not match its origin")
            with self.lock:
                news, changes = self.directory.accept(entry)
        else:
            node_id, seq = self.decode_fact(frame, offset)
            if node_id == self.config.id:
                self.refute(seq)
                return False
            with self.lock:
                if kind == wire.SUSPECT:
                    news, changes = self.directory.suspect(node_id, seq, self.period), []
                else:
                    news, changes = self.directory.confirm(node_id, seq)
        self.notify(changes)
        return news

    def on_message(self, kind: int, origin: str, body: dict[str, Any]) -> None:
        """PROBE, ACK, PROBE_REQ and SYNC addressed to this node."""
        directory = self.directory
        if kind == wire.PROBE:
            number = wire.require_field(body, "n", int)
            with self.lock:
                known = directory.entries.get(origin) is not None
                doubted = known and (not directory.is_alive(origin) or directory.is_suspect(origin))
                answer = {"n": number, "digest": directory.digest(), "doubted": doubted}
            self.send(wire.ACK, orjson.dumps(answer), origin)
        elif kind == wire.ACK:
            number = wire.require_field(body, "n", int)
            self.act(self.membership.heard(origin))
            relay = self.membership.answered(number)
            if relay is not None:
                self.act([relay])
            if body.get("doubted") is True:
                self.refute(self.seq)
            digest = body.get("digest")
            if isinstance(digest, str) and origin in self.links.neighbors():
                self.compare_digest(origin, digest)
        elif kind == wire.PROBE_REQ:
            number = wire.require_field(body, "n", int)
            target = body.get("target")
            if not is_node_id(target) or target == self.config.id:
                raise MalformedMessage("probe request needs another node's id")
            self.act([self.membership.probe_for(origin, number, str(target))])
        elif kind == wire.SYNC:
            self.on_sync(origin, body)

    def compare_digest(self, neighbor: str, digest: str) -> None:
        with self.lock:
            mine = self.directory.digest()
        if digest == mine:
            self.digest_misses.pop(neighbor, None)
            return
        misses = self.digest_misses.get(neighbor, 0) + 1
        self.digest_misses[neighbor] = misses
        now = self.clock()
        if misses >= DIGEST_MISSES and now - self.synced_at.get(neighbor, -1e9) >= SYNC_EVERY_PERIODS * self.period:
            self.synced_at[neighbor] = now
            self.digest_misses.pop(neighbor, None)
            self.send_sync(neighbor, reply=True)

    def send_sync(self, peer: str, reply: bool) -> None:
        with self.lock:
            body = {
                "entries": self.directory.alive_entries(),
                "gone": self.directory.gone_facts(),
                "reply": reply,
            }
        self.counters["syncs"] += 1
        self.send(wire.SYNC, orjson.dumps(body), peer)

    def on_sync(self, origin: str, body: dict[str, Any]) -> None:
        """Merge a neighbor's whole directory: newer entries, and deaths we missed."""
        entries = wire.require_field(body, "entries", list)
        gone = wire.require_field(body, "gone", list)
        checked = [validate_entry(raw) for raw in entries[:MAX_SYNC_ENTRIES]]
        facts = []
        for fact in gone[:MAX_SYNC_ENTRIES]:
            if not (isinstance(fact, list) and len(fact) == 2 and is_node_id(fact[0]) and isinstance(fact[1], int)):
                raise MalformedMessage("gone facts are [id, seq] pairs")
            facts.append((str(fact[0]), int(fact[1])))
        changes = []
        refute_at = -1
        with self.lock:
            for entry in checked:
                if entry["id"] != self.config.id:
                    changes += self.directory.merge(entry)
            for node_id, seq in facts:
                if node_id == self.config.id:
                    refute_at = max(refute_at, seq)
                else:
                    changes += self.directory.confirm(node_id, seq)[1]
        self.notify(changes)
        if refute_at >= 0:
            self.refute(refute_at)
        if body.get("reply") is True:
            self.send_sync(origin, reply=False)
