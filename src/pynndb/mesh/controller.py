"""``Controller``: one mesh node. Binds three ports, links to other nodes, routes, and serves commands.

port1 is the front door (plaintext discovery, the node's address), port2 carries links to other nodes, port3 is
the command port for ``Plugin`` clients. This class is the thread-safe facade over the socket loop: it drives its
engine only through `local.NodeLoop`, and the engine sees the node only as `NodeConfig` and `Endpoints`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any

import zmq

from pynndb.errors import CommandTimeout, InvalidArgument, InvalidArgumentType, InvalidKeys, MeshError
from pynndb.mesh import commands, security, wire
from pynndb.mesh.commands import Command
from pynndb.mesh.engine import Engine
from pynndb.mesh.links import discover, split_address
from pynndb.mesh.local import Endpoints, NodeConfig, NodeLoop
from pynndb.mesh.loop import LoopTask
from pynndb.mesh.security import KeyPair
from pynndb.mesh.services import Service, ServiceFactory, default_services
from pynndb.mesh.workers import ReplyFuture

if TYPE_CHECKING:
    from pynndb.mesh.replicator import ReplicationService

log = logging.getLogger("pynndb.mesh")

DEFAULT_MAX_MESSAGE_SIZE = 64 << 20
_running: weakref.WeakSet[Controller] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Nodes left running at interpreter exit leave the mesh cleanly (a farewell, sockets closed, no hang)."""
    for node in list(_running):
        try:
            node.stop()
        except Exception:  # at exit: never let one node keep the others from stopping
            log.exception("stopping %s at exit failed", node.label)


class Controller:
    """A mesh node; ``start()`` binds its ports, starts its services and runs its loop, ``stop()`` leaves the mesh
    cleanly. ``services`` maps a name to a factory (default: `services.default_services`, i.e. replication)."""

    def __init__(
        self,
        port1: int,
        port2: int,
        port3: int,
        label: str = "nodea",
        host: str = "127.0.0.1",
        keys: KeyPair | str | PathLike[str] | None = None,
        allow: str | PathLike[str] | list[bytes] | None = None,
        heartbeat: float = 1.0,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        command_workers: int = 4,
        services: Mapping[str, ServiceFactory] | None = None,
    ) -> None:
        if not isinstance(label, str) or not 0 < len(label) <= 256:
            raise InvalidArgument("label must be a non-empty string of at most 256 characters")
        if not heartbeat > 0:
            raise InvalidArgument("heartbeat must be positive")
        self.port1, self.port2, self.port3 = port1, port2, port3
        self.label = label
        self.host = host
        self.keys = security.as_key_pair(keys)
        if self.keys is not None and self.keys.secret is None:
            raise InvalidKeys("keys must include the secret key (load the .key_secret file)")
        self.allowed: frozenset[bytes] = security.load_allow_list(allow) if allow is not None else frozenset()
        if self.keys is not None:
            # A node always trusts its own key: in-process Plugins and nodes sharing a mesh key use it.
            self.allowed |= {self.keys.public}
        self.heartbeat = float(heartbeat)
        self.max_message_size = max_message_size
        self.command_workers = max(1, command_workers)
        self.id = uuid.uuid4().hex
        self.id_bytes = uuid.UUID(hex=self.id).bytes
        self._endpoints = Endpoints(node=self, commands={command.name: command for command in commands.builtins()})
        self._factories = dict(default_services() if services is None else services)
        self._services: dict[str, Service] = {}
        self._engine: NodeLoop | None = None
        self._context: zmq.Context | None = None
        self._authenticator: Any = None
        self._lifecycle = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """The node's address (its front door, port1), as given to ``connect``."""
        return f"tcp://{self.host}:{self.port1}"

    @property
    def public_key(self) -> bytes | None:
        return self.keys.public if self.keys else None

    @property
    def running(self) -> bool:
        return self._engine is not None

    def service(self, name: str) -> Service | None:
        """A running service of this node by name (None when stopped or not plugged in)."""
        return self._services.get(name)

    @property
    def replication(self) -> ReplicationService | None:
        """The replication service, when this node runs it."""
        return self._services.get("replication")  # type: ignore[return-value]

    def start(self) -> Controller:
        """Bind the three ports, start the services and the loop; returns self."""
        with self._lifecycle:
            if self._engine is not None:
                return self
            if self._context is not None:
                # A restart is a new node as far as the mesh is concerned.
                self.id = uuid.uuid4().hex
                self.id_bytes = uuid.UUID(hex=self.id).bytes
            security.warn_if_exposed(self.host, self.keys)
            # One context per node: a ZAP authenticator is per context, and nodes must not share one.
            context = zmq.Context()
            self._context = context
            if self.keys is not None:
                self._authenticator = security.start_authenticator(context, self.allowed)
            config = NodeConfig(
                id=self.id,
                id_bytes=self.id_bytes,
                label=self.label,
                host=self.host,
                port1=self.port1,
                port2=self.port2,
                port3=self.port3,
                keys=self.keys,
                heartbeat=self.heartbeat,
                max_message_size=self.max_message_size,
                command_workers=self.command_workers,
            )
            engine = Engine(config, self._endpoints)
            try:
                engine.bind(context)
            except zmq.ZMQError as error:
                self._shutdown_context()
                raise MeshError(f"cannot bind {self.label}: {error}") from error
            self._engine = engine
            # Services register their commands before the loop starts: the first command answered can be theirs.
            for name, factory in self._factories.items():
                self._services[name] = factory(self)
            engine.start()
            _running.add(self)
        return self

    def stop(self) -> None:
        """Leave the mesh and release every socket and thread; calling it again does nothing."""
        with self._lifecycle:
            engine = self._engine
            if engine is None:
                return
            _running.discard(self)
            services, self._services = self._services, {}
            for service in reversed(list(services.values())):
                service.stop()  # while the engine runs: a service takes its tasks off the loop
            self._engine = None
            engine.stop()
            self._shutdown_context()

    def _shutdown_context(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if self._context is not None:
            self._context.term()

    def __enter__(self) -> Controller:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Controller {self.label} {self.id[:8]} {self.address}>"

    def _running_engine(self) -> NodeLoop:
        engine = self._engine
        if engine is None:
            raise MeshError(f"node {self.label} is not running")
        return engine

    # --- links --------------------------------------------------------------------------------------------
    def connect(self, peer: Controller | str, timeout: float = 5.0) -> str:
        """Link to another node (a Controller or its 'tcp://host:port1'); waits for the handshake, returns its id."""
        engine = self._running_engine()
        address = peer.address if isinstance(peer, Controller) else peer
        host, _ = split_address(address)
        assert self._context is not None
        info = discover(self._context, address, timeout)
        if info.get("version") != wire.VERSION:
            raise MeshError(f"{address} speaks protocol version {info.get('version')}, not {wire.VERSION}")
        if info["id"] == self.id:
            raise MeshError("a node cannot link to itself")
        server_key = info.get("public_key")
        if (server_key is None) != (self.keys is None):
            raise MeshError(f"security mismatch with {address}: both nodes need keys, or neither")
        raw_key = server_key.encode() if server_key else None
        if raw_key is not None and raw_key not in self.allowed:
            raise MeshError(f"{address} presents a public key that is not on the allow-list")
        return self._open_link(f"tcp://{host}:{info['link_port']}", address, raw_key, timeout, engine)

    def _open_link(
        self, link_address: str, address: str, server_key: bytes | None, timeout: float, engine: NodeLoop
    ) -> str:
        """Open the link socket and wait for WELCOME (split out so tests can put a tap in between)."""
        assert self._context is not None
        return engine.link(self._context, link_address, address, server_key, timeout)

    def disconnect(self, peer: Controller | str) -> bool:
        """Remove the link(s) to a node (Controller, address, id or label); False if there was none."""
        return self._running_engine().unlink(peer.id if isinstance(peer, Controller) else peer)

    def links(self) -> list[dict[str, Any]]:
        """The current links: peer id, label, address, direction, up."""
        return self._running_engine().links_listing()

    # --- service API --------------------------------------------------------------------------------------
    def register_command(
        self, name: str, handler: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]], help: str | None = None
    ) -> None:
        """Add (or replace) a command; ``handler(params, context)`` runs on a worker thread, never the loop."""
        if not isinstance(name, str) or not name or len(name) > 64:
            raise InvalidArgument("command name must be a non-empty string of at most 64 characters")
        text = help if help is not None else (handler.__doc__ or "").strip()
        self._endpoints.commands[name.upper()] = Command(name.upper(), handler, text)

    def command(self, name: str) -> Command | None:
        return self._endpoints.commands.get(name)

    def commands_help(self) -> dict[str, str]:
        return {name: command.help for name, command in sorted(self._endpoints.commands.items())}

    def publish(self, topic: str, payload: bytes) -> None:
        """Send a payload to every node in the mesh that subscribed to ``topic`` (not to this node)."""
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise InvalidArgumentType("payload must be bytes")
        if len(topic.encode()) > wire.MAX_TOPIC_BYTES:
            raise InvalidArgument("topic too long")
        self._running_engine().publish(topic, bytes(payload))

    def subscribe(self, topic: str, callback: Callable[[str, bytes, str], None], inline: bool = False) -> None:
        """Receive ``callback(topic, payload, origin)`` for the topic; the wish spreads in heartbeats.

        ``inline=True`` runs the callback on the socket loop itself (one thread hand-off less): it must only
        queue work and return, never block."""
        if len(topic.encode()) > wire.MAX_TOPIC_BYTES:
            raise InvalidArgument("topic too long")
        self._change_entry(lambda: self._endpoints.topics.__setitem__(topic, (callback, inline)))

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving a topic."""
        self._change_entry(lambda: self._endpoints.topics.pop(topic, None))

    def set_service_info(self, key: str, value: Any) -> None:
        """Publish ``value`` (JSON-able) under ``services[key]`` of this node's directory entry."""
        wire.encode_control(0, value)  # fail here, in the caller, if it is not JSON-able
        self._change_entry(lambda: self._endpoints.service_info.__setitem__(key, value))

    def _change_entry(self, change: Callable[[], Any]) -> None:
        engine = self._engine
        if engine is None:
            change()
        else:
            engine.change_entry(change)

    def send(self, target: str, kind: str, payload: bytes) -> None:
        """Route a payload of a named kind to one node (id or label); it arrives through its ``on_message``."""
        engine = self._running_engine()
        if len(kind.encode()) > wire.MAX_KIND_BYTES:
            raise InvalidArgument("kind too long")
        entry = self.lookup(target)
        if entry is None:
            raise MeshError(f"unknown target {target!r}")
        engine.send(entry["peer"], kind, bytes(payload))

    def turn_marker(self) -> threading.Event:
        """An Event set once the node's loop has run what was posted to it before (``send`` from this thread
        included): a thread that streams many frames waits on the previous one before its next send, so the loop,
        which carries every other message of the node, gets the GIL at least once a frame (set at once when the node
        is not running)."""
        engine = self._engine
        if engine is None:
            marker = threading.Event()
            marker.set()
            return marker
        return engine.turn_marker()

    def on_message(self, kind: str, callback: Callable[[bytes, str], None], inline: bool = False) -> None:
        """Receive targeted messages of ``kind`` as ``callback(payload, origin)`` on the callback thread (or, with
        ``inline=True``, on the socket loop: the callback must only queue work)."""
        self._endpoints.kinds[kind] = (callback, inline)

    def run_task(self, task: LoopTask) -> None:
        """Run a service's work on the node's socket loop (see `loop.LoopTask`): no thread of its own, no hand-off
        between what arrives, the work, and what it publishes."""
        self._running_engine().add_task(task)

    def stop_task(self, task: LoopTask) -> None:
        """Stop running ``task``; when this returns no step of it runs (a stopped node runs none)."""
        engine = self._engine
        if engine is not None:
            engine.remove_task(task)

    def on_peer_change(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(node_id, 'up' | 'down')`` when a node joins, comes back, or is marked gone."""
        self._endpoints.peer_callbacks.append(callback)

    def call(
        self, command: str, params: dict[str, Any] | None = None, target: str | None = None, timeout: float = 5.0
    ) -> dict[str, Any]:
        """Run a command on a node (this one by default) and return its result; same errors as Plugin.call."""
        future = ReplyFuture()
        self._running_engine().request(command, params, target, timeout, future.set)
        reply = future.wait(timeout + 0.5)
        if reply is None:
            raise CommandTimeout(f"{command} got no reply within {timeout}s")
        return commands.unwrap(reply)

    # --- directory ----------------------------------------------------------------------------------------
    def directory(self) -> dict[str, dict[str, Any]]:
        """Every known node by id: label, address, alive, links, services, topics, last_seen."""
        return self._running_engine().directory_snapshot()

    def lookup(self, name: str) -> dict[str, Any] | None:
        """The directory entry of a node by id or label, with its id under 'peer'; None if unknown."""
        return self._running_engine().lookup(name)

    def status(self) -> dict[str, Any]:
        """Health and counters of this node."""
        return self._running_engine().status()
