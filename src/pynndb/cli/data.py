"""Data commands with the library's verbs: tables, indexes, get, find, insert, export.

Reads open the database read-only (safe beside a live node). Output is a rich table on a terminal and NDJSON
with ``--json`` or when piped; a record is written as its fields plus ``_id``, its key.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import click
import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from pynndb.core import registry
from pynndb.core.database import Database
from pynndb.core.doc import Doc
from pynndb.errors import PyNNDBError

KEY_FIELD = "_id"
SHOWN_ROWS = 1000  # a terminal table stops here; NDJSON has no limit
CELL_WIDTH = 40


def fail(message: str, code: int = 1) -> None:
    """Print a clear error on stderr and exit non-zero."""
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error[/] {escape(message)}")
    sys.exit(code)


@contextmanager
def open_database(path: str, write: bool = False) -> Iterator[Database]:
    """The database at `path`: read-only unless `write` (which creates it when missing)."""
    if not write and not os.path.isfile(os.path.join(path, "data.mdb")):
        fail(f"no database at {path} (no data.mdb)")
    try:
        db = registry.open_database(path, path, None if write else {"readonly": True})
    except PyNNDBError as error:
        fail(str(error))
    try:
        yield db
    finally:
        registry.release(db)


def _table(db: Database, name: str) -> Any:
    if name not in db.tables():
        fail(f"no table {name!r} in {db.path} (tables: {', '.join(db.tables()) or 'none'})")
    return db[name]


def record(doc: Doc) -> dict[str, Any]:
    """A record as plain data: its key under _id, then its fields."""
    return {KEY_FIELD: doc.key, **doc}


def _piped(as_json: bool) -> bool:
    return as_json or not sys.stdout.isatty()


def emit(rows: Iterable[dict[str, Any]], as_json: bool, title: str, columns: list[str] | None = None) -> int:
    """Print rows as NDJSON or as a rich table; returns how many."""
    count = 0
    if _piped(as_json):
        out = sys.stdout
        for row in rows:
            out.write(orjson.dumps(row, default=str).decode() + "\n")
            count += 1
        out.flush()
        return count
    shown: list[dict[str, Any]] = []
    for row in rows:
        count += 1
        if len(shown) < SHOWN_ROWS:
            shown.append(row)
    names = columns or list(dict.fromkeys(name for row in shown for name in row))
    table = RichTable(title=title if count <= SHOWN_ROWS else f"{title} (first {SHOWN_ROWS} of {count})")
    for name in names:
        table.add_column(name, overflow="fold", max_width=CELL_WIDTH)
    for row in shown:
        table.add_row(*(_cell(row.get(name)) for name in names))
    Console().print(table)
    return count


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return escape(value)
    return escape(orjson.dumps(value, default=str).decode())


def _json_option(function: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="NDJSON output (the default when piped).")(function)


@click.command()
@click.argument("path", type=click.Path())
@_json_option
def tables(path: str, as_json: bool) -> None:
    """List the tables of the database at PATH with their record counts and indexes."""
    with open_database(path) as db:
        rows = [{"table": name, "records": db[name].records(), "indexes": db[name].indexes()} for name in db.tables()]
        emit(rows, as_json, f"tables of {path}")


@click.command()
@click.argument("path", type=click.Path())
@click.argument("table")
@_json_option
def indexes(path: str, table: str, as_json: bool) -> None:
    """List the indexes of TABLE: format string or function, and whether keys repeat."""
    with open_database(path) as db:
        chosen = _table(db, table)
        rows = []
        for name in chosen.indexes():
            definition = chosen.index(name).definition
            rows.append(
                {
                    "index": name,
                    "format": definition.func,
                    "function": definition.function,
                    "duplicates": definition.duplicates,
                }
            )
        emit(rows, as_json, f"indexes of {table}")


@click.command()
@click.argument("path", type=click.Path())
@click.argument("table")
@click.argument("key")
@_json_option
def get(path: str, table: str, key: str, as_json: bool) -> None:
    """Print the record of TABLE with key KEY (exit status 1 when there is none)."""
    with open_database(path) as db:
        try:
            doc = _table(db, table).get(key)
        except PyNNDBError as error:
            fail(str(error))
        if doc is None:
            fail(f"no record {key!r} in table {table!r}")
        if _piped(as_json):
            click.echo(orjson.dumps(record(doc), default=str).decode())
        else:
            Console().print_json(orjson.dumps(record(doc), default=str).decode())


def _template(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint=option) from None
    if not isinstance(value, (dict, str)):
        raise click.BadParameter("give a JSON object (a template document) or a key string", param_hint=option)
    return value


@click.command()
@click.argument("path", type=click.Path())
@click.argument("table")
@click.option("--index", "index_name", help="Walk this index (default: record key order).")
@click.option("--lower", help='Lower bound: a JSON template document for the index, like {"age": 30}.')
@click.option("--upper", help="Upper bound, like --lower (inclusive).")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many records.")
@_json_option
def find(
    path: str,
    table: str,
    index_name: str | None,
    lower: str | None,
    upper: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Records of TABLE in key or index order, optionally between --lower and --upper."""
    low, high = _template(lower, "--lower"), _template(upper, "--upper")
    with open_database(path) as db:
        chosen = _table(db, table)
        if index_name is not None and index_name not in chosen.indexes():
            fail(f"no index {index_name!r} on table {table!r} (indexes: {', '.join(chosen.indexes()) or 'none'})")
        try:
            if low is None and high is None:
                docs = chosen.find(index_name, limit=limit)
            else:
                docs = chosen.range(index_name, low, high, limit=limit)
            emit((record(doc) for doc in docs), as_json, f"{table}")
        except PyNNDBError as error:
            fail(str(error))


@click.command()
@click.argument("path", type=click.Path())
@click.argument("table")
@click.option("-o", "--output", type=click.File("w"), default="-", help="Write here instead of stdout.")
def export(path: str, table: str, output: IO[str]) -> None:
    """Write every record of TABLE as NDJSON (one JSON object per line, its key under _id)."""
    with open_database(path) as db:
        for doc in _table(db, table).find():
            output.write(orjson.dumps(record(doc), default=str).decode() + "\n")
    output.flush()


class BadInput(Exception):
    """A line (or array item) of the input that is not a JSON object with a valid key."""


def _parse(line: str, number: int) -> Doc:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise BadInput(f"line {number}: not JSON ({error})") from None
    return _as_doc(value, f"line {number}")


def _as_doc(value: Any, where: str) -> Doc:
    if not isinstance(value, dict):
        raise BadInput(f"{where}: a record must be a JSON object, not {type(value).__name__}")
    fields = dict(value)
    key = fields.pop(KEY_FIELD, None)
    try:
        return Doc(fields, oid=key)
    except PyNNDBError as error:
        raise BadInput(f"{where}: {error}") from None


def read_records(stream: IO[bytes]) -> Iterator[tuple[str, Doc, int]]:
    """(where, record, bytes consumed) from NDJSON or a JSON array; raises BadInput naming the line or item."""
    first = stream.peek(1)[:1] if hasattr(stream, "peek") else b""
    while first in (b" ", b"\n", b"\r", b"\t"):
        stream.read(1)
        first = stream.peek(1)[:1] if hasattr(stream, "peek") else b""
    if first == b"[":
        raw = stream.read()
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise BadInput(f"the JSON array does not parse: {error}") from None
        for number, item in enumerate(items, 1):
            yield f"item {number}", _as_doc(item, f"item {number}"), len(raw) if number == len(items) else 0
        return
    for number, line in enumerate(stream, 1):
        text = line.decode("utf-8", "replace").strip()
        if text:
            yield f"line {number}", _parse(text, number), len(line)
        else:
            yield "", Doc(), len(line)  # a blank line: progress only


def _progress(total: int | None) -> Progress:
    return Progress(
        TextColumn("inserting"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not sys.stderr.isatty(),
    )


@click.command()
@click.argument("path", type=click.Path())
@click.argument("table")
@click.argument("file", type=click.Path(allow_dash=True))
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(min=1), help="Records per transaction.")
def insert(path: str, table: str, file: str, batch: int) -> None:
    """Insert records into TABLE from FILE (NDJSON or a JSON array; '-' for stdin); creates what is missing.

    Each batch is one transaction: a bad line rejects its whole batch (nothing of it is written), the command stops
    and names the line. Earlier batches stay committed; a record's _id, if any, becomes its key."""
    if file != "-" and not os.path.isfile(file):
        fail(f"no file {file}")
    stream: Any = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    total = None if file == "-" else os.path.getsize(file)
    inserted = 0
    try:
        if not hasattr(stream, "peek"):
            import io

            stream = io.BufferedReader(stream)
        with open_database(path, write=True) as db, _progress(total) as progress:
            task = progress.add_task("insert", total=total)
            target = db.table(table)
            pending: list[Doc] = []
            first_where = ""
            consumed = 0
            records = read_records(stream)
            while True:
                try:
                    where, doc, size = next(records)
                except StopIteration:
                    break
                except BadInput as error:
                    fail(
                        f"{error}; this batch (from {first_where or 'its start'}) was not written, {inserted} "
                        f"records were inserted before it"
                    )
                consumed += size
                if not where:
                    continue
                if not pending:
                    first_where = where
                pending.append(doc)
                if len(pending) >= batch:
                    inserted += _write(target, pending, first_where, where, inserted)
                    progress.update(task, completed=consumed)
                    pending = []
            if pending:
                inserted += _write(target, pending, first_where, "the end", inserted)
            progress.update(task, completed=consumed)
    finally:
        if file != "-":
            stream.close()
    Console(stderr=True).print(f"inserted {inserted} records into {table}")


def _write(table: Any, docs: list[Doc], first: str, last: str, inserted: int) -> int:
    try:
        table.append_many(docs)
    except PyNNDBError as error:
        fail(f"batch {first} to {last} rejected, nothing of it written ({inserted} inserted before it): {error}")
    return len(docs)


COMMANDS = [tables, indexes, get, find, insert, export]
