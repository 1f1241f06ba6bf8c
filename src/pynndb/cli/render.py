"""Rich rendering of command results: tables for STATUS, a tree for anything else."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.tree import Tree


def mapping(console: Console, title: str, value: Any) -> None:
    """Show a nested result as a tree."""
    tree = Tree(f"[bold]{title}[/]")
    _grow(tree, value)
    console.print(tree)


def _grow(tree: Tree, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                _grow(tree.add(f"[cyan]{key}[/]"), item)
            else:
                tree.add(f"[cyan]{key}[/]: {item!r}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, (dict, list)) and item:
                _grow(tree.add(f"[{index}]"), item)
            else:
                tree.add(f"{item!r}")
    else:
        tree.add(repr(value))


def replicas_table(
    databases: dict[str, Any], title: str = "replicas", rates: dict[tuple[str, str], float] | None = None
) -> Table:
    """One row per replica: target, source, mode (with its table filter), mark, lag, rate, state, resyncs and
    snapshot progress."""
    table = Table(title=title, title_justify="left")
    snapshots = any(replica.get("snapshot_progress") for info in databases.values() for replica in info["replicas"])
    columns = ["database", "source", "mode", "hwm", "lag", "lag s", "entries/s", "state", "resyncs p/f"]
    for column in columns + (["snapshot"] if snapshots else []):
        table.add_column(column, no_wrap=column in ("database", "mode"))
    for path, info in databases.items():
        for replica in info.get("replicas", []):
            progress = replica.get("snapshot_progress")
            bar: Any = ""
            if progress:
                done, total = progress
                bar = ProgressBar(total=max(total, 1), completed=done, width=20)
            rate = (rates or {}).get((path, replica["source"]))
            state = replica["state"] + (" (paused)" if replica.get("paused") else "")
            if replica.get("reason"):
                state += f": {replica['reason']}"
            mode = replica["mode"]
            if replica.get("tables"):
                mode += escape(f" [{', '.join(replica['tables'])}]")  # a filtered replica: only these tables
            table.add_row(
                path.rsplit("/", 1)[-1],
                replica["source"][:6],
                mode,
                str(replica["hwm"]),
                str(replica["lag_entries"]),
                f"{replica['lag_seconds']:.3f}",
                "" if rate is None else f"{rate:,.0f}",
                state,
                f"{replica['partial_resyncs']}/{replica['full_resyncs']}",
                *([bar] if snapshots else []),
            )
    return table


def databases_table(databases: dict[str, Any]) -> Table:
    table = Table(title="databases", title_justify="left")
    for column in ("database", "uuid", "sequence", "journal", "role"):
        table.add_column(column)
    for path, info in databases.items():
        role = ", ".join(
            part
            for part, flag in (
                ("source", info["source"]),
                ("replica", bool(info["replicas"])),
                ("read-only", info["read_only"]),
            )
            if flag
        )
        first, last = info["retained"]
        table.add_row(path, info["uuid"], str(info["sequence"]), f"{first}..{last}", role)
    return table


def status(console: Console, result: dict[str, Any]) -> None:
    """Render a STATUS reply."""
    databases = result.pop("databases", {})
    counters = result.pop("replication", None)
    summary = Table(title=f"node {result.get('label', '?')}", title_justify="left", show_header=False)
    summary.add_column("key", style="cyan")
    summary.add_column("value")
    for key, value in result.items():
        summary.add_row(str(key), value if isinstance(value, str) else repr(value))
    if counters:
        summary.add_row("replication", repr(counters))
    console.print(summary)
    if databases:
        console.print(databases_table(databases))
        console.print(replicas_table(databases))
