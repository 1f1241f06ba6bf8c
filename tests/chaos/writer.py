"""A writer process for the chaos harness: appends, saves and deletes documents in its own database.

`python writer.py NAME PATH LOG SEED RATE [MAX_ENTRIES [SHARED]]` (SHARED: how many keys it shares with the other
side of a two-way pair). Before each transaction it logs an attempt line, after
the commit returned an ack line, each fsync'd. Restarted after a SIGKILL, it settles the attempt in doubt by
reading its database (``recovered`` or ``aborted``) and resumes from there. SIGTERM ends it after a transaction;
SIGUSR1 makes it write a burst at full speed (to outrun a small journal retention).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
from typing import Any

from pynndb import Doc, Manager

TABLE = "docs"
SHARED = "shared-"  # keys both sides of a two-way pair write
BURST = 1200  # transactions at full speed on SIGUSR1: past any small journal retention (trims every 512)


class Log:
    """Append-only JSON lines, each written and fsync'd before the call returns."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the process's life)

    def write(self, **record: Any) -> None:
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())


def replay(path: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None, int]:
    """(key -> value of the documents that exist, the attempt in doubt or None, the next serial) from a log."""
    present: dict[str, dict[str, Any]] = {}
    attempts: dict[int, dict[str, Any]] = {}
    serial = 0
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            for line in file:
                if not line.endswith("\n"):
                    break  # torn by a kill: that attempt never reached its commit
                record = json.loads(line)
                if record["t"] == "try":
                    attempts[record["id"]] = record
                    serial = max(serial, record["id"] + 1)
                elif record["t"] in ("ack", "recovered"):
                    apply(present, attempts.pop(record["id"])["ops"])
                else:
                    attempts.pop(record["id"], None)
    doubt = max(attempts.values(), key=lambda record: record["id"]) if attempts else None
    return present, doubt, serial


def apply(present: dict[str, dict[str, Any]], ops: list[list[Any]]) -> None:
    for kind, key, value in ops:
        if kind == "delete":
            present.pop(key, None)
        else:
            present[key] = value


def committed(table: Any, ops: list[list[Any]]) -> bool:
    """Whether the transaction in doubt reached the database (its last op decides: the ops were atomic)."""
    kind, key, value = ops[-1]
    doc = table.get(key)
    if kind == "delete":
        return doc is None
    return doc is not None and doc.doc == value


def plan(
    rng: random.Random, name: str, serial: int, present: dict[str, dict[str, Any]], shared: int = 0
) -> list[list[Any]]:
    """One to three ops on distinct keys: appends mostly, saves and deletes of documents that exist. With `shared`,
    sometimes first a `put` of one of `shared` keys that the other side of a two-way pair writes too (a conflict
    that last-writer-wins settles); it is never the last op, which decides a transaction in doubt."""
    ops: list[list[Any]] = []
    used: set[str] = set()
    keys = sorted(key for key in present if not key.startswith(SHARED))
    if shared and rng.random() < 0.2:
        key = f"{SHARED}{rng.randrange(shared)}"
        ops.append(["put", key, {"w": name, "n": serial, "s": -1, "x": rng.randint(0, 1 << 30)}])
        ops.append(["append", f"{name}-{serial:07d}-p", {"w": name, "n": serial, "s": -2}])
        used.update((key, ops[-1][1]))
    for step in range(rng.randint(1, 3)):
        roll = rng.random()
        value = {"w": name, "n": serial, "s": step, "x": rng.randint(0, 1 << 30)}
        if roll < 0.6 or len(keys) < 5:
            key = f"{name}-{serial:07d}-{step}"
            ops.append(["append", key, value])
        else:
            key = rng.choice(keys)
            if key in used:
                continue
            ops.append(["delete" if roll > 0.85 else "save", key, None if roll > 0.85 else value])
        used.add(key)
    return ops


def main(name: str, path: str, log_path: str, seed: str, rate: str, max_entries: str = "0", shared: str = "0") -> None:
    stopping = False
    burst = 0

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    def speed_up(*_: Any) -> None:
        nonlocal burst
        burst = BURST

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR1, speed_up)
    config: dict[str, Any] = {"replication": True}
    if int(max_entries):
        config["journal"] = {"max_entries": int(max_entries)}
    manager = Manager()
    db = manager.database(name, path, config=config)
    table = db.table(TABLE)
    log = Log(log_path)
    present, doubt, serial = replay(log_path)
    if doubt is not None:
        settled = committed(table, doubt["ops"])
        log.write(t="recovered" if settled else "aborted", id=doubt["id"])
        if settled:
            apply(present, doubt["ops"])
    rng = random.Random(f"{seed}:{name}:{serial}")
    print(json.dumps({"ready": True, "serial": serial}), flush=True)
    period = 1.0 / float(rate)
    next_at = time.monotonic()
    while not stopping:
        ops = plan(rng, name, serial, present, int(shared))
        log.write(t="try", id=serial, ops=ops)
        with db.write_transaction() as txn:
            for kind, key, value in ops:
                if kind == "append" or kind == "put" and table.get(key, txn=txn) is None:
                    table.append(Doc(value, oid=key), txn=txn)
                elif kind == "put" or kind == "save":
                    table.save(Doc(value, oid=key), txn=txn)
                else:
                    table.delete(key, txn=txn)
                if not burst:
                    time.sleep(rng.random() * 0.004)  # keep transactions open a little: kills land inside them
        log.write(t="ack", id=serial)
        apply(present, ops)
        serial += 1
        if burst:
            burst -= 1
            next_at = time.monotonic()
            continue
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()
    manager.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
