"""Per-call append with 3 indexes, in CPU time: pynndb and raw py-lmdb + orjson take turns, block by block, in one
process, and each block pair gives a ratio. On a shared machine this is the steadiest figure for judging a change
to the write path: storage.py's wall-clock ratio for the same row moves by ±10 % between runs.

The documents, indexes and raw side are storage.py's (PyNNDB v1's benchmark: `{sid}` unique, `{day}` and `{hour}`
with duplicates; raw writes the same keys with the same LMDB settings).
Run: ``python benchmarks/append_cpu.py [--blocks N] [--size N]``; to compare two trees, run it under each tree's
``PYTHONPATH=<tree>/src`` in turn, several times.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from typing import Any

from storage import Pynndb, Raw
from v1_engine import session_documents

TARGET = 0.7  # issue 9: per-call append with 3 indexes >= 0.7x raw


def cpu_seconds(work: Any, block: list[dict[str, Any]]) -> float:
    start = time.process_time()
    work(block)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=15, help="block pairs (each gives one ratio)")
    parser.add_argument("--size", type=int, default=2000, help="appends per block")
    args = parser.parse_args()
    documents = session_documents(20 + 2 * args.blocks * args.size)
    gc.collect()
    gc.freeze()  # the document lists are not garbage: keep the collector from rescanning them in a timed block
    with tempfile.TemporaryDirectory(prefix="append-cpu-") as work:
        pynndb, raw = Pynndb(f"{work}/pynndb"), Raw(f"{work}/raw")
        try:
            pynndb.append_sessions(documents[:10])  # the table and its indexes exist before the first timed block
            raw.append_sessions(documents[10:20])
            ratios, ours, theirs = [], [], []
            blocks = [documents[i : i + args.size] for i in range(20, len(documents) - args.size + 1, args.size)]
            for mine, other in zip(blocks[0::2], blocks[1::2], strict=False):
                ours.append(cpu_seconds(pynndb.append_sessions, [dict(doc) for doc in mine]) / args.size)
                theirs.append(cpu_seconds(raw.append_sessions, [dict(doc) for doc in other]) / args.size)
                ratios.append(theirs[-1] / ours[-1])
        finally:
            pynndb.close()
            raw.close()
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"per-call append, 3 indexes, CPU time, {len(ratios)} block pairs of {args.size}")
    print(f"  pynndb {statistics.median(ours) * 1e6:.2f} µs, raw {statistics.median(theirs) * 1e6:.2f} µs a call")
    verdict = "PASS" if statistics.median(ratios) >= TARGET else "MISS"
    print(
        f"  ratio to raw: median {statistics.median(ratios):.3f} (quartiles {quartiles[0]:.3f}–{quartiles[2]:.3f});"
        f" target >= {TARGET}x: {verdict}"
    )


if __name__ == "__main__":
    main()
