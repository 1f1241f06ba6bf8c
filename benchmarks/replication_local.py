"""Replication benchmark (no network): journaling overhead on appends, apply throughput on a replica, snapshot rate.

Documents like the storage benchmark's (about 120 bytes of JSON) with one duplicates index on name. Each figure is
the median of several runs; ratios compare with plain appends measured in the same run. The per-call rows take turns
block by block between a database with and one without a journal, and give CPU time (the ratio is the median of the
blocks' ratios). The "burst" row is what a
replica node does with a burst of one-document commits: wire messages of BURST_MESSAGE entries decoded and given to
`Replica.receive`, one transaction a message (its CPU is most of a burst's lag, docs/benchmarks.md, Round 14); run it
again with ``PYNNDB_PURE=1`` to compare the compiled build with the Python sources.
Run: ``python benchmarks/replication_local.py [--quick] [--snapshot-docs N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from common import make_documents

from pynndb import Database, Manager, _native
from pynndb.replication import LocalReplicator, Replica, decode, encode, snapshot
from pynndb.replication.source import Publisher

TARGET_RATIO = 0.7
PER_CALL_BLOCK = 500  # appends a block of the per-call rows (the two databases take turns block by block)
BURST_MESSAGE = 17  # entries a message in a burst of 100 one-document commits through node processes (~6 messages)


def timed(work: Callable[[], Any]) -> float:
    """Seconds taken by `work()` (after a collection, so earlier garbage is not billed to it)."""
    gc.collect()
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


@contextmanager
def databases(*names: str, replication: tuple[bool, ...] | None = None) -> Iterator[list[Database]]:
    """Fresh databases in a temporary directory, each with table 'people' indexed on name; removed afterwards."""
    directory = tempfile.mkdtemp(prefix="bench-replication-")
    manager = Manager()
    try:
        opened = []
        for number, name in enumerate(names):
            enabled = True if replication is None else replication[number]
            db = manager.database(name, f"{directory}/{name}", config={"replication": enabled})
            db.table("people").ensure("by_name", "{name}", duplicates=True)
            opened.append(db)
        yield opened
    finally:
        manager.close()
        shutil.rmtree(directory, ignore_errors=True)


def append_in_transactions(db: Database, docs: list[dict[str, Any]], per_txn: int) -> None:
    table = db["people"]
    append = table.append
    for start in range(0, len(docs), per_txn):
        with db.write_transaction() as txn:
            for doc in docs[start : start + per_txn]:
                append(doc, txn=txn)


def append_each(db: Database, docs: list[dict[str, Any]]) -> None:
    append = db["people"].append
    for doc in docs:
        append(doc)


class Results:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, float, str]] = []

    def add(self, label: str, count: int, seconds: list[float], note: str = "") -> float:
        rate = count / statistics.median(seconds)
        self.rows.append((label, count, rate, note))
        return rate

    def print(self) -> None:
        width = max(len(label) for label, *_ in self.rows)
        print(f"{'measure':<{width}}  {'docs':>9}  {'docs/s':>11}  ratio / note")
        print("-" * (width + 50))
        for label, count, rate, note in self.rows:
            print(f"{label:<{width}}  {count:>9,}  {rate:>11,.0f}  {note}")


def ratio_note(rate: float, baseline: float) -> str:
    ratio = rate / baseline
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    return f"{ratio:.2f}x ({verdict}, target >= {TARGET_RATIO}x)"


def bench_journal_overhead(results: Results, bulk: int, each: int, runs: int) -> None:
    """Append throughput with replication off and on: one bulk transaction, and one transaction per call."""
    docs = make_documents(bulk)
    samples: dict[bool, list[float]] = {False: [], True: []}
    for _run in range(runs):
        for enabled in (False, True):  # interleaved, so that drift in the machine's speed hits both alike
            with databases("db", replication=(enabled,)) as (db,):
                samples[enabled].append(timed(lambda db=db: append_in_transactions(db, docs, len(docs))))
    plain = results.add("append, bulk (1 txn), replication off", len(docs), samples[False])
    journaled = results.add("append, bulk (1 txn), replication on", len(docs), samples[True])
    results.rows[-1] = (*results.rows[-1][:3], ratio_note(journaled, plain))
    bench_per_call_overhead(results, each, runs)


def bench_per_call_overhead(results: Results, each: int, runs: int) -> None:
    """One transaction per call, replication off and on: both databases open at once, taking turns block by block
    (CPU time of this thread), so that the machine's drift, which moves a run of seconds by tens of percent on a
    shared VM, hits both alike; the ratio is the median of the blocks' ratios."""
    docs = make_documents(each)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    ratios: list[float] = []
    for _run in range(runs):
        with databases("off", "on", replication=(False, True)) as opened:
            for number, start in enumerate(range(0, each, PER_CALL_BLOCK)):
                block = docs[start : start + PER_CALL_BLOCK]
                taken: dict[bool, float] = {}
                for enabled in (False, True) if number % 2 == 0 else (True, False):
                    started = time.thread_time()
                    append_each(opened[enabled], block)
                    taken[enabled] = (time.thread_time() - started) / len(block)
                    seconds[enabled].append(taken[enabled])
                ratios.append(taken[False] / taken[True])
    for enabled in (False, True):
        label = f"append, 1 txn per call, replication {'on' if enabled else 'off'}"
        note = ""
        if enabled:
            note = ratio_note(statistics.median(ratios), 1.0) + f"; CPU, median of {len(ratios)} blocks' ratios"
        results.rows.append((label, each * runs, 1 / statistics.median(seconds[enabled]), note))


def bench_apply(results: Results, count: int, per_txn: int, runs: int) -> None:
    """LocalReplicator.sync of a source written in small transactions, and in one big one, vs plain appends."""
    docs = make_documents(count)
    for label, size in ((f"{per_txn} docs per txn", per_txn), ("1 big txn", count)):
        plain_samples, apply_samples = [], []
        for _run in range(runs):
            with databases("plain", replication=(False,)) as (plain,):
                plain_samples.append(timed(lambda plain=plain, size=size: append_in_transactions(plain, docs, size)))
            with databases("source", "target", replication=(True, False)) as (source, target):
                append_in_transactions(source, docs, size)
                replicator = LocalReplicator(source, target)
                apply_samples.append(timed(replicator.sync))
                assert len(target["people"]) == count, "the replica must hold every document"
        baseline = results.add(f"plain append, {label}", count, plain_samples)
        rate = results.add(f"apply on replica (LocalReplicator.sync), {label}", count, apply_samples)
        results.rows[-1] = (*results.rows[-1][:3], ratio_note(rate, baseline))


def bench_burst_apply(results: Results, count: int, runs: int) -> None:
    """One-document entries (a commit each) reaching a replica as wire messages of BURST_MESSAGE entries."""
    docs = make_documents(count)
    plain_samples, apply_samples = [], []
    for _run in range(runs):
        with databases("plain", replication=(False,)) as (plain,):
            plain_samples.append(timed(lambda plain=plain: append_in_transactions(plain, docs, BURST_MESSAGE)))
        with databases("source", "target", replication=(True, False)) as (source, target):
            replica = Replica(target, source.replication.uuid)
            for message in snapshot(source):  # the table and its index, no documents: the replica is then live
                replica.receive(message)
            publisher = Publisher(source, batch_entries=BURST_MESSAGE)
            append_each(source, docs)
            frames = [encode(message) for message in publisher.poll(max_messages=count)]

            def apply(replica: Replica = replica, frames: list[bytes] = frames) -> None:
                for frame in frames:
                    replica.receive(decode(frame))

            apply_samples.append(timed(apply))
            assert replica.hwm == source.replication.sequence and len(target["people"]) == count
    baseline = results.add(f"plain append, {BURST_MESSAGE} docs per txn", count, plain_samples)
    rate = results.add(
        f"apply on replica (Replica.receive), 1-doc entries, {BURST_MESSAGE} a message", count, apply_samples
    )
    results.rows[-1] = (*results.rows[-1][:3], ratio_note(rate, baseline))


def bench_snapshot(results: Results, count: int, runs: int) -> None:
    """A snapshot of `count` documents: generation alone, generation + apply, generation + encode + decode."""
    with databases("source", replication=(True,)) as (source,):
        for start in range(0, count, 100_000):
            append_in_transactions(source, make_documents(min(100_000, count - start), start), 100_000)

        def generate() -> None:
            for _message in snapshot(source):
                pass

        def through_codec() -> None:
            for message in snapshot(source):
                decode(encode(message))

        generation, codec, applied = [], [], []
        for _run in range(runs):
            generation.append(timed(generate))
            codec.append(timed(through_codec))
            with databases("target", replication=(False,)) as (target,):
                replica = Replica(target, source.replication.uuid)

                def apply(replica: Replica = replica) -> None:
                    for message in snapshot(source):
                        replica.receive(message)

                applied.append(timed(apply))
                assert replica.hwm == source.replication.sequence and len(target["people"]) == count
        results.add("snapshot: generation only", count, generation)
        results.add("snapshot: generation + encode + decode (wire codec)", count, codec)
        results.add("snapshot: generation + apply via Replica", count, applied, "the snapshot transfer rate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer runs, for a smoke test")
    parser.add_argument("--snapshot-docs", type=int, default=None, help="documents in the snapshot (default 1M)")
    parser.add_argument("--runs", type=int, default=None, help="runs per measure (the median is reported)")
    options = parser.parse_args()
    runs = options.runs or (2 if options.quick else 5)
    bulk, each, apply_count = (20_000, 5_000, 20_000) if options.quick else (100_000, 20_000, 100_000)
    snapshot_docs = options.snapshot_docs or (100_000 if options.quick else 1_000_000)
    snapshot_runs = options.runs or (1 if options.quick else 3)
    started = time.perf_counter()
    results = Results()
    bench_journal_overhead(results, bulk, each, runs)
    bench_apply(results, apply_count, 100, runs)
    bench_burst_apply(results, each, runs)
    bench_snapshot(results, snapshot_docs, snapshot_runs)
    print(f"pynndb replication, local (medians of {runs} runs; snapshot: {snapshot_runs}); build: {_native.MODE}")
    results.print()
    print(f"total time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
