"""The set checker: every acknowledged write, classified in every database that should hold it.

Per writer and per database holding its data: lost (acknowledged, missing), duplicated (one write under two keys),
phantom (never attempted, or by a writer whose data does not belong there), stale (a saved key whose value is not
the last acknowledged one, or a deleted key that came back). Pairs that should be equal must have `diff == {}`,
and the aggregation must equal the union of its sources. Run it after every process has stopped.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pynndb import Manager
from pynndb.replication import diff
from pynndb.replication.digest import table_content
from tests.chaos.writer import SHARED, TABLE, apply


@dataclass
class Expected:
    """What a writer's log says its database must hold; a transaction in doubt may have gone either way."""

    present: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempted: dict[str, list[Any]] = field(default_factory=dict)  # key -> every value attempted (None: delete)
    acknowledged: int = 0  # transactions
    operations: int = 0
    doubt: list[list[Any]] | None = None
    settled: Counter[str] = field(default_factory=Counter)  # attempts in doubt at a kill: recovered / aborted


def expected(journal: Path) -> Expected:
    result = Expected()
    attempts: dict[int, list[list[Any]]] = {}
    with open(journal, encoding="utf-8") as file:
        for line in file:
            if not line.endswith("\n"):
                break
            record = json.loads(line)
            if record["t"] == "try":
                attempts[record["id"]] = record["ops"]
                for _kind, key, value in record["ops"]:
                    result.attempted.setdefault(key, []).append(value)
            elif record["t"] in ("ack", "recovered"):
                ops = attempts.pop(record["id"])
                apply(result.present, ops)
                result.acknowledged += 1
                result.operations += len(ops)
            else:
                attempts.pop(record["id"], None)
            if record["t"] in ("recovered", "aborted"):
                result.settled[record["t"]] += 1
    if attempts:
        result.doubt = attempts[max(attempts)]
    return result


@dataclass
class Counts:
    lost: int = 0
    duplicated: int = 0
    phantom: int = 0
    stale: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, kind: str, example: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {example}")


def classify(name: str, documents: dict[str, Any], writers: dict[str, Expected], counts: Counts) -> None:
    """Count what database `name` (its documents) gets wrong about the writers whose data it should hold."""
    owners = {key: writer for writer, log in writers.items() for key in log.attempted}
    values: Counter[str] = Counter()
    for key, value in documents.items():
        values[json.dumps(value, sort_keys=True)] += 1
        if key.startswith(SHARED):  # written by both sides of a pair: any value one of them wrote may win
            if not any(value in log.attempted.get(key, []) for log in writers.values()):
                counts.add("phantom", f"{name}: shared {key} holds a value neither side wrote: {value}")
            continue
        owner = owners.get(key)
        if owner is None:
            counts.add("phantom", f"{name}: {key} was never written by {sorted(writers)}")
            continue
        log = writers[owner]
        wanted = log.present.get(key)
        doubt = {op[1]: op[2] for op in log.doubt or []}
        if value != wanted and not (key in doubt and value == doubt[key]):
            if value not in log.attempted[key]:
                counts.add("phantom", f"{name}: {key} holds a value never written: {value}")
            else:
                counts.add("stale", f"{name}: {key} is {value}, last acknowledged {wanted}")
    for writer, log in writers.items():
        doubt_keys = {op[1] for op in log.doubt or []}
        for key in log.present:
            if key not in documents and key not in doubt_keys:  # shared keys are never deleted: same rule
                counts.add("lost", f"{name}: {key} (writer {writer}) is missing")
    for text, number in values.items():
        if number > 1:
            counts.add("duplicated", f"{name}: {text} is stored {number} times")


def check(
    paths: dict[str, str],
    journals: dict[str, Path],
    holds: dict[str, list[str]],
    pairs: list[tuple[str, str]],
    aggregations: dict[str, list[str]],
) -> dict[str, Any]:
    """Check every database in `holds` (name -> writers whose data it holds); returns the checker's figures."""
    logs = {writer: expected(path) for writer, path in journals.items()}
    counts = Counts()
    contents: dict[str, dict[str, Any]] = {}
    diverged: list[str] = []
    with Manager() as manager:
        databases = {name: manager.database(name, path) for name, path in paths.items()}
        for name, db in databases.items():
            contents[name] = table_content(db, TABLE).get("documents", {})
        for name, writers in holds.items():
            classify(name, contents[name], {writer: logs[writer] for writer in writers}, counts)
        for left, right in pairs:
            report = diff(databases[left], databases[right])
            if report:
                diverged.append(f"{left} != {right}: {str(report)[:300]}")
    for target, sources in aggregations.items():
        union: dict[str, Any] = {}
        for source in sources:
            union.update(contents[source])
        if union != contents[target]:
            missing = sorted(set(union) - set(contents[target]))[:5]
            extra = sorted(set(contents[target]) - set(union))[:5]
            diverged.append(f"{target} != union of {sources}: missing {missing}, extra {extra}")
    return {
        "writes_acknowledged": sum(log.acknowledged for log in logs.values()),
        "operations_acknowledged": sum(log.operations for log in logs.values()),
        "in_doubt_at_end": sum(1 for log in logs.values() if log.doubt),
        "kills_in_doubt": dict(sum((log.settled for log in logs.values()), Counter())),
        "lost": counts.lost,
        "duplicated": counts.duplicated,
        "phantom": counts.phantom,
        "stale": counts.stale,
        "diverged_pairs": len(diverged),
        "examples": counts.examples + diverged,
        "documents": {name: len(documents) for name, documents in contents.items()},
    }
