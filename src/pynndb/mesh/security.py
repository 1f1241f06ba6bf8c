"""CurveZMQ keys and the mesh allow-list: create and load key files, and run the ZAP authenticator.

A node with keys encrypts its link and command ports and admits only clients whose public key is on its
allow-list (a directory of ``.key`` files). See docs/mesh.md for the threat model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pynndb.errors import InvalidKeys

log = logging.getLogger("pynndb.mesh.security")

PathLike = Union[str, "os.PathLike[str]"]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
ZAP_DOMAIN = "pynndb"


@dataclass(frozen=True)
class KeyPair:
    """A CurveZMQ key pair in Z85 text form; ``secret`` is None for a public-only key."""

    public: bytes
    secret: bytes | None = None


def create_keys(directory: PathLike, name: str) -> tuple[str, str]:
    """Create ``name.key`` (public) and ``name.key_secret`` (secret, mode 0600) in ``directory``."""
    os.makedirs(directory, exist_ok=True)
    public_path, secret_path = zmq.auth.create_certificates(directory, name)
    os.chmod(secret_path, 0o600)
    return public_path, secret_path


def load_keys(path: PathLike) -> KeyPair:
    """Load a key pair from a ``.key_secret`` file (or only the public key from a ``.key`` file)."""
    public, secret = zmq.auth.load_certificate(path)
    return KeyPair(public, secret)


def load_public_key(path: PathLike) -> bytes:
    """Load the Z85 public key from a ``.key`` or ``.key_secret`` file."""
    return zmq.auth.load_certificate(path)[0]


def load_allow_list(source: PathLike | Iterable[bytes | str]) -> frozenset[bytes]:
    """Read the allowed public keys from a directory of ``.key`` files, or take them from an iterable."""
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_dir():
            raise InvalidKeys(f"allow-list directory not found: {source}")
        return frozenset(zmq.auth.load_certificates(source))
    return frozenset(key.encode() if isinstance(key, str) else bytes(key) for key in source)


def as_key_pair(keys: KeyPair | PathLike | None) -> KeyPair | None:
    """Accept a KeyPair or the path of a secret key file."""
    if keys is None or isinstance(keys, KeyPair):
        return keys
    return load_keys(keys)


def as_public_key(key: bytes | str | PathLike | None) -> bytes | None:
    """Accept a Z85 key (bytes or 40-char str) or the path of a key file."""
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str) and len(key) == 40 and not os.path.exists(key):
        return key.encode()
    return load_public_key(key)


class _AllowList:
    """ZAP credentials provider: a fixed set of Z85 public keys."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = key in self.keys
        if not allowed:
            log.warning("refused CURVE client key %s", key.decode(errors="replace"))
        return allowed


def start_authenticator(context: zmq.Context, allowed: frozenset[bytes]) -> ThreadAuthenticator:
    """Start a ZAP handler on ``context`` admitting only the allowed keys (one handler per context)."""
    authenticator = ThreadAuthenticator(context, log=logging.getLogger("pynndb.mesh.zap"))
    authenticator.start()
    authenticator.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=_AllowList(allowed))
    return authenticator


def make_server(socket: zmq.Socket, keys: KeyPair) -> None:
    """Make a bound socket a CURVE server with this node's keys."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True
    # An explicit ZAP domain makes libzmq consult the authenticator for every handshake.
    socket.zap_domain = ZAP_DOMAIN.encode()


def make_client(socket: zmq.Socket, keys: KeyPair, server_key: bytes) -> None:
    """Make a connecting socket a CURVE client that only accepts the server holding ``server_key``."""
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = server_key


def warn_if_exposed(host: str, keys: KeyPair | None) -> None:
    """Log a loud warning when a node without keys binds anything other than loopback."""
    if keys is None and host not in LOOPBACK_HOSTS:
        log.warning(
            "SECURITY: pynndb node bound to %s WITHOUT CurveZMQ keys: links and commands are plaintext and "
            "unauthenticated; anyone who can reach this host can read the data and run commands",
            host,
        )
