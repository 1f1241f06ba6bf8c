"""Storage benchmark: pynndb against raw py-lmdb + orjson (same LMDB settings), sqlite3 and PyNNDB v1.

Every figure comes from the same run: medians of several repetitions, each in a fresh temporary directory.
Run: ``python benchmarks/storage.py [--records N] [--runs K] [--v1 PATH [--v1-python PY]]``. The PyNNDB v1 column
needs a checkout of oddjobz/pynndb (``--v1`` or env ``PYNNDB_V1``) and a Python with lmdb, ujson and bson
(``--v1-python`` or env ``PYNNDB_V1_PYTHON``, default this one); v1 runs in a child process at its defaults.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import lmdb
import orjson
from common import make_documents
from v1_engine import SESSION_INDEXES, session_documents

from pynndb import Manager
from pynndb.core.config import DatabaseConfig

TAG_STR = b"\x20"  # pynndb's key tag for a str index value: the raw side stores the same index keys
SETTINGS: dict[str, Any] = {}  # LMDB settings both pynndb and raw use on top of pynndb's defaults (--writemap)
NUMBER_KEY = struct.Struct(">BdH").pack  # pynndb's key of a positive int index value (tag, -value, remainder)


def timed(work: Callable[[], Any]) -> float:
    """Seconds taken by `work()` (after a collection, so earlier garbage is not billed to it)."""
    gc.collect()
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


# --- pynndb ------------------------------------------------------------------------------------------------
class Pynndb:
    def __init__(self, directory: str, durable: bool = False) -> None:
        self.manager = Manager()
        self.db = self.manager.database("bench", directory, config={**SETTINGS, "durable": durable})
        self.table = self.db.table("people")
        self.table.ensure("by_name", "{name}", duplicates=True)
        self.keys: list[str] = []

    def bulk_append(self, docs: list[dict[str, Any]]) -> None:
        append, keys = self.table.append, self.keys
        with self.db.write_transaction() as txn:
            for doc in docs:
                keys.append(append(doc, txn=txn).key)

    def bulk_append_many(self, docs: list[dict[str, Any]]) -> None:
        self.keys += [doc.key for doc in self.table.append_many(docs)]

    def append_each(self, docs: list[dict[str, Any]]) -> None:
        append = self.table.append
        for doc in docs:
            append(doc)

    def append_sessions(self, docs: list[dict[str, Any]]) -> None:
        table = self.db.table("sessions")
        for name, func, duplicates in SESSION_INDEXES:
            table.ensure(name, func, duplicates=duplicates)
        append = table.append
        for doc in docs:
            append(doc)

    def scan(self) -> int:
        return sum(1 for _doc in self.table.find())

    def get_each(self, keys: list[str]) -> None:
        get = self.table.get
        for key in keys:
            get(key)

    def get_in_txn(self, keys: list[str]) -> None:
        get = self.table.get
        with self.db.read_transaction() as txn:
            for key in keys:
                get(key, txn=txn)

    def close(self) -> None:
        self.manager.close()


# --- raw py-lmdb + orjson, with pynndb's default environment settings ---------------------------------------
class Raw:
    def __init__(self, directory: str, durable: bool = False) -> None:
        cfg = DatabaseConfig.parse(SETTINGS)
        self.env = lmdb.open(
            directory,
            map_size=cfg.map_size,
            max_dbs=cfg.max_dbs,
            max_readers=cfg.max_readers,
            sync=durable,
            metasync=durable,
            writemap=cfg.writemap,
            map_async=cfg.writemap and not durable,
            readahead=cfg.readahead,
        )
        self.data = self.env.open_db(b"t/people")
        self.index = self.env.open_db(b"i/people/by_name", dupsort=True)
        self.counter = 0
        self.keys: list[bytes] = []

    def _key(self) -> bytes:
        self.counter += 1
        return b"%024x" % self.counter

    def bulk_append(self, docs: list[dict[str, Any]]) -> None:
        dumps, data, index, keys = orjson.dumps, self.data, self.index, self.keys
        with self.env.begin(write=True) as txn:
            put = txn.put
            for doc in docs:
                key = self._key()
                put(key, dumps(doc), db=data)
                put(TAG_STR + doc["name"].encode(), key, db=index)
                keys.append(key)

    def append_each(self, docs: list[dict[str, Any]]) -> None:
        dumps, data, index, begin = orjson.dumps, self.data, self.index, self.env.begin
        for doc in docs:
            key = self._key()
            with begin(write=True) as txn:
                txn.put(key, dumps(doc), db=data)
                txn.put(TAG_STR + doc["name"].encode(), key, db=index)

    def append_sessions(self, docs: list[dict[str, Any]]) -> None:
        data = self.env.open_db(b"t/sessions")
        indexes = [
            (self.env.open_db(f"i/sessions/{name}".encode(), dupsort=duplicates), func[1:-1])
            for name, func, duplicates in SESSION_INDEXES
        ]
        dumps, begin = orjson.dumps, self.env.begin
        for doc in docs:
            key = self._key()
            with begin(write=True) as txn:
                txn.put(key, dumps(doc), db=data)
                for index, field in indexes:
                    txn.put(NUMBER_KEY(0x10, -doc[field], 0x8000), key, db=index)

    def scan(self) -> int:
        loads = orjson.loads
        with self.env.begin() as txn:
            return sum(1 for _key, value in txn.cursor(db=self.data) if loads(value))

    def get_each(self, keys: list[bytes]) -> None:
        loads, data, begin = orjson.loads, self.data, self.env.begin
        for key in keys:
            with begin() as txn:
                loads(txn.get(key, db=data))

    def get_in_txn(self, keys: list[bytes]) -> None:
        loads, data = orjson.loads, self.data
        with self.env.begin() as txn:
            get = txn.get
            for key in keys:
                loads(get(key, db=data))

    def close(self) -> None:
        self.env.close()


# --- sqlite3: JSON text plus an expression index on name, WAL --------------------------------------------------
class Sqlite:
    def __init__(self, directory: str, durable: bool = False) -> None:
        self.connection = sqlite3.connect(f"{directory}/bench.sqlite", isolation_level=None)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self.connection.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        self.connection.execute("CREATE INDEX by_name ON people (json_extract(body, '$.name'))")
        self.keys: list[int] = []

    def bulk_append(self, docs: list[dict[str, Any]]) -> None:
        dumps, execute = json.dumps, self.connection.execute
        execute("BEGIN")
        for doc in docs:
            self.keys.append(execute("INSERT INTO people (body) VALUES (?)", (dumps(doc),)).lastrowid)  # type: ignore[arg-type]
        execute("COMMIT")

    def append_each(self, docs: list[dict[str, Any]]) -> None:
        dumps, execute = json.dumps, self.connection.execute
        for doc in docs:
            execute("INSERT INTO people (body) VALUES (?)", (dumps(doc),))  # autocommit: one transaction each

    def append_sessions(self, docs: list[dict[str, Any]]) -> None:
        dumps, execute = json.dumps, self.connection.execute
        execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        for name, func, duplicates in SESSION_INDEXES:
            unique = "" if duplicates else "UNIQUE "
            execute(f"CREATE {unique}INDEX {name} ON sessions (json_extract(body, '$.{func[1:-1]}'))")
        for doc in docs:
            execute("INSERT INTO sessions (body) VALUES (?)", (dumps(doc),))

    def scan(self) -> int:
        loads = json.loads
        return sum(1 for (body,) in self.connection.execute("SELECT body FROM people ORDER BY id") if loads(body))

    def get_each(self, keys: list[int]) -> None:
        loads, execute = json.loads, self.connection.execute
        for key in keys:
            loads(execute("SELECT body FROM people WHERE id = ?", (key,)).fetchone()[0])

    def get_in_txn(self, keys: list[int]) -> None:
        self.connection.execute("BEGIN")
        self.get_each(keys)
        self.connection.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()


ENGINES = {"pynndb": Pynndb, "raw": Raw, "sqlite": Sqlite}


def one_run(
    docs: list[dict[str, Any]], per_call: int, durable_calls: int, gets: int, v1: tuple[str, str] | None
) -> dict[str, dict[str, float]]:
    """Operations per second of every benchmark row, for every engine, in one repetition."""
    rates: dict[str, dict[str, float]] = {}
    sessions = session_documents(per_call)

    def record(row: str, engine: str, count: int, seconds: float) -> None:
        rates.setdefault(row, {})[engine] = count / seconds

    for name, engine_class in ENGINES.items():
        directory = tempfile.mkdtemp(prefix=f"bench-{name}-")
        try:
            engine = engine_class(directory)
            record("bulk append, 1 txn, 1 index", name, len(docs), timed(partial(engine.bulk_append, docs)))
            record("full scan -> documents", name, len(docs), timed(engine.scan))
            rng = random.Random(7)
            keys = [rng.choice(engine.keys) for _ in range(gets)]
            record("get by key, new txn each", name, gets, timed(partial(engine.get_each, keys)))
            record("get by key, one read txn", name, gets, timed(partial(engine.get_in_txn, keys)))
            engine.close()
            if name == "pynndb":
                engine = Pynndb(tempfile.mkdtemp(dir=directory))
                seconds = timed(partial(engine.bulk_append_many, docs))
                record("bulk append_many, 1 index", name, len(docs), seconds)
                engine.close()
            engine = engine_class(tempfile.mkdtemp(dir=directory))
            batch = docs[:per_call]
            record("append, 1 txn per call", name, len(batch), timed(partial(engine.append_each, batch)))
            batch = [dict(doc) for doc in sessions]
            seconds = timed(partial(engine.append_sessions, batch))
            record("append, 1 txn per call, 3 indexes", name, len(batch), seconds)
            engine.close()
            engine = engine_class(tempfile.mkdtemp(dir=directory), durable=True)
            batch = docs[:durable_calls]
            record("append, 1 durable txn per call", name, len(batch), timed(partial(engine.append_each, batch)))
            engine.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    if v1 is not None:
        for row, rate in run_v1(*v1, len(docs), per_call, gets).items():
            rates.setdefault(row, {})["v1"] = rate
    return rates


def run_v1(path: str, python: str, records: int, per_call: int, gets: int) -> dict[str, float]:
    """PyNNDB v1's rates for the rows it runs, from a child process (v1's package is also called pynndb)."""
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "v1_engine.py")
    command = [python, worker, path, str(records), str(per_call), str(gets)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise SystemExit(f"PyNNDB v1 failed ({' '.join(command)}):\n{done.stderr.strip()[-2000:]}")
    rates: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return rates


TARGETS = {
    "bulk append, 1 txn, 1 index": ">=0.5x raw, >sqlite",
    "bulk append_many, 1 index": ">=0.5x raw, >sqlite",
    "append, 1 txn per call": ">=0.8x raw, >sqlite",
    "append, 1 txn per call, 3 indexes": ">=0.7x raw, >=1.25x v1",
    "append, 1 durable txn per call": "(durable; report)",
    "full scan -> documents": ">=0.8x raw, >sqlite",
    "get by key, new txn each": ">=0.7x raw, >sqlite",
    "get by key, one read txn": ">=0.7x raw, >sqlite",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="documents per bulk load (default 100000)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported (default 3)")
    parser.add_argument("--durable-calls", type=int, default=300, help="appends in the durable per-call row")
    parser.add_argument("--v1", default=os.environ.get("PYNNDB_V1"), help="checkout of PyNNDB v1 (env PYNNDB_V1)")
    parser.add_argument(
        "--v1-python",
        default=os.environ.get("PYNNDB_V1_PYTHON", sys.executable),
        help="a Python with lmdb, ujson and bson for v1 (env PYNNDB_V1_PYTHON; default: this one)",
    )
    parser.add_argument(
        "--writemap", choices=["on", "off"], help="LMDB writemap for pynndb and raw (default: pynndb's default)"
    )
    args = parser.parse_args()
    if args.writemap:
        SETTINGS["writemap"] = args.writemap == "on"
    v1 = None
    if args.v1:
        if not os.path.isfile(os.path.join(args.v1, "pynndb", "table.py")):
            raise SystemExit(f"--v1 {args.v1}: not a PyNNDB v1 checkout (no pynndb/table.py)")
        v1 = (os.path.abspath(args.v1), args.v1_python)
    docs = make_documents(args.records)
    per_call = max(1, args.records // 5)
    gets = max(1, args.records // 2)
    size = statistics.mean(len(orjson.dumps(doc)) for doc in docs[:1000])
    print(
        f"{args.records} documents (~{size:.0f} bytes as JSON), {args.runs} runs, medians; "
        f"per-call appends: {per_call} ({args.durable_calls} durable); gets: {gets}"
    )
    settings = DatabaseConfig.parse(SETTINGS)
    lmdb_settings = f"writemap={settings.writemap}" + (", map_async when not durable" if settings.writemap else "")
    print(f"pynndb and raw (py-lmdb + orjson) with the same LMDB settings: {lmdb_settings}")
    print("sqlite = sqlite3 WAL + json + json_extract index")
    print("non-durable rows: pynndb default / raw sync=False / sqlite synchronous=NORMAL; durable rows: fsync / FULL")
    print("3 indexes: PyNNDB v1's benchmark documents, indexes {sid} (unique), {day} and {hour} (duplicates)")
    if v1 is None:
        print("PyNNDB v1 column skipped: give a checkout of oddjobz/pynndb with --v1 PATH or env PYNNDB_V1")
    else:
        print(f"v1 = PyNNDB v1 from {v1[0]} at its defaults (binlog=False), run by {v1[1]}")
    runs = [one_run(docs, per_call, args.durable_calls, gets, v1) for _ in range(args.runs)]
    engines = [*ENGINES, *(["v1"] if v1 else [])]
    header = f"{'operation':<34} {'pynndb/s':>11} {'raw/s':>11} {'sqlite/s':>11}"
    header += f" {'v1/s':>11}" if v1 else ""
    header += f" {'÷raw':>6} {'÷sqlite':>8}" + (f" {'÷v1':>6}" if v1 else "") + "  target"
    print()
    print(header)
    print("-" * len(header))
    raw_row = {"bulk append_many, 1 index": "bulk append, 1 txn, 1 index"}
    for row, target in TARGETS.items():
        medians = {}
        for engine in engines:
            source = raw_row.get(row, row) if engine != "pynndb" else row
            found = [run[source][engine] for run in runs if engine in run.get(source, {})]
            medians[engine] = statistics.median(found) if found else float("nan")
        ours = medians["pynndb"]
        figures = " ".join(f"{medians[engine]:>11,.0f}" for engine in engines)
        ratios = f"{ours / medians['raw']:>5.2f}x {ours / medians['sqlite']:>7.2f}x"
        if v1:
            ratios += f" {ours / medians['v1']:>5.2f}x" if medians["v1"] == medians["v1"] else f" {'-':>6}"
        print(f"{row:<34} {figures} {ratios}  {target}")


if __name__ == "__main__":
    main()
