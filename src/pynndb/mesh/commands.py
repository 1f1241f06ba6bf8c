"""The command runner and the built-in commands' handlers (their specs: `pynndb.mesh.command_specs.mesh`).

A handler takes ``(params, context)``, params already validated against the command's spec, and returns a result
dict; errors become replies with a stable code.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pynndb.errors import CommandError, CommandTimeout, PyNNDBError
from pynndb.mesh.command_specs import SPECS, Spec

if TYPE_CHECKING:
    from pynndb.mesh.controller import Controller

log = logging.getLogger("pynndb.mesh.commands")

Handler = Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]

# Stable error codes sent in replies (PyNNDBError subclasses add their own ``code``).
UNKNOWN_COMMAND = "unknown_command"
BAD_PARAMS = "bad_params"
UNKNOWN_TARGET = "unknown_target"
NODE_GONE = "node_gone"
NOT_FOUND = "not_found"
TIMEOUT = "timeout"
INTERNAL = "internal_error"
BUSY = "busy"
SHUTTING_DOWN = "shutting_down"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Command:
    """A registered command; ``inline`` ones are fast, non-blocking built-ins run on the socket loop."""

    name: str
    handler: Handler
    help: str
    inline: bool = False


def ok_reply(result: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error_reply(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def run(command: Command | None, name: str, params: Any, context: dict[str, Any]) -> dict[str, Any]:
    """Run a command and turn its outcome (result or exception) into a reply; never raises."""
    if command is None:
        return error_reply(UNKNOWN_COMMAND, f"unknown command {name!r}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return error_reply(BAD_PARAMS, "params must be an object")
    try:
        spec = SPECS.get(command.name)
        if spec is not None:
            params = spec.validate(params)
        result = command.handler(params, context)
    except PyNNDBError as error:
        return error_reply(str(error.code), str(error))
    except (ValueError, TypeError, KeyError) as error:
        return error_reply(BAD_PARAMS, f"{type(error).__name__}: {error}")
    except Exception as error:
        log.exception("command %s failed", name)
        return error_reply(INTERNAL, f"{type(error).__name__}: {error}")
    if result is None:
        result = {}
    if not isinstance(result, dict):
        return error_reply(INTERNAL, f"handler for {name} returned {type(result).__name__}, not a dict")
    return ok_reply(result)


def _node(context: dict[str, Any]) -> Controller:
    return context["node"]


def ping(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """PING: this node's id, label and clock."""
    node = _node(context)
    return {"pong": True, "peer": node.id, "label": node.label, "time": time.time()}


def lookup(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """LOOKUP: the directory entry of a node, its id under 'peer'."""
    name = params["name"]
    entry = _node(context).lookup(name)
    if entry is None:
        raise CommandError(f"no node named {name!r}", NOT_FOUND)
    return entry


def nodes(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """NODES: the whole directory as this node sees it, keyed by node id."""
    return {"nodes": _node(context).directory()}


def status(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """STATUS: node health, links, message counters, dropped and malformed counts."""
    return _node(context).status()


def connect(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """CONNECT: link this node to another one."""
    peer = _node(context).connect(params["address"], timeout=params["timeout"])
    return {"peer": peer}


def disconnect(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """DISCONNECT: remove a link."""
    address, peer = params.get("address"), params.get("peer")  # exactly one of them (the spec checks)
    removed = _node(context).disconnect(str(address if address is not None else peer))
    if not removed:
        raise CommandError(f"no link to {address or peer!r}", NOT_FOUND)
    return {"disconnected": True}


def help_command(params: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """HELP: the help text of one command, or of every command."""
    name = params.get("command")
    texts = {
        command: help_text(SPECS[command]) if command in SPECS else text
        for command, text in _node(context).commands_help().items()
    }
    if name is not None:
        if name.upper() not in texts:
            raise CommandError(f"unknown command {name!r}", UNKNOWN_COMMAND)
        return {"commands": {name.upper(): texts[name.upper()]}}
    return {"commands": texts}


def help_text(spec: Spec) -> str:
    """``NAME {'param', 'optional'?}: help`` for a command with a spec."""
    names = ", ".join(repr(param.name) + ("" if param.required else "?") for param in spec.params)
    return f"{spec.name}{' {' + names + '}' if names else ''}: {spec.help}"


def builtins() -> list[Command]:
    """The built-in commands, registered through the same path as service commands."""
    table: list[tuple[str, Handler, bool]] = [
        ("PING", ping, True),
        ("LOOKUP", lookup, True),
        ("NODES", nodes, True),
        ("STATUS", status, True),
        ("HELP", help_command, True),
        # These wait for the loop (a handshake), so they must not run on it.
        ("CONNECT", connect, False),
        ("DISCONNECT", disconnect, False),
    ]
    return [Command(name, handler, inspect.getdoc(handler) or "", inline) for name, handler, inline in table]


def unwrap(reply: dict[str, Any]) -> dict[str, Any]:
    """Return the result of a reply, or raise CommandTimeout / CommandError(message, code)."""
    if reply.get("ok") is True and isinstance(reply.get("result"), dict):
        return reply["result"]
    error = reply.get("error")
    if not isinstance(error, dict):
        raise CommandError("malformed reply", "malformed_reply")
    code = str(error.get("code", "error"))
    message = str(error.get("message", ""))
    if code == TIMEOUT:
        raise CommandTimeout(message)
    raise CommandError(message, code)
