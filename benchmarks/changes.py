"""Change-feed benchmark: delivery latency from a commit in one process to the change in another, and feed
throughput against a plain scan of the same documents.

Latency is a read-your-write loop with no pauses: the writer appends one document, the consumer process (iterating
`Database.changes`) stamps its arrival and acknowledges over a pipe, and the writer appends the next at once.
One-way latency = arrival stamp - the writer's stamp taken just before `append` (both CLOCK_MONOTONIC). The floor
beside it is the same loop where the writer wakes the consumer with a byte on a pipe (no database at all).
Throughput reads the whole journal with `changes(since=0, timeout=0)` against `find()` of the same documents.
Run: ``python benchmarks/changes.py [--quick] [--runs N]`` (under a minute; figures are medians of the runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from common import make_documents, percentiles

from pynndb import Manager

CONSUMER = """
import os, sys, time
mode, path, acks = sys.argv[1], sys.argv[2], int(sys.argv[3])
out = os.fdopen(1, "w", buffering=1)
if mode == "pipe":
    wake = int(sys.argv[4])
    out.write("ready\\n")
    while True:
        data = os.read(wake, 64)
        now = time.perf_counter()
        if not data:
            break
        out.write(f"{now}\\n")
else:
    from pynndb import Manager
    with Manager() as manager:
        db = manager.database("d", path)
        feed = db.changes(timeout=30)
        out.write("ready\\n")
        for change in feed:
            now = time.perf_counter()
            out.write(f"{now}\\n")
            if change.doc is not None and change.doc.get("last"):
                break
"""


def latency(path: str, mode: str, samples: int, writemap: bool) -> tuple[float, float]:
    """(p50, p99) one-way milliseconds over `samples` back-to-back round trips."""
    read_end, write_end = os.pipe()
    consumer = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, mode, path, str(samples), str(read_end)],
        stdout=subprocess.PIPE,
        text=True,
        pass_fds=(read_end,),
    )
    os.close(read_end)
    assert consumer.stdout is not None
    delays: list[float] = []
    with Manager() as manager:
        table = manager.database("d", path, config={"replication": True, "writemap": writemap}).table("t")
        assert consumer.stdout.readline().strip() == "ready"
        for number in range(samples + 100):  # the first 100 warm up
            last = number == samples + 99
            sent = time.perf_counter()
            if mode == "pipe":
                os.write(write_end, b"\x01")
            else:
                table.append({"n": number, "last": last})
            arrived = float(consumer.stdout.readline())
            if number >= 100:
                delays.append((arrived - sent) * 1000)
    os.close(write_end)
    consumer.wait(30)
    return percentiles(delays)


def throughput(path: str, count: int, per_transaction: int) -> tuple[float, float]:
    """(changes/s of the feed, documents/s of a scan) over `count` documents appended `per_transaction` at a time."""
    with Manager() as manager:
        db = manager.database("d", path, config={"replication": True})
        table = db.table("t")
        documents = make_documents(count)
        for start in range(0, count, per_transaction):
            table.append_many(documents[start : start + per_transaction])
        started = time.perf_counter()
        fed = sum(1 for _ in db.changes(since=0, timeout=0))
        feed_rate = fed / (time.perf_counter() - started)
        started = time.perf_counter()
        scanned = sum(1 for _ in table.find())
        scan_rate = scanned / (time.perf_counter() - started)
        assert fed == scanned == count
        return feed_rate, scan_rate


def fresh(root: str, name: str) -> str:
    path = os.path.join(root, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and documents")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    samples = 500 if args.quick else 2000
    count = 20_000 if args.quick else 100_000
    root = tempfile.mkdtemp(prefix="bench-changes-")
    results: dict[str, list[Any]] = {}
    try:
        for run in range(args.runs):
            for label, mode, writemap in [
                ("pipe floor", "pipe", False),
                ("feed", "feed", False),
                ("feed writemap", "feed", True),
            ]:
                path = fresh(root, f"latency-{run}-{label.replace(' ', '-')}")
                os.makedirs(path, exist_ok=True)
                results.setdefault(label, []).append(latency(path, mode, samples, writemap))
            for label, per in [("batches of 1000", 1000), ("one per commit", 1)]:
                n = count if per > 1 else count // 5
                results.setdefault(label, []).append(throughput(fresh(root, f"scan-{run}-{per}"), n, per))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def median(label: str, position: int) -> float:
        return statistics.median(result[position] for result in results[label])

    floor = median("pipe floor", 0)
    print(
        f"change-feed delivery latency, commit in one process -> change in another ({samples} back-to-back "
        f"round trips, medians of {args.runs} runs)"
    )
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}{'p50 / pipe floor':>18}")
    for label in ("pipe floor", "feed", "feed writemap"):
        print(f"{label:24}{median(label, 0):10.3f}{median(label, 1):10.3f}{median(label, 0) / floor:17.1f}x")
    print(f"\nfeed throughput vs a scan of the same documents ({count:,} documents; one per commit: {count // 5:,})")
    print(f"{'':24}{'feed/s':>12}{'scan/s':>12}{'feed / scan':>13}")
    for label in ("batches of 1000", "one per commit"):
        feed_rate, scan_rate = median(label, 0), median(label, 1)
        print(f"{label:24}{feed_rate:12,.0f}{scan_rate:12,.0f}{feed_rate / scan_rate:12.2f}x")


if __name__ == "__main__":
    main()
