"""Worker programs run as separate processes by test_processes.py: `python process_workers.py COMMAND PATH ...`.

Each prints one JSON line per event on stdout (flushed), so the parent can follow along.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from pynndb import Database, Manager


def say(**message: Any) -> None:
    print(json.dumps(message), flush=True)


def open_events(path: str) -> tuple[Manager, Database]:
    manager = Manager()
    db = manager.database("events", path)
    table = db.table("events")
    table.ensure("by_serial", "{serial}")
    table.ensure("by_writer", "{writer}", duplicates=True)
    db.table("audit")
    return manager, db


def append(path: str, writer: str, count: str) -> None:
    """Append `count` records, one transaction each."""
    manager, db = open_events(path)
    table = db.table("events")
    say(event="ready")
    for number in range(int(count)):
        table.append({"writer": writer, "serial": f"{writer}-{number:06d}", "n": number})
    say(event="done", count=int(count))
    manager.close()


def crash_writer(path: str) -> None:
    """Write forever (bounded by the parent's kill): each transaction appends to two tables; report its keys."""
    manager, db = open_events(path)
    events, audit = db.table("events"), db.table("audit")
    for number in range(1_000_000):
        with db.write_transaction() as txn:
            doc = events.append({"writer": "crash", "serial": f"crash-{number:07d}", "n": number}, txn=txn)
            audit.append({"event": doc.key, "n": number}, txn=txn)
            if number % 10 == 9:
                first = events.seek_one("by_serial", {"serial": f"crash-{number - 9:07d}"}, txn=txn)
                first["touched"] = True
                events.save(first, txn=txn)
        say(committed=doc.key, n=number)
    manager.close()


def pairs(path: str, count: str) -> None:
    """Append `count` pairs (events + audit) in one transaction each, keeping records(events) == records(audit)."""
    manager, db = open_events(path)
    events, audit = db.table("events"), db.table("audit")
    for number in range(int(count)):
        with db.write_transaction() as txn:
            doc = events.append({"writer": "pairs", "serial": f"pairs-{number:06d}", "n": number}, txn=txn)
            audit.append({"event": doc.key, "n": number}, txn=txn)
    say(event="done")
    manager.close()


def snapshot_reader(path: str, target: str) -> None:
    """Read both tables in one read transaction at a time until `target` events are seen; they must agree."""
    manager, db = open_events(path)
    events, audit = db.table("events"), db.table("audit")
    say(event="ready")
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with db.read_transaction() as txn:
            count = events.records(txn=txn)
            listed = sum(1 for _ in events.find("by_serial", txn=txn))
            audited = {doc["event"] for doc in audit.find(txn=txn)}
            keys = {doc.key for doc in events.find(txn=txn)}
            if not (count == listed == len(audited) and audited == keys):
                say(event="inconsistent", count=count, listed=listed, audited=len(audited))
                return
        seen.append(count)
        if count >= int(target):
            break
    say(event="consistent", distinct=len(set(seen)), last=seen[-1], monotonic=seen == sorted(seen))
    manager.close()


def held_snapshot(path: str) -> None:
    """Open a read transaction, report what it sees, wait for the parent, then report again from the same one."""
    manager, db = open_events(path)
    events = db.table("events")
    with db.read_transaction() as txn:
        say(event="before", count=events.records(txn=txn))
        sys.stdin.readline()
        keys = [doc.key for doc in events.find(txn=txn)]
        say(event="after", count=events.records(txn=txn), listed=len(keys))
    say(event="fresh", count=events.records())
    manager.close()


def queries(db: Database) -> dict[str, Any]:
    """Every kind of query on the events table, as JSON-able results."""
    table = db.table("events")

    def keys(docs: Any) -> list[str]:
        return [doc.key for doc in docs]

    pages: list[list[str]] = []
    context = None
    for _ in range(1000):
        page = list(table.filter("by_writer", page_size=7, context=context, reverse=True))
        if not page:
            break
        pages.append([result.doc.key for result in page])
        context = page[-1]
    return {
        "tables": db.tables(),
        "indexes": table.indexes(),
        "records": table.records(),
        "find": [(doc.key, doc.doc) for doc in table.find()],
        "by_serial": keys(table.find("by_serial")),
        "by_writer": keys(table.find("by_writer")),
        "seek": keys(table.seek("by_writer", {"writer": "b"})),
        "seek_one": table.seek_one("by_serial", {"serial": "a-000003"}).key,
        "range": keys(table.range("by_serial", {"serial": "a-000005"}, {"serial": "b-000002"}, inclusive=False)),
        "filter_pages": pages,
        "first": [table.first().key, table.first("by_writer").key],
        "last": [table.last().key, table.last("by_serial").key],
        "audit": [(doc.key, doc.doc) for doc in db.table("audit").find()],
    }


def dump(path: str) -> None:
    """Print the results of every query."""
    manager, db = open_events(path)
    say(**queries(db))
    manager.close()


def check(path: str) -> None:
    """Report records and whether every index agrees with the data."""
    manager, db = open_events(path)
    events = db.table("events")
    docs = {doc.key: doc for doc in events.find()}
    by_serial = [doc.key for doc in events.find("by_serial")]
    expected_serial = [doc.key for doc in sorted(docs.values(), key=lambda d: d["serial"])]
    by_writer = sorted(doc.key for doc in events.find("by_writer"))
    say(
        keys=sorted(docs),
        audit=sorted(doc["event"] for doc in db.table("audit").find()),
        serial_index_ok=by_serial == expected_serial,
        writer_index_ok=by_writer == sorted(docs),
        touched=sorted(doc["n"] for doc in docs.values() if doc.get("touched")),
    )
    manager.close()


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
