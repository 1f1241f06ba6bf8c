"""CurveZMQ: an unknown key cannot link or command, a known key can, and nothing travels in plaintext."""

from __future__ import annotations

import selectors
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pynndb.errors import CommandTimeout, MeshError
from pynndb.mesh.controller import Controller
from pynndb.mesh.plugin import Plugin
from pynndb.mesh.security import create_keys, load_allow_list, load_keys, load_public_key
from tests.helpers import wait_until
from tests.mesh.conftest import Mesh, free_port

pytestmark = pytest.mark.timeout(30)
MARKER = b"TOP-SECRET-PAYLOAD-7f3a"


class Tap:
    """A TCP forwarder from a local port to a target port that records every byte it carries."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.captured = bytearray()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        pairs: dict[socket.socket, socket.socket] = {}
        while not self._stop.is_set():
            for key, _ in selector.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    client, _ = self._listener.accept()
                    upstream = socket.create_connection(("127.0.0.1", self.target_port))
                    pairs[client], pairs[upstream] = upstream, client
                    selector.register(client, selectors.EVENT_READ)
                    selector.register(upstream, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    for end in (sock, pairs[sock]):
                        selector.unregister(end)
                        end.close()
                    pairs.pop(pairs.pop(sock))
                    continue
                self.captured += data
                pairs[sock].sendall(data)
        for end in list(pairs):
            end.close()
        self._listener.close()
        selector.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Key pairs a, b, intruder; an allow-list directory with a and b only."""
    allow = tmp_path / "allow"
    allow.mkdir()
    secrets = {}
    for name in ("a", "b", "intruder"):
        public, secret = create_keys(tmp_path / "keys", name)
        secrets[name] = Path(secret)
        if name != "intruder":
            shutil.copy(public, allow)
    secrets["allow"] = allow
    return secrets


@pytest.fixture
def taps() -> Iterator[list[Tap]]:
    opened: list[Tap] = []
    yield opened
    for tap in opened:
        tap.close()


def secure_node(mesh: Mesh, keys: dict[str, Path], name: str) -> Controller:
    return mesh.node(name, keys=keys[name], allow=keys["allow"])


def test_key_files(keys: dict[str, Path]) -> None:
    pair = load_keys(keys["a"])
    assert pair.secret is not None and len(pair.public) == 40
    assert load_public_key(keys["allow"] / "a.key") == pair.public
    assert keys["a"].stat().st_mode & 0o077 == 0
    assert len(load_allow_list(keys["allow"])) == 2


def test_known_keys_link_and_command(mesh: Mesh, keys: dict[str, Path]) -> None:
    a, b = secure_node(mesh, keys, "a"), secure_node(mesh, keys, "b")
    assert a.connect(b) == b.id
    with Plugin(f"tcp://127.0.0.1:{a.port3}", keys=keys["b"], server_key=keys["allow"] / "a.key") as plugin:
        assert plugin.call("PING", target="b")["peer"] == b.id


def test_unknown_key_cannot_link_or_command(mesh: Mesh, keys: dict[str, Path]) -> None:
    a = secure_node(mesh, keys, "a")
    intruder = secure_node(mesh, keys, "intruder")
    with pytest.raises(MeshError):
        intruder.connect(a, timeout=0.5)
    with pytest.raises(MeshError, match="allow-list"):
        a.connect(intruder, timeout=0.5)
    assert a.links() == [] and intruder.id not in a.directory()
    plugin = Plugin(f"tcp://127.0.0.1:{a.port3}", keys=keys["intruder"], server_key=a.public_key)
    mesh.plugins.append(plugin)
    with pytest.raises(CommandTimeout):
        plugin.connect().call("PING", timeout=0.5)
    plaintext = mesh.node("plain")
    with pytest.raises(MeshError, match="security mismatch"):
        plaintext.connect(a, timeout=0.5)


def _exchange_through_taps(mesh: Mesh, taps: list[Tap], a: Controller, b: Controller) -> None:
    link_tap, command_tap = Tap(b.port2), Tap(a.port3)
    taps += [link_tap, command_tap]
    a._open_link(f"tcp://127.0.0.1:{link_tap.port}", b.address, b.public_key, 5.0, a._running_engine())
    got: list[bytes] = []
    b.subscribe("secret", lambda topic, payload, origin: got.append(payload))
    b.register_command("ECHO", lambda params, context: params)
    assert wait_until(lambda: "secret" in a.directory()[b.id]["topics"])
    a.publish("secret", MARKER)
    assert wait_until(lambda: got == [MARKER])
    plugin = mesh.plugin(f"tcp://127.0.0.1:{command_tap.port}", keys=a.keys, server_key=a.public_key)
    assert plugin.call("ECHO", {"text": MARKER.decode()}, target="b") == {"text": MARKER.decode()}


def test_traffic_is_encrypted(mesh: Mesh, keys: dict[str, Path], taps: list[Tap]) -> None:
    a, b = secure_node(mesh, keys, "a"), secure_node(mesh, keys, "b")
    _exchange_through_taps(mesh, taps, a, b)
    assert all(tap.captured for tap in taps)
    assert all(MARKER not in tap.captured for tap in taps)


def test_tap_sees_plaintext_without_keys(mesh: Mesh, taps: list[Tap]) -> None:
    a, b = mesh.node("a"), mesh.node("b")
    _exchange_through_taps(mesh, taps, a, b)
    assert all(MARKER in tap.captured for tap in taps)


def test_non_loopback_without_keys_warns(caplog: pytest.LogCaptureFixture) -> None:
    node = Controller(free_port(), free_port(), free_port(), label="exposed", host="0.0.0.0")
    try:
        node.start()
    finally:
        node.stop()
    assert any("WITHOUT CurveZMQ keys" in record.getMessage() for record in caplog.records)
