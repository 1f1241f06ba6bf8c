"""Per-call append with 3 indexes, block by block: pynndb, raw py-lmdb + orjson and (when its source is given)
PyNNDB v1 take turns, and each round of blocks gives one ratio of each pair. On a shared machine this is the
steadiest figure for the write path: storage.py measures each engine once a run, seconds apart, and its wall-clock
ratios for the same row moved by ±20 % between runs (docs/benchmarks.md, Round 19).

The documents, indexes and raw side are storage.py's (PyNNDB v1's benchmark: `{sid}` unique, `{day}` and `{hour}`
with duplicates; raw writes the same keys with the same LMDB settings). v1 runs at its defaults in a child process
(its package is also called pynndb: benchmarks/v1_engine.py --blocks), which times its own blocks; the order of the
three engines turns every round. Figures: CPU time (process) and wall time a call, medians over the rounds, and the
median of the per-round ratios with their quartiles.
Run: ``python benchmarks/append_cpu.py [--blocks N] [--size N] [--v1 PATH [--v1-python PY]]`` (or env
``PYNNDB_V1`` / ``PYNNDB_V1_PYTHON``, as storage.py); to compare two trees, run it under each tree's
``PYTHONPATH=<tree>/src`` in turn, several times.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from storage import Pynndb, Raw
from v1_engine import session_documents

TARGET_RAW = 0.7  # issue 9: per-call append with 3 indexes >= 0.7x raw
TARGET_V1 = 1.25  # ... and >= 1.25x PyNNDB v1
V1_TIMEOUT = 60.0  # seconds a v1 block may take before the run gives up on it


class V1Blocks:
    """PyNNDB v1 in a child process, appending one block of documents each time it is asked."""

    def __init__(self, path: str, python: str, count: int, size: int) -> None:
        worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "v1_engine.py")
        self.command = [python, worker, "--blocks", path, str(count), str(size)]
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer()  # {"ready": true}

    def _answer(self) -> dict[str, float]:
        assert self.process.stdout is not None
        start = time.monotonic()
        line = self.process.stdout.readline()
        if not line or time.monotonic() - start > V1_TIMEOUT:
            raise SystemExit(f"PyNNDB v1 worker stopped ({' '.join(self.command)})")
        answer: dict[str, float] = json.loads(line)
        return answer

    def block(self) -> tuple[float, float]:
        """(CPU, wall) seconds a call of the next block."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        answer = self._answer()
        return answer["cpu"], answer["wall"]

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def timed(work: Callable[[list[dict[str, Any]]], None], block: list[dict[str, Any]]) -> tuple[float, float]:
    """(CPU, wall) seconds a call of `work` over `block`."""
    cpu, wall = time.process_time(), time.perf_counter()
    work(block)
    return (time.process_time() - cpu) / len(block), (time.perf_counter() - wall) / len(block)


def summary(name: str, ratios: list[float], target: float) -> str:
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    verdict = "PASS" if statistics.median(ratios) >= target else "MISS"
    return (
        f"  {name}: median {statistics.median(ratios):.3f}x (quartiles {quartiles[0]:.3f}–{quartiles[2]:.3f});"
        f" target >= {target}x: {verdict}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=15, help="rounds of blocks (each gives one ratio of each pair)")
    parser.add_argument("--size", type=int, default=2000, help="appends per block")
    parser.add_argument("--v1", default=os.environ.get("PYNNDB_V1"), help="checkout of PyNNDB v1 (env PYNNDB_V1)")
    parser.add_argument(
        "--v1-python",
        default=os.environ.get("PYNNDB_V1_PYTHON", sys.executable),
        help="a Python with lmdb, ujson and bson for v1 (env PYNNDB_V1_PYTHON; default: this one)",
    )
    args = parser.parse_args()
    if args.blocks < 1 or args.size < 1:
        raise SystemExit("--blocks and --size must be at least 1")
    count = 20 + 2 * args.blocks * args.size
    documents = session_documents(count)
    gc.collect()
    gc.freeze()  # the document lists are not garbage: keep the collector from rescanning them in a timed block
    v1 = None
    if args.v1:
        if not os.path.isfile(os.path.join(args.v1, "pynndb", "table.py")):
            raise SystemExit(f"--v1 {args.v1}: not a PyNNDB v1 checkout (no pynndb/table.py)")
        v1 = V1Blocks(os.path.abspath(args.v1), args.v1_python, count, args.size)
    times: dict[str, list[tuple[float, float]]] = {"pynndb": [], "raw": []} | ({"v1": []} if v1 else {})
    with tempfile.TemporaryDirectory(prefix="append-cpu-") as work:
        pynndb, raw = Pynndb(f"{work}/pynndb"), Raw(f"{work}/raw")
        try:
            pynndb.append_sessions(documents[:10])  # the table and its indexes exist before the first timed block
            raw.append_sessions(documents[10:20])
            blocks = [documents[i : i + args.size] for i in range(20, count - args.size + 1, args.size)]
            for number, (mine, other) in enumerate(zip(blocks[0::2], blocks[1::2], strict=False)):
                turns: list[tuple[str, Callable[[], tuple[float, float]]]] = [
                    ("pynndb", lambda mine=mine: timed(pynndb.append_sessions, [dict(doc) for doc in mine])),
                    ("raw", lambda other=other: timed(raw.append_sessions, [dict(doc) for doc in other])),
                ]
                if v1 is not None:
                    turns.append(("v1", v1.block))
                shift = number % len(turns)  # each engine goes first, second, third in turn
                for name, turn in turns[shift:] + turns[:shift]:
                    times[name].append(turn())
        finally:
            pynndb.close()
            raw.close()
            if v1 is not None:
                v1.close()
    print(f"per-call append, 3 indexes, {len(times['pynndb'])} rounds of blocks of {args.size}")
    for name, measured in times.items():
        cpu = statistics.median(each[0] for each in measured) * 1e6
        wall = statistics.median(each[1] for each in measured) * 1e6
        print(f"  {name}: {cpu:.2f} µs CPU, {wall:.2f} µs wall a call")
    ours = times["pynndb"]

    def ratios(other: str, kind: int) -> list[float]:
        """Per round: the other engine's time a call ÷ pynndb's (pynndb's calls a second ÷ the other's)."""
        return [theirs[kind] / mine[kind] for mine, theirs in zip(ours, times[other], strict=True)]

    print(summary("pynndb ÷ raw (calls a second), CPU time", ratios("raw", 0), TARGET_RAW))
    if v1 is None:
        print("  PyNNDB v1 skipped: give a checkout of oddjobz/pynndb with --v1 PATH or env PYNNDB_V1")
        return
    print(summary("pynndb ÷ v1 (calls a second), CPU time", ratios("v1", 0), TARGET_V1))
    print(summary("pynndb ÷ v1 (calls a second), wall time", ratios("v1", 1), TARGET_V1))


if __name__ == "__main__":
    main()
