"""Journal format 3 (entries of inserts carry their index keys): what it saves a replica, what it costs the writer.

In one process, CPU time (`time.process_time`), documents like the other benchmarks' with one duplicates index on
name. For entries of k inserts each (k = 1, 4, 8, 1000), applied so many entries a transaction: a one-way
replica's apply path (the applier and the storage seam a node runs, without the mesh) with the keys carried and
without them, and the writer's `append_many` with and without recording them. The two variants of each figure
alternate, `--runs` times; medians are printed, and the ratio keys / no keys. Entries of fewer than KEYED_MIN
inserts carry no keys by default: here both are forced, to show why (the threshold).
Run: ``python benchmarks/apply_keys.py [--docs N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common import make_documents

from pynndb import Manager
from pynndb.core import columns, entries, journal_writes, writes
from pynndb.core import table as table_module
from pynndb.core.entries import KEYED_MIN
from pynndb.core.storage import Storage
from pynndb.replication.appliers import OneWay

# (inserts an entry, entries a replica transaction): a node applies what has arrived in one transaction (up to 500
# entries), so a burst of single inserts comes as ~100 entries, and a backlog of batches as one or many.
SIZES = ((1, 100), (4, 25), (8, 12), (1000, 1), (1000, 50))


# Every module that holds a copy of the thresholds (each imports them by name): all must follow the setting.
KEYED_HOLDERS = (entries, journal_writes, writes, columns)
BULK_HOLDERS = (writes, table_module)


@contextmanager
def keyed_from(count: int) -> Iterator[None]:
    """Entries carry their keys from `count` inserts on (the writer records them from calls of that many)."""
    for module, name in [(module, "KEYED_MIN") for module in KEYED_HOLDERS] + [(m, "BULK_MIN") for m in BULK_HOLDERS]:
        if not hasattr(module, name):
            raise SystemExit(f"{module.__name__} has no {name}: update apply_keys.py's holders")
    saved = [module.KEYED_MIN for module in KEYED_HOLDERS], [module.BULK_MIN for module in BULK_HOLDERS]
    bulk = min(count, writes.BULK_MIN)  # (keys are recorded only by a call formatted in one go)
    for module in KEYED_HOLDERS:
        module.KEYED_MIN = count
    for module in BULK_HOLDERS:
        module.BULK_MIN = bulk
    try:
        yield
    finally:
        for module, value in zip(KEYED_HOLDERS, saved[0], strict=True):
            module.KEYED_MIN = value
        for module, value in zip(BULK_HOLDERS, saved[1], strict=True):
            module.BULK_MIN = value


def one_run(workdir: str, documents: list[dict[str, Any]], size: int, per: int, keys: bool) -> tuple[float, float]:
    """(writer µs a document, replica apply µs a document) for entries of `size` inserts applied `per` entries a
    transaction, keys carried or not."""
    path = tempfile.mkdtemp(dir=workdir)
    manager = Manager()
    try:
        with keyed_from(1 if keys else 1 << 30):
            source = manager.database("source", os.path.join(path, "source"), config={"replication": True})
            table = source.table("bench")
            table.ensure("by_name", "{name}", duplicates=True)
            start = source.replication.sequence + 1
            began = time.process_time()
            for offset in range(0, len(documents), size):
                table.append_many(documents[offset : offset + size])
            written = time.process_time() - began
        entries = source.replication.entries(1, 1 << 30, 1 << 40)
        replica = manager.database("replica", os.path.join(path, "replica"), config={"replication": True})
        storage = Storage(replica)
        uuid = source.replication.uuid
        applier = OneWay(source.replication.uuid_bytes)
        own = replica.replication.uuid

        def apply(batch: list[tuple[int, int, bytes]]) -> None:
            for tx in storage.transactions(uuid):
                with tx:
                    applier.apply_entries(tx, batch, own, None)
                    tx.set_mark(uuid, batch[-1][0])

        first = [entry for entry in entries if entry[0] < start]  # the table and its index
        apply(first)
        rest = entries[len(first) :]
        began = time.process_time()
        for position in range(0, len(rest), per):
            apply(rest[position : position + per])
        applied = time.process_time() - began
        if len(replica["bench"]) != len(documents):
            raise RuntimeError(f"the replica holds {len(replica['bench'])} documents, not {len(documents)}")
        if keys and size > 1 and not applier.stats["keyed_documents"]:
            raise RuntimeError("no document was applied with carried keys")
        return written / len(documents) * 1e6, applied / len(documents) * 1e6
    finally:
        manager.close()
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000, help="documents per measure")
    parser.add_argument("--runs", type=int, default=5, help="alternating runs of each variant (medians)")
    options = parser.parse_args()
    documents = make_documents(options.docs)
    workdir = tempfile.mkdtemp(prefix="pynndb-bench-apply-keys-")
    print(f"{options.docs:,} documents, one index, medians of {options.runs} alternating runs, CPU µs a document")
    print(f"(by default entries carry keys from {KEYED_MIN} inserts on; here forced on or off at every size)\n")
    columns = ("inserts an entry", "entries a txn", "apply, keys", "no keys", "ratio", "write, keys", "no keys")
    print("  ".join(f"{name:>{width}}" for name, width in zip(columns, (16, 13, 11, 8, 6, 11, 8), strict=True)))
    try:
        for size, per in SIZES:
            figures: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            for _run in range(options.runs):
                for keys in (True, False):
                    figures[keys].append(one_run(workdir, documents, size, per, keys))
            write = {keys: statistics.median(run[0] for run in figures[keys]) for keys in figures}
            apply = {keys: statistics.median(run[1] for run in figures[keys]) for keys in figures}
            print(
                f"{size:>16}  {per:>13}  {apply[True]:>11.2f}  {apply[False]:>8.2f}"
                f"  {apply[True] / apply[False]:>5.2f}x  {write[True]:>11.2f}  {write[False]:>8.2f}",
                flush=True,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
