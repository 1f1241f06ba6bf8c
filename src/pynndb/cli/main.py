"""The `pynndb` command: run a node, inspect and configure a mesh, compare databases, run the demo.

Each command is a thin call into the library (`Controller`, `Plugin`, `ReplicationService`).
"""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape

from pynndb.cli import render
from pynndb.errors import PyNNDBError

console = Console()
DEFAULT_NODE = "tcp://127.0.0.1:7004"
CONNECT_RETRY = 2.0  # seconds between attempts to link to a --connect peer that did not answer at start


# A node process keeps the memory it frees for reuse (glibc's malloc): a journal entry it publishes or a snapshot
# chunk it receives is a buffer of up to a few MiB, freed a moment later. By default glibc gives such memory back
# (munmap, or madvise in a thread's arena) and the next one faults every page in again: a quarter of a source
# node's CPU during a sustained ingest (perf). Kept: buffers up to MMAP_THRESHOLD come from the heap, and up to
# TRIM_THRESHOLD of free memory stays with the process.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
TRIM_THRESHOLD = 64 << 20
MMAP_THRESHOLD = 4 << 20


def _keep_freed_memory() -> bool:
    """Tune glibc's malloc for a node process (see above); False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def _ports(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter("ports must be three integers like 7000,7002,7004") from None
    if len(values) != 3 or not all(0 < port < 65536 for port in values):
        raise click.BadParameter("ports must be three integers like 7000,7002,7004")
    return values


def _plugin(node: str, keys: str | None, server_key: str | None) -> Any:
    from pynndb.mesh.plugin import Plugin

    plugin = Plugin(node, keys=keys, server_key=server_key).connect()
    try:
        return plugin.check(timeout=1.0)
    except PyNNDBError:
        plugin.close()
        raise


@click.group()
@click.version_option(package_name="pynndb")
def main() -> None:
    """pynndb: an embedded document database on LMDB with mesh replication over ZeroMQ."""


@main.command()
@click.option("--label", required=True, help="The node's human name (unique in the mesh).")
@click.option("--ports", required=True, help="P1,P2,P3: discovery, links, commands (Plugins use P3).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--connect", "connect_to", multiple=True, help="tcp://HOST:P1 of a node to link to (repeatable).")
@click.option("--db", "databases", multiple=True, type=click.Path(), help="Database directory to serve (repeatable).")
@click.option("--keys", type=click.Path(), help="This node's .key_secret file (CurveZMQ).")
@click.option("--allow", type=click.Path(), help="Directory of allowed public .key files.")
@click.option(
    "--heartbeat",
    default=1.0,
    show_default=True,
    help="Membership period in seconds: a node probes its links each period; a silent node is suspected, then gone.",
)
@click.option("--metrics", "metrics_port", type=click.IntRange(0, 65535), help="Serve Prometheus metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address the metrics server binds.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def node(
    label: str,
    ports: str,
    host: str,
    connect_to: tuple[str, ...],
    databases: tuple[str, ...],
    keys: str | None,
    allow: str | None,
    heartbeat: float,
    metrics_port: int | None,
    metrics_host: str,
    verbose: bool,
) -> None:
    """Run a node in the foreground until SIGINT or SIGTERM.

    Databases given with --db are served as sources (when they keep a journal) and every replication recorded
    in them resumes from its high-water mark.
    """
    from pynndb.mesh.controller import Controller

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"%(asctime)s {label} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    p1, p2, p3 = _ports(ports)
    _keep_freed_memory()
    controller = Controller(p1, p2, p3, label=label, host=host, keys=keys, allow=allow, heartbeat=heartbeat)
    controller.start()
    metrics = None
    if metrics_port is not None:
        from pynndb.mesh.metrics import serve

        try:
            metrics = serve(controller, metrics_port, metrics_host)
        except OSError as error:
            controller.stop()
            raise click.ClickException(f"cannot serve metrics on {metrics_host}:{metrics_port}: {error}") from None
        logging.getLogger("pynndb.node").info("metrics on http://%s:%d/metrics", metrics_host, metrics.port)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    try:
        for path in databases:
            assert controller.replication is not None
            info = controller.replication.attach(path)
            logging.getLogger("pynndb.node").info("serving %s (%s)", path, info["uuid"])
        unlinked = []
        for address in connect_to:
            try:
                controller.connect(address, timeout=10.0)
            except PyNNDBError as error:
                logging.getLogger("pynndb.node").warning("could not link to %s yet (will retry): %s", address, error)
                unlinked.append(address)
        print(f"READY {controller.id} {label}", flush=True)
        if unlinked:
            retry = threading.Thread(
                target=_keep_connecting, args=(controller, unlinked, done), name=f"pynndb-{label}-connect", daemon=True
            )
            retry.start()
        done.wait()
    finally:
        if metrics is not None:
            metrics.stop()
        controller.stop()


def _keep_connecting(controller: Any, addresses: list[str], done: threading.Event) -> None:
    """Retry the --connect peers that did not answer at start (frozen, restarting) until each links or the node
    stops: a node restarted while a peer was briefly away must not stay cut off from it for ever."""
    waiting = list(addresses)
    while waiting and not done.wait(CONNECT_RETRY):
        for address in list(waiting):
            try:
                controller.connect(address, timeout=CONNECT_RETRY)
            except PyNNDBError:
                continue
            waiting.remove(address)
            logging.getLogger("pynndb.node").info("linked to %s", address)


@contextmanager
def _session(node: str, keys: str | None, server_key: str | None) -> Iterator[Any]:
    """A connected Plugin for one command, closed afterwards; a mesh error ends the command with its message."""
    try:
        plugin = _plugin(node, keys, server_key)
    except PyNNDBError as error:
        _fail(error)
    try:
        yield plugin
    except PyNNDBError as error:
        _fail(error)
    finally:
        plugin.close()


def _client_options(function: Any) -> Any:
    function = click.option("--node", default=DEFAULT_NODE, show_default=True, help="Command port tcp://HOST:P3.")(
        function
    )
    function = click.option("--keys", type=click.Path(), help="Client .key_secret file (secure meshes).")(function)
    function = click.option("--server-key", type=click.Path(), help="The node's public .key file.")(function)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(function)


def _fail(error: PyNNDBError) -> NoReturn:
    console.print(f"[bold red]error[/] ({getattr(error, 'code', 'error')}) {escape(str(error))}")
    sys.exit(1)


@main.command()
@click.option("--target", help="Node id or label (default: the node connected to).")
@click.option("--all", "every", is_flag=True, help="Every live node of the mesh.")
@click.option("--watch", type=float, help="Refresh the replicas table every N seconds (Ctrl-C ends).")
@_client_options
def status(
    target: str | None,
    every: bool,
    watch: float | None,
    node: str,
    keys: str | None,
    server_key: str | None,
    as_json: bool,
) -> None:
    """Show node health, links and, per database, sequence, journal range and replicas (lag, state, a progress
    bar while a snapshot syncs)."""
    if watch:
        _watch_status(node, keys, server_key, target, every, watch)
        return
    with _session(node, keys, server_key) as plugin:
        if every:
            nodes = plugin.call("NODES", timeout=10.0)["nodes"]
            targets = [node_id for node_id, entry in nodes.items() if entry.get("alive", True)]
        else:
            targets = [target] if target else [None]
        results = [plugin.call("STATUS", target=each, timeout=10.0) for each in targets]
    if as_json:
        click.echo(json.dumps(results if every else results[0], indent=2, default=str))
        return
    for result in results:
        render.status(console, result)


def _watch_status(
    node: str, keys: str | None, server_key: str | None, target: str | None, every: bool, period: float
) -> None:
    from rich.live import Live

    with _session(node, keys, server_key) as plugin, Live(console=console, refresh_per_second=4) as live:
        try:
            while True:
                databases: dict[str, Any] = {}
                if every:
                    nodes = plugin.call("NODES")["nodes"]
                    targets = [node_id for node_id, entry in nodes.items() if entry.get("alive", True)]
                else:
                    targets = [target]
                for each in targets:
                    try:
                        databases.update(plugin.call("STATUS", target=each, timeout=2.0)["databases"])
                    except PyNNDBError:
                        continue
                live.update(render.replicas_table(databases))
                threading.Event().wait(period)
        except KeyboardInterrupt:
            pass


@main.command()
@click.argument("command")
@click.argument("params", required=False, default="{}")
@click.option("--target", help="Node id or label (default: the node connected to).")
@click.option("--timeout", default=10.0, show_default=True)
@_client_options
def call(
    command: str,
    params: str,
    target: str | None,
    timeout: float,
    node: str,
    keys: str | None,
    server_key: str | None,
    as_json: bool,
) -> None:
    """Run COMMAND with PARAMS (a JSON object) on a node of the mesh."""
    try:
        parsed = json.loads(params)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"PARAMS is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("PARAMS must be a JSON object")
    with _session(node, keys, server_key) as plugin:
        result = plugin.call(command, parsed, target=target, timeout=timeout)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        render.mapping(console, command.upper(), result)


@main.command()
@click.argument("uuid_a")
@click.argument("uuid_b")
@click.option("--table", "tables", multiple=True, help="Compare only this table (repeatable; default: every table).")
@_client_options
def diff(
    uuid_a: str,
    uuid_b: str,
    tables: tuple[str, ...],
    node: str,
    keys: str | None,
    server_key: str | None,
    as_json: bool,
) -> None:
    """Compare two databases anywhere in the mesh; exit status 0 when identical, 2 when they differ."""
    with _session(node, keys, server_key) as plugin:
        report = plugin.diff([uuid_a, uuid_b], tables=list(tables) or None)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    elif report:
        render.mapping(console, "differences", report)
    else:
        console.print("[green]identical[/] (diff == {})")
    sys.exit(2 if report else 0)


@main.command()
@click.argument("directory", type=click.Path())
@click.argument("name")
def keys(directory: str, name: str) -> None:
    """Create a CurveZMQ key pair NAME.key / NAME.key_secret in DIRECTORY (share only the .key)."""
    from pynndb.mesh.security import create_keys

    public, secret = create_keys(directory, name)
    console.print(f"public key: {public}\nsecret key: {secret} (mode 0600; keep it private)")


@main.command()
@click.option("--dir", "directory", type=click.Path(), help="Where to put the demo databases (default: a temp dir).")
@click.option("--seconds", default=6.0, show_default=True, help="How long the application writes in each phase.")
@click.option("--rate", default=2000, show_default=True, help="Documents per second the application writes.")
@click.option("--keep", is_flag=True, help="Keep the databases afterwards.")
def demo(directory: str | None, seconds: float, rate: int, keep: bool) -> None:
    """Run a three-node mesh on loopback: one-way, two-way and many-to-one replication under load, a cut link,
    a killed and restarted node, and a final diff of every pair."""
    from pynndb.cli.demo import run_demo

    sys.exit(run_demo(console, directory, seconds, rate, keep))


from pynndb.cli import changes as _changes  # noqa: E402  (the commands register on `main` defined above)
from pynndb.cli import data as _data  # noqa: E402
from pynndb.cli import ops as _ops  # noqa: E402

for _command in _data.COMMANDS + _ops.COMMANDS:
    main.add_command(_command)
main.add_command(_changes.changes)

from pynndb.cli import verbs as _verbs  # noqa: E402  (verbs made from the command specs)

for _command in _verbs.commands(set(main.commands)):
    main.add_command(_command)


if __name__ == "__main__":
    main()
