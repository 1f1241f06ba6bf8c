"""Lag over a long run with a sizeable replicated database: what a replica sees over minutes, periodic work of the
nodes included (the divergence check every 30 s digests both copies: every document of each).

pynndb: two `pynndb node` processes, a source of --docs documents (one index) replicated one-way, this process as
the application writing one document every --every seconds for --seconds and waiting until each is readable on the
replica. Redis: a master holding --docs keys and its replica, the same writes. Figures: p50, p99 and max lag, and
the writes slower than 5 ms (when in the run). The benchmark replication.py runs each pattern for seconds on small
databases; a check every 30 s never falls inside it.
Then the same writes, one every 2 ms, while the same nodes full-sync another database of --docs documents into a
new replica (Redis: while a new replica of the same master takes its full resync): the lag of the writes made
during that sync.
Run: ``python benchmarks/long_run.py [--docs N] [--seconds S] [--every SECONDS]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from common import build_line, frozen_heap, make_documents, percentiles

from pynndb import Manager
from pynndb.core.database import Database
from replication import BATCH, FULL_SYNC_COMMITS, SETTLE_TIMEOUT, Mesh, Pair, RedisServer, batched, wait_for

SLOW = 0.005  # a write slower than this is listed (the p99 target of the replication benchmark)
DURING_EVERY = 0.002  # seconds between two writes while another database syncs


def steady_writes(
    write: Callable[[int], Any], visible: Callable[[Any], bool], seconds: float, every: float
) -> list[tuple[float, float]]:
    """(seconds into the run, lag) of each write; one write every `every` seconds for `seconds`."""
    samples = []
    start = time.perf_counter()
    number = 0
    with frozen_heap():  # (the document lists are not garbage: a collection of them would be timed as lag)
        while (now := time.perf_counter()) - start < seconds:
            token = write(number)
            number += 1
            wait_for(lambda: visible(token), 60, "a write to be readable on the replica", 0)  # noqa: B023
            samples.append((now - start, time.perf_counter() - now))
            time.sleep(every)
    return samples


def during_sync(
    write: Callable[[int], Any], visible: Callable[[Any], bool], sync: Callable[[], None]
) -> tuple[list[tuple[float, float]], float]:
    """Writes every DURING_EVERY s from 0.5 s before `sync` starts until 0.5 s after it returned: (the samples
    made while it ran, as (s since it started, lag)), and how long it took."""
    span: list[float] = []
    done = threading.Event()

    def run() -> None:
        try:
            time.sleep(0.5)
            span.append(time.perf_counter())
            sync()
            span.append(time.perf_counter())
            time.sleep(0.5)
        finally:
            done.set()

    samples = []
    number = 0
    with frozen_heap():
        syncer = threading.Thread(target=run, name="bench-sync")
        syncer.start()
        while not done.is_set():
            now = time.perf_counter()
            token = write(number)
            number += 1
            wait_for(lambda: visible(token), 60, "a write to be readable on the replica", 0)  # noqa: B023
            samples.append((now, time.perf_counter() - now))
            time.sleep(DURING_EVERY)
    syncer.join(SETTLE_TIMEOUT)
    if len(span) != 2:
        raise RuntimeError("the other database's sync did not finish")
    start, end = span
    return [(at - start, lag) for at, lag in samples if start <= at <= end], end - start


def report(name: str, samples: list[tuple[float, float]]) -> tuple[float, float, float]:
    lags = [lag for _at, lag in samples]
    p50, p99 = percentiles(lags)
    slow = [(round(at, 1), round(lag * 1e3, 1)) for at, lag in samples if lag > SLOW]
    figures = f"lag p50 {p50 * 1e3:.3f} ms, p99 {p99 * 1e3:.3f} ms, max {max(lags) * 1e3:.1f} ms"
    print(f"  {name}: {len(lags)} writes, {figures}")
    more = " ..." if len(slow) > 12 else ""
    print(f"    writes slower than {SLOW * 1e3:g} ms (s into the run, ms): {slow[:12]}{more}")
    return p50, p99, max(lags)


def pynndb_run(workdir: str, documents: list[dict[str, Any]], writes: list[dict[str, Any]], options: Any) -> tuple:
    os.makedirs(workdir)
    mesh = Mesh(2, workdir)
    manager = Manager()
    try:

        def load(db: Database) -> None:
            table = db.table("bench")
            for batch in batched(documents, BATCH):
                table.append_many(batch)

        pair = Pair(mesh, manager, workdir, "long", "n0", "n1", prepare=load)
        try:
            pair.replicate()
            replica = pair.replica_table()
            wait_for(lambda: len(replica) == len(documents), SETTLE_TIMEOUT, "the replica's full sync")
            table = pair.table
            samples = steady_writes(
                lambda i: table.append(writes[i]).oid,
                lambda oid: replica.get(oid) is not None,
                options.seconds,
                options.every,
            )
            status = pair.replica_status()
            print(f"  replica: state {status.get('state')}, last check {status.get('verification')}")
            steady = report("pynndb", samples)

            def load_other(db: Database) -> None:  # (its journal no longer starts at 1: a new replica needs a snapshot)
                for batch in batched(documents, max(1, len(documents) // FULL_SYNC_COMMITS)):
                    db.table("bench").append_many(batch)

            config = {"replication": True, "journal": {"max_entries": 1000}}
            other = Pair(mesh, manager, workdir, "other", "n0", "n1", config=config, prepare=load_other)
            try:

                def sync() -> None:
                    other.replicate()
                    wait_for(other.caught_up, SETTLE_TIMEOUT, "the other database's full sync", 0.001)

                during, took = during_sync(
                    lambda i: table.append(writes[-1 - i]).oid, lambda oid: replica.get(oid) is not None, sync
                )
            finally:
                other.close()
            print(f"  a full sync of another database of {len(documents):,} documents took {took * 1e3:.0f} ms")
            return steady, report("pynndb, writes during it", during)
        finally:
            pair.close()
    finally:
        mesh.stop()
        manager.close()


def redis_run(workdir: str, documents: list[dict[str, Any]], writes: list[dict[str, Any]], options: Any) -> tuple:
    master = replica = None
    try:
        master = RedisServer(workdir, "long-master")
        replica = RedisServer(workdir, "long-replica", replica_of=master.port)
        wait_for(replica.link_up, 20, "redis replica link", 0.01)
        for offset in range(0, len(documents), BATCH):
            pipe = master.client.pipeline(transaction=False)
            for i in range(offset, min(offset + BATCH, len(documents))):
                pipe.set(b"doc:%d" % i, orjson.dumps(documents[i]))
            pipe.execute()
        wait_for(lambda: replica.dbsize() == len(documents), SETTLE_TIMEOUT, "redis replica to catch up")
        set_, get = master.client.set, replica.client.get

        def write(i: int) -> bytes:
            key = b"long:%d" % i
            set_(key, orjson.dumps(writes[i]))
            return key

        steady = report("Redis", steady_writes(write, lambda key: get(key) is not None, options.seconds, options.every))
        fresh: list[RedisServer] = []

        def sync() -> None:  # a new replica of the same master: its full resync
            fresh.append(RedisServer(workdir, "long-fresh"))
            fresh[0].client.replicaof("127.0.0.1", master.port)
            wait_for(fresh[0].link_up, SETTLE_TIMEOUT, "redis full resync", 0.001)

        try:
            during, took = during_sync(lambda i: write(len(writes) - 1 - i), lambda key: get(key) is not None, sync)
        finally:
            for server in fresh:
                server.stop()
        print(f"  a full resync of a new replica took {took * 1e3:.0f} ms (its server's start included)")
        return steady, report("Redis, writes during it", during)
    finally:
        for server in (replica, master):
            if server is not None:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200_000, help="documents in the replicated database")
    parser.add_argument("--seconds", type=float, default=45.0, help="how long to write (a check runs every 30 s)")
    parser.add_argument("--every", type=float, default=0.01, help="seconds between two writes")
    options = parser.parse_args()
    documents = make_documents(options.docs)
    writes = make_documents(int(options.seconds / options.every) + 10 + 5000, offset=options.docs)
    workdir = tempfile.mkdtemp(prefix="pynndb-bench-long-")
    try:
        print(build_line())
        print(f"{options.docs:,} documents, one write every {options.every * 1e3:g} ms for {options.seconds:g} s")
        ours = pynndb_run(os.path.join(workdir, "pynndb"), documents, writes, options)
        theirs = redis_run(workdir, documents, writes, options) if shutil.which("redis-server") else None
        if theirs is None:
            print("  SKIP Redis: redis-server is not installed")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nmetric                              pynndb        Redis   ratio")
    for phase, title in ((0, "steady"), (1, "during a sync")):
        for name, index in (("lag p50", 0), ("lag p99", 1), ("lag max", 2)):
            mine = ours[phase][index]
            other = f"{theirs[phase][index] * 1e3:9.3f} ms  {mine / theirs[phase][index]:5.2f}x" if theirs else "  -"
            print(f"{title + ', ' + name:30s} {mine * 1e3:9.3f} ms {other}")


if __name__ == "__main__":
    main()
