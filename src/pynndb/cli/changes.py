"""`pynndb changes PATH`: a journaled database's change feed as NDJSON, one change a line (`Database.changes`).

The database is opened read-only, so following a live database (or a replica a node fills) writes nothing to it.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from pynndb.cli.data import fail, open_database
from pynndb.core.changes import Change
from pynndb.errors import PyNNDBError


def change_json(change: Change) -> dict[str, Any]:
    """A change as one NDJSON object (`doc` holds the document's fields, null unless op is 'put')."""
    return {
        "sequence": change.sequence,
        "index": change.index,
        "last": change.last,
        "table": change.table,
        "op": change.op,
        "key": change.key,
        "doc": None if change.doc is None else change.doc.doc,
        "origin": change.origin,
    }


def _since(text: str) -> int | tuple[int, int] | None:
    if text == "now":
        return None
    sequence, _, index = text.partition(":")
    try:
        return (int(sequence), int(index)) if index else int(sequence)
    except ValueError:
        raise click.BadParameter("--since takes a sequence N, a position N:I, or 'now'") from None


@click.command()
@click.argument("path", type=click.Path())
@click.option(
    "--since",
    "since_text",
    default="0",
    show_default=True,
    help="Print changes after sequence N "
    "(0: all the journal holds; N:I: after change I of entry N; 'now': only new ones).",
)
@click.option("--table", "tables", multiple=True, help="Only this table (repeatable).")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new changes (Ctrl-C ends).")
@click.option("--timeout", type=float, help="With --follow: stop after this many seconds without a change.")
def changes(path: str, since_text: str, tables: tuple[str, ...], follow: bool, timeout: float | None) -> None:
    """Print the changes of the journaled database at PATH as NDJSON, one change a line, in commit order.

    A consumer that saves the last `sequence` it handled (or `sequence:index` inside a transaction) resumes
    with --since and gets every later change exactly once."""
    since = _since(since_text)
    if timeout is not None and timeout < 0:
        raise click.BadParameter("--timeout must be >= 0")
    wait = (timeout if timeout is not None else None) if follow else 0.0
    out = sys.stdout.buffer
    with open_database(path) as db:
        try:
            for change in db.changes(since=since, tables=list(tables) or None, timeout=wait):
                out.write(orjson.dumps(change_json(change)) + b"\n")
                if follow:
                    out.flush()
            out.flush()
        except PyNNDBError as error:
            fail(f"{type(error).__name__}: {error}")
        except KeyboardInterrupt:
            out.flush()
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (| head): stop quietly


COMMANDS = [changes]
