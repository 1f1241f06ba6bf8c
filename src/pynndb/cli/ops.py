"""Operator commands: health (a probe for scripts, systemd and containers), backup, restore and verify.

Backup is LMDB's compacting copy taken in one read transaction, with a manifest (UUID, sequence, digest) that
restore and verify check the copy against.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from pynndb.cli.data import emit, fail, open_database
from pynndb.core import backup as backups
from pynndb.core import registry
from pynndb.core.verify import verify as verify_database
from pynndb.errors import PyNNDBError
from pynndb.replication.digest import digest

DEFAULT_NODE = "tcp://127.0.0.1:7004"
HEALTHY_STATES = ("live", "syncing")  # 'syncing' is normal between two entries under load; lag bounds it


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    progress = Progress(
        TextColumn(label),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
    )
    with progress:
        task = progress.add_task(label, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


# --- health ----------------------------------------------------------------------------------------------------
def problems(status: dict[str, Any], max_lag: float) -> list[str]:
    """Why a node's STATUS is not healthy: each replica must be live (or syncing) within `max_lag` seconds."""
    found: list[str] = []
    if status.get("health", "ok") != "ok":
        found.append(f"node health is {status.get('health')!r}")
    for path, info in (status.get("databases") or {}).items():
        for replica in info.get("replicas", []):
            name = f"{path} <- {replica['source']}"
            if replica.get("paused"):
                found.append(f"{name}: paused")
            elif replica["state"] not in HEALTHY_STATES:
                reason = f" ({replica['reason']})" if replica.get("reason") else ""
                found.append(f"{name}: {replica['state']}{reason}")
            elif replica["lag_seconds"] > max_lag:
                found.append(
                    f"{name}: {replica['lag_seconds']:.1f} s behind (> {max_lag:g} s, {replica['lag_entries']} entries)"
                )
    return found


@click.command()
@click.option("--node", default=DEFAULT_NODE, show_default=True, help="Command port tcp://HOST:P3.")
@click.option("--max-lag", default=30.0, show_default=True, help="Seconds a replica may be behind its source.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the node.")
@click.option("--keys", type=click.Path(), help="Client .key_secret file (secure meshes).")
@click.option("--server-key", type=click.Path(), help="The node's public .key file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def health(node: str, max_lag: float, timeout: float, keys: str | None, server_key: str | None, as_json: bool) -> None:
    """Exit 0 when the node answers and every replica it holds is live within --max-lag seconds; otherwise print
    the reasons and exit 1 (2 when the node does not answer)."""
    from pynndb.mesh.plugin import Plugin

    try:
        plugin = Plugin(node, keys=keys, server_key=server_key).connect()
        try:
            status = plugin.call("STATUS", {}, timeout=timeout)
        finally:
            plugin.close()
    except PyNNDBError as error:
        if as_json:
            click.echo(json.dumps({"healthy": False, "problems": [f"node {node} does not answer: {error}"]}))
            sys.exit(2)
        fail(f"node {node} does not answer: {error}", code=2)
        return
    found = problems(status, max_lag)
    replicas = sum(len(info.get("replicas", [])) for info in (status.get("databases") or {}).values())
    if as_json:
        click.echo(
            json.dumps({"healthy": not found, "node": status.get("label"), "replicas": replicas, "problems": found})
        )
    elif found:
        console = Console(stderr=True)
        console.print(f"[bold red]unhealthy[/] node {escape(str(status.get('label')))}")
        for problem in found:
            console.print(f"  {escape(problem)}")
    else:
        click.echo(f"healthy: node {status.get('label')}, {replicas} replicas live within {max_lag:g} s")
    sys.exit(1 if found else 0)


# --- backup, restore, verify -----------------------------------------------------------------------------------
def backup_database(path: str, dest: str, progress: Any = None) -> dict[str, Any]:
    """Copy the database at `path` (live or not) to `dest` and write its manifest; returns the manifest."""
    created = not os.path.exists(dest)
    with open_database(path) as db:
        try:
            facts = backups.copy(db, dest, progress)
        except PyNNDBError:
            if created:
                backups.remove(dest)
            raise
    copy = registry.open_database(dest, dest, {"readonly": True})
    try:
        content = digest(copy)
    finally:
        registry.release(copy)
    manifest = dict(facts, digest=content, source_path=os.path.abspath(path), created=time.time())
    backups.write_manifest(dest, manifest)
    return manifest


def backup_digest(backup: str) -> str:
    """The content digest of a backup's copy, computed now."""
    copy = registry.open_database(backup, backup, {"readonly": True})
    try:
        return digest(copy)
    finally:
        registry.release(copy)


@click.command()
@click.argument("path", type=click.Path())
@click.argument("dest", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def backup(path: str, dest: str, as_json: bool) -> None:
    """Copy the database at PATH to the new directory DEST while it stays in use: a consistent, compacted copy
    with manifest.json (UUID, sequence, digest)."""
    try:
        with _progress("backup") as progress:
            manifest = backup_database(path, dest, progress)
    except PyNNDBError as error:
        fail(str(error))
        return
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
    else:
        click.echo(
            f"backed up {path} to {dest}: uuid {manifest['uuid']}, sequence {manifest['sequence']}, "
            f"digest {manifest['digest']}, {manifest['bytes']:,} bytes"
        )


@click.command()
@click.argument("backup_dir", metavar="BACKUP", type=click.Path())
@click.argument("path", type=click.Path())
@click.option("--same-uuid", is_flag=True, help="Keep the backed-up UUID (only when the original is gone for good).")
@click.option("--force", is_flag=True, help="Replace a database already at PATH (never one in use).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def restore(backup_dir: str, path: str, same_uuid: bool, force: bool, as_json: bool) -> None:
    """Restore BACKUP to PATH. The copy is checked against its manifest first; a database in use is never
    replaced. The restored database gets a new UUID unless --same-uuid, so replicas of the original do not take it
    for the original; replication marks come back as backed up, so a restored replica resumes from them."""
    try:
        manifest = backups.read_manifest(backup_dir)
        found = backup_digest(backup_dir)
        if found != manifest.get("digest"):
            fail(f"{backup_dir} does not match its manifest (digest {found}, manifest {manifest.get('digest')})")
        with _progress("restore") as progress:
            result = backups.restore(backup_dir, path, same_uuid=same_uuid, force=force, progress=progress)
    except PyNNDBError as error:
        fail(str(error))
        return
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        kept = "kept" if same_uuid else f"new (was {result['backup_uuid']})"
        click.echo(
            f"restored {backup_dir} to {result['path']}: sequence {result['sequence']}, uuid {result['uuid']} {kept}"
        )


@click.command()
@click.argument("path", type=click.Path())
@click.option("--table", "tables", multiple=True, help="Only this table (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="NDJSON problems (the default when piped).")
def verify(path: str, tables: tuple[str, ...], as_json: bool) -> None:
    """Check every index of the database at PATH against its table (and a backup against its manifest); exit 1
    when a problem is found."""
    with open_database(path) as db:
        missing = [name for name in tables if name not in db.tables()]
        if missing:
            fail(f"no table {missing[0]!r} in {path}")
        try:
            counts, found = verify_database(db, list(tables) or None)
        except PyNNDBError as error:
            fail(str(error))
            return
        rows = [problem.to_json() for problem in found]
    if os.path.isfile(os.path.join(path, backups.MANIFEST)):
        expected = backups.read_manifest(path).get("digest")
        actual = backup_digest(path)
        if actual != expected:
            rows.append({"table": "", "index": "", "problem": "digest_mismatch", "key": "", "detail": actual})
    failing = [row for row in rows if row["problem"] != "unchecked"]
    if rows:
        emit(rows, as_json, f"problems in {path}")
    if not as_json and sys.stdout.isatty():
        summary = RichTable(title=f"verified {path}")
        for column in ("table", "records", "indexes"):
            summary.add_column(column)
        for name, figures in counts.items():
            summary.add_row(
                name, str(figures["records"]), ", ".join(f"{k} {v}" for k, v in figures.items() if k != "records")
            )
        Console().print(summary)
    message = f"{len(failing)} problems in {len(counts)} tables" if failing else f"ok: {len(counts)} tables verified"
    Console(stderr=True).print(message)
    sys.exit(1 if failing else 0)


COMMANDS = [health, backup, restore, verify]
