"""Storage benchmark: pynndb against raw py-lmdb + orjson (same LMDB settings) and sqlite3 (JSON + index).

Every figure comes from the same run: medians of several repetitions, each in a fresh temporary directory.
Run: ``python benchmarks/storage.py [--records N] [--runs K]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import lmdb
import orjson
from common import make_documents

from pynndb import Manager
from pynndb.core.config import DatabaseConfig

TAG_STR = b"\x20"  # pynndb's key tag for a str index value: the raw side stores the same index keys


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
        self.db = self.manager.database("bench", directory, config={"durable": durable})
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
        cfg = DatabaseConfig()
        self.env = lmdb.open(
            directory,
            map_size=cfg.map_size,
            max_dbs=cfg.max_dbs,
            max_readers=cfg.max_readers,
            sync=durable,
            metasync=durable,
            writemap=cfg.writemap,
            map_async=False,
            readahead=False,
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


def one_run(docs: list[dict[str, Any]], per_call: int, durable_calls: int, gets: int) -> dict[str, dict[str, float]]:
    """Operations per second of every benchmark row, for every engine, in one repetition."""
    rates: dict[str, dict[str, float]] = {}

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
            engine.close()
            engine = engine_class(tempfile.mkdtemp(dir=directory), durable=True)
            batch = docs[:durable_calls]
            record("append, 1 durable txn per call", name, len(batch), timed(partial(engine.append_each, batch)))
            engine.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return rates


TARGETS = {
    "bulk append, 1 txn, 1 index": ">=0.5x raw, >sqlite",
    "bulk append_many, 1 index": ">=0.5x raw, >sqlite",
    "append, 1 txn per call": ">=0.8x raw, >sqlite",
    "append, 1 durable txn per call": "(durable; report)",
    "full scan -> documents": ">=0.75x raw, >sqlite",
    "get by key, new txn each": ">=0.6x raw, >sqlite",
    "get by key, one read txn": ">=0.6x raw, >sqlite",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="documents per bulk load (default 100000)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; medians are reported (default 3)")
    parser.add_argument("--durable-calls", type=int, default=300, help="appends in the durable per-call row")
    args = parser.parse_args()
    docs = make_documents(args.records)
    per_call = max(1, args.records // 5)
    gets = max(1, args.records // 2)
    size = statistics.mean(len(orjson.dumps(doc)) for doc in docs[:1000])
    print(
        f"{args.records} documents (~{size:.0f} bytes as JSON), {args.runs} runs, medians; "
        f"per-call appends: {per_call} ({args.durable_calls} durable); gets: {gets}"
    )
    print(
        "raw = py-lmdb + orjson with pynndb's default LMDB settings; sqlite = sqlite3 WAL + json + json_extract index"
    )
    print("non-durable rows: pynndb default / raw sync=False / sqlite synchronous=NORMAL; durable rows: fsync / FULL")
    runs = [one_run(docs, per_call, args.durable_calls, gets) for _ in range(args.runs)]
    header = f"{'operation':<32} {'pynndb/s':>11} {'raw/s':>11} {'sqlite/s':>11} {'÷raw':>6} {'÷sqlite':>8}  target"
    print()
    print(header)
    print("-" * len(header))
    raw_row = {"bulk append_many, 1 index": "bulk append, 1 txn, 1 index"}
    for row, target in TARGETS.items():
        medians = {}
        for engine in ENGINES:
            source = raw_row.get(row, row) if engine != "pynndb" else row
            medians[engine] = statistics.median(run[source][engine] for run in runs)
        ours, raw, sqlite = medians["pynndb"], medians["raw"], medians["sqlite"]
        figures = f"{ours:>11,.0f} {raw:>11,.0f} {sqlite:>11,.0f}"
        print(f"{row:<32} {figures} {ours / raw:>5.2f}x {ours / sqlite:>7.2f}x  {target}")


if __name__ == "__main__":
    main()
