"""Membership traffic of one node: announcing its entry on change, probes and their answers, suspicions, deaths,
and the full-directory SYNC between neighbors whose digests differ.

Runs on the loop thread only, like ``Requests``; the decisions live in the loop-free ``Directory`` and
``Membership``, this class turns them into messages and messages back into calls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from pynndb.errors import MalformedMessage
from pynndb.mesh import wire
from pynndb.mesh.directory import Entry, is_node_id, validate_entry
from pynndb.mesh.membership import Action, Membership

if TYPE_CHECKING:
    from pynndb.mesh.engine import Engine

DIGEST_MISSES = 2  # consecutive probe answers with another digest before a neighbor is sent a full SYNC
SYNC_EVERY_PERIODS = 5  # at most one SYNC per neighbor this often
MAX_SYNC_ENTRIES = 100_000


class Gossip:
    """Announces, probes, suspects and syncs for one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.period = engine.config.heartbeat
        self.membership = Membership(engine.config.id, self.period)
        self.members: tuple[int, frozenset[str]] = (-1, frozenset())
        self.announced = b""
        self.digest_misses: dict[str, int] = {}
        self.synced_at: dict[str, float] = {}
        self.nearby_cache: tuple[Any, frozenset[str]] = (None, frozenset())
        self.reach_key: Any = None
        self.unreachable: dict[str, float] = {}

    # --- our own entry --------------------------------------------------------------------------------------
    def own_entry(self) -> Entry:
        engine = self.engine
        config, endpoints = engine.config, engine.endpoints
        return Entry(
            id=config.id,
            label=config.label,
            address=config.address,
            links=sorted(engine.neighbors()),
            services=dict(endpoints.service_info),
            topics=sorted(endpoints.topics),
            public_key=config.public_key,
            heartbeat=config.heartbeat,
            seq=engine.seq,
            started=engine.started,
        )

    def announce(self, force: bool = False) -> None:
        """Flood our entry under a new seq if it changed since it was last announced (or ``force``: a refutation)."""
        engine = self.engine
        with engine.lock:
            entry = self.own_entry()
            content = orjson.dumps([entry["links"], entry["services"], entry["topics"]])
            if content == self.announced and not force:
                return
            self.announced = content
            engine.seq += 1
            entry["seq"] = engine.seq
            engine.directory.merge(entry)
        engine.originate(wire.HEARTBEAT, orjson.dumps(entry))

    def refute(self, seq: int) -> None:
        """Someone suspects us, or declared us dead, at incarnation ``seq``: announce a newer one."""
        if self.engine.loop.stopping:
            return
        self.engine.seq = max(self.engine.seq, seq)
        self.announce(force=True)

    # --- the probe schedule ---------------------------------------------------------------------------------
    def live_members(self) -> frozenset[str]:
        directory = self.engine.directory
        if self.members[0] != directory.version:
            alive = frozenset(n for n, up in directory.alive.items() if up and n != self.engine.config.id)
            self.members = (directory.version, alive)
        return self.members[1]

    def links_of(self, node_id: str) -> list[str]:
        entry = self.engine.directory.entries.get(node_id)
        return entry["links"] if entry is not None else []

    def nearby(self) -> frozenset[str]:
        """Members two hops away (neighbors of neighbors): a random probe reaches them through one relay."""
        engine = self.engine
        engine.refresh_routes()
        routes = engine.routes
        if self.nearby_cache[0] != routes.key:
            own = set(engine.neighbors())
            found: set[str] = set()
            for neighbor in own:
                found |= routes.graph.get(neighbor, set())
            self.nearby_cache = (routes.key, frozenset(found - own - {engine.config.id}))
        return self.nearby_cache[1]

    def unreachable_members(self) -> list[Action]:
        """Suspect live members the link graph has not reached for two periods: across a partition nobody on our
        side probes them, and they cannot refute."""
        engine = self.engine
        engine.refresh_routes()
        now = time.monotonic()
        if self.reach_key != engine.routes.key:
            self.reach_key = engine.routes.key
            reached = engine.routes.reachable()
            with engine.lock:
                lost = self.live_members() - reached
            self.unreachable = {node_id: self.unreachable.get(node_id, now) for node_id in lost}
        return [Action("suspect", n) for n, since in self.unreachable.items() if now - since >= 2 * self.period]

    def tick(self) -> None:
        """Probe when due, chase late answers, and settle suspicions whose time is over."""
        engine = self.engine
        due = time.monotonic() >= self.membership.next_round
        nearby = self.nearby() if due else None
        with engine.lock:
            members = self.live_members()
            neighbors = list(engine.neighbors())
            heard = engine.directory.heard
            actions = self.membership.tick(neighbors, members, self.links_of, heard, nearby)
        if due:
            actions += self.unreachable_members()
        self.act(actions)
        if engine.directory.suspects:
            self.settle()

    def settle(self) -> None:
        engine = self.engine
        with engine.lock:
            changes = engine.directory.expire(self.period)
            confirmed, engine.directory.confirmed = engine.directory.confirmed, []
        engine.notify(changes)
        for node_id, seq in confirmed:
            engine.originate(wire.DEAD, orjson.dumps({"id": node_id, "seq": seq}))

    def busy(self) -> bool:
        return self.membership.busy() or bool(self.engine.directory.suspects)

    def act(self, actions: list[Action]) -> None:
        engine = self.engine
        for action in actions:
            if action.kind == "probe":
                engine.originate(wire.PROBE, orjson.dumps({"n": action.number}), target=action.peer)
            elif action.kind == "probe_req":
                body = {"n": action.number, "target": action.target}
                engine.originate(wire.PROBE_REQ, orjson.dumps(body), target=action.peer)
            elif action.kind == "ack":
                engine.originate(wire.ACK, orjson.dumps({"n": action.number}), target=action.peer)
            elif action.kind == "suspect":
                with engine.lock:
                    entry = engine.directory.entries.get(action.peer)
                    seq = entry["seq"] if entry is not None else 0
                    news = entry is not None and engine.directory.suspect(action.peer, seq, self.period, mine=True)
                if news:
                    engine.counters["suspicions"] += 1
                    engine.originate(wire.SUSPECT, orjson.dumps({"id": action.peer, "seq": seq}))

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
        engine = self.engine
        if kind == wire.HEARTBEAT:
            entry = validate_entry(wire.decode_json_body(frame, offset))
            if entry["id"] != origin:
                raise MalformedMessage("heartbeat entry does not match its origin")
            with engine.lock:
                news, changes = engine.directory.accept(entry)
        else:
            node_id, seq = self.decode_fact(frame, offset)
            if node_id == engine.config.id:
                self.refute(seq)
                return False
            with engine.lock:
                if kind == wire.SUSPECT:
                    news, changes = engine.directory.suspect(node_id, seq, self.period), []
                else:
                    news, changes = engine.directory.confirm(node_id, seq)
        engine.notify(changes)
        return news

    def on_message(self, kind: int, origin: str, body: dict[str, Any]) -> None:
        """PROBE, ACK, PROBE_REQ and SYNC addressed to this node."""
        engine = self.engine
        directory = engine.directory
        if kind == wire.PROBE:
            number = wire.require_field(body, "n", int)
            with engine.lock:
                known = directory.entries.get(origin) is not None
                doubted = known and (not directory.is_alive(origin) or directory.is_suspect(origin))
                answer = {"n": number, "digest": directory.digest(), "doubted": doubted}
            engine.originate(wire.ACK, orjson.dumps(answer), target=origin)
        elif kind == wire.ACK:
            number = wire.require_field(body, "n", int)
            self.act(self.membership.heard(origin))
            relay = self.membership.answered(number)
            if relay is not None:
                self.act([relay])
            if body.get("doubted") is True:
                self.refute(engine.seq)
            digest = body.get("digest")
            if isinstance(digest, str) and origin in engine.neighbors():
                self.compare_digest(origin, digest)
        elif kind == wire.PROBE_REQ:
            number = wire.require_field(body, "n", int)
            target = body.get("target")
            if not is_node_id(target) or target == engine.config.id:
                raise MalformedMessage("probe request needs another node's id")
            self.act([self.membership.probe_for(origin, number, str(target))])
        elif kind == wire.SYNC:
            self.on_sync(origin, body)

    def compare_digest(self, neighbor: str, digest: str) -> None:
        engine = self.engine
        with engine.lock:
            mine = engine.directory.digest()
        if digest == mine:
            self.digest_misses.pop(neighbor, None)
            return
        misses = self.digest_misses.get(neighbor, 0) + 1
        self.digest_misses[neighbor] = misses
        now = time.monotonic()
        if misses >= DIGEST_MISSES and now - self.synced_at.get(neighbor, -1e9) >= SYNC_EVERY_PERIODS * self.period:
            self.synced_at[neighbor] = now
            self.digest_misses.pop(neighbor, None)
            self.send_sync(neighbor, reply=True)

    def send_sync(self, peer: str, reply: bool) -> None:
        engine = self.engine
        with engine.lock:
            body = {
                "entries": engine.directory.alive_entries(),
                "gone": engine.directory.gone_facts(),
                "reply": reply,
            }
        engine.counters["syncs"] += 1
        engine.originate(wire.SYNC, orjson.dumps(body), target=peer)

    def on_sync(self, origin: str, body: dict[str, Any]) -> None:
        """Merge a neighbor's whole directory: newer entries, and deaths we missed."""
        engine = self.engine
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
        with engine.lock:
            for entry in checked:
                if entry["id"] != engine.config.id:
                    changes += engine.directory.merge(entry)
            for node_id, seq in facts:
                if node_id == engine.config.id:
                    refute_at = max(refute_at, seq)
                else:
                    changes += engine.directory.confirm(node_id, seq)[1]
        engine.notify(changes)
        if refute_at >= 0:
            self.refute(refute_at)
        if body.get("reply") is True:
            self.send_sync(origin, reply=False)
