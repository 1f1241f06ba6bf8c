"""PyNNDB v1 (oddjobz/pynndb) as a benchmark engine, run in a child process so its `pynndb` package never meets ours.

`python benchmarks/v1_engine.py V1_PATH RECORDS PER_CALL GETS` runs every storage row v1 can run, with v1 at its
defaults (``binlog=False``), and prints the rates as JSON. It needs v1's dependencies (lmdb, ujson, bson).
`python benchmarks/v1_engine.py --blocks V1_PATH COUNT SIZE` is append_cpu.py's worker: the per-call 3-index
workload in blocks of SIZE appends, one block each time a line arrives on stdin, answering with the block's CPU and
wall seconds as JSON (so that v1 takes turns with pynndb and raw instead of running after them).
Also the home of the per-call 3-index workload (v1's own benchmark documents), which storage.py shares.
"""

from __future__ import annotations

import gc
import json
import random
import shutil
import sys
import tempfile
import time
from typing import Any

SESSION_INDEXES = (("by_sid", "{sid}", False), ("by_day", "{day}", True), ("by_hour", "{hour}", True))


def session_documents(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """PyNNDB v1's benchmark documents: {'origin', 'sid', 'when', 'day', 'hour'} (~80 bytes as JSON)."""
    rng = random.Random(seed)
    start = time.time()
    docs = []
    for i in range(count):
        rnd = rng.random()
        docs.append(
            {"origin": "linux.co.uk", "sid": i, "when": start + i / 1e5, "day": int(rnd * 6), "hour": int(rnd * 24)}
        )
    return docs


def _timed(count: int, work: Any) -> float:
    gc.collect()
    start = time.perf_counter()
    work()
    return count / (time.perf_counter() - start)


def run(v1_path: str, docs: list[dict[str, Any]], per_call: int, gets: int) -> dict[str, float]:
    """Rates of v1 for the storage rows it supports (same row names as storage.py)."""
    sys.path.insert(0, v1_path)
    from pynndb import Database  # noqa: PLC0415  (v1's package, from v1_path)

    rates: dict[str, float] = {}
    directory = tempfile.mkdtemp(prefix="bench-v1-")
    try:
        db = Database(f"{directory}/bulk", binlog=False)
        table = db.table("people")
        table.index("by_name", "{name}", duplicates=True)
        batch = [dict(doc) for doc in docs]

        def bulk() -> None:
            with db.begin() as txn:
                for doc in batch:
                    txn.append(table, doc)

        rates["bulk append, 1 txn, 1 index"] = _timed(len(batch), bulk)
        rates["full scan -> documents"] = _timed(len(batch), lambda: sum(1 for _doc in table.find()))
        rng = random.Random(7)
        keys = [rng.choice(batch)["_id"] for _ in range(gets)]

        def get_each() -> None:
            for key in keys:
                table.get(key)

        def get_in_txn() -> None:
            with db.env.begin() as txn:
                for key in keys:
                    table.get(key, txn=txn)

        rates["get by key, new txn each"] = _timed(gets, get_each)
        rates["get by key, one read txn"] = _timed(gets, get_in_txn)
        db.close()

        db = Database(f"{directory}/each", binlog=False)
        table = db.table("people")
        table.index("by_name", "{name}", duplicates=True)
        batch = [dict(doc) for doc in docs[:per_call]]
        rates["append, 1 txn per call"] = _timed(len(batch), lambda: [table.append(doc) for doc in batch])
        db.close()

        db = Database(f"{directory}/sessions", binlog=False)
        table = db.table("sessions")
        for name, func, duplicates in SESSION_INDEXES:
            table.index(name, func, duplicates=duplicates)
        batch = session_documents(per_call)
        rates["append, 1 txn per call, 3 indexes"] = _timed(len(batch), lambda: [table.append(doc) for doc in batch])
        db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rates


def blocks(v1_path: str, count: int, size: int) -> None:
    """The per-call 3-index row in blocks, on request (see the module's docstring): documents `count` on (the
    caller's own take the first `count`, so that `sid`, a unique index, never repeats between the two), at most
    until stdin closes."""
    sys.path.insert(0, v1_path)
    from pynndb import Database  # noqa: PLC0415  (v1's package, from v1_path)

    directory = tempfile.mkdtemp(prefix="bench-v1-blocks-")
    try:
        db = Database(f"{directory}/sessions", binlog=False)
        table = db.table("sessions")
        for name, func, duplicates in SESSION_INDEXES:
            table.index(name, func, duplicates=duplicates)
        documents = session_documents(2 * count)[count:]
        gc.collect()
        gc.freeze()  # as the caller does: the document list is not garbage
        print(json.dumps({"ready": True}), flush=True)
        for number, _line in enumerate(sys.stdin):
            block = [dict(doc) for doc in documents[number * size : (number + 1) * size]]
            if not block:
                break
            cpu, wall = time.process_time(), time.perf_counter()
            for doc in block:
                table.append(doc)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            print(json.dumps({"cpu": cpu / len(block), "wall": wall / len(block)}), flush=True)
        db.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    if sys.argv[1] == "--blocks":
        blocks(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    v1_path, records, per_call, gets = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from common import make_documents  # noqa: PLC0415

    print(json.dumps(run(v1_path, make_documents(records), per_call, gets)))


if __name__ == "__main__":
    main()
