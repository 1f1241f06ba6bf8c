"""A seeded chaos run of real node and writer processes, then the checker; prints a table and writes JSON.

`python -m tests.chaos.harness --seed S --minutes M [--nodes N]` (or `scripts/chaos`). Phases: start the mesh and
configure replication; inject faults drawn from `random.Random(seed)` while writers write; heal everything and stop
the writers; wait (bounded) for every replica to catch up; corrupt one replica behind its node's back and check the
divergence detector finds it and RESYNC repairs it; stop the nodes; run the set checker.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynndb import Manager
from pynndb.errors import PyNNDBError
from pynndb.replication import diff
from tests.chaos import report
from tests.chaos.checker import check
from tests.chaos.cluster import Cluster
from tests.chaos.faults import Faults
from tests.chaos.monitor import Monitor
from tests.chaos.writer import TABLE

POLL_EVERY = 1.0
TRACEBACK = re.compile(r"^Traceback \(most recent call last\)", re.MULTILINE)


@dataclass
class Settings:
    seed: int
    seconds: float
    nodes: int = 5
    rate: float = 10.0  # transactions per second per writer
    fault_every: tuple[float, float] = (0.5, 3.0)
    max_entries: int = 100  # journal retention of the writers' databases
    converge_within: float = 90.0
    workdir: Path | None = None
    corrupt: bool = True


def run(settings: Settings) -> dict[str, Any]:
    """One chaos run; returns the report (also written to workdir/report.json)."""
    workdir = settings.workdir or Path(tempfile.mkdtemp(prefix=f"pynndb-chaos-{settings.seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(settings.seed)
    cluster = Cluster(workdir, settings.nodes, settings.seed, settings.rate, settings.max_entries)
    monitor = Monitor(cluster)
    faults = Faults(cluster, monitor, rng)
    result: dict[str, Any] = {"seed": settings.seed, "nodes": settings.nodes, "workdir": str(workdir)}
    problems: list[str] = []
    started = time.monotonic()
    try:
        cluster.start()
        faults.note("start", "mesh", f"{settings.nodes} nodes, {len(cluster.writers)} writers")
        fault_phase(settings, cluster, monitor, faults, rng, problems)
        faults.heal_all()
        faults.note("heal", "all")
        for writer in cluster.writers.values():
            code = writer.terminate()
            if code != 0:
                problems.append(f"writer {writer.name} exited with {code} at the end")
        healed = time.monotonic()
        converged = wait_converged(monitor, cluster, settings.converge_within, problems)
        result["converge_seconds"] = round(time.monotonic() - healed, 2) if converged else None
        monitor.poll()
        result["periodic_verifications"] = monitor.verifications()  # before the corruption: no mismatch allowed
        if result["periodic_verifications"].get("mismatches"):
            problems.append(f"the divergence detector found a diverged replica: {result['periodic_verifications']}")
        result["diverged_seen"] = monitor.diverged
        # The evidence, before the corruption step's RESYNC replaces a1: what differs now in every diverged pair.
        result["diverged_content"] = diverged_content(cluster, monitor)
        try:
            result["divergence_detector"] = (
                detect_and_repair(cluster, monitor, faults) if settings.corrupt else "skipped"
            )
        except PyNNDBError as error:
            result["divergence_detector"] = f"error: {error!r}"
        if result["divergence_detector"] not in ("repaired", "skipped"):
            problems.append(f"divergence detector: {result['divergence_detector']}")
        wait_converged(monitor, cluster, settings.converge_within, problems)  # again, after n1's restart
        result["links_down"] = links_down(cluster)
        _done, final = monitor.converged()
        result["stalled_replicas"] = sorted(f"{t}<-{s}" for (t, s), st in final.items() if st["state"] != "live")
        # Why (a replica's own words), so a failed run can be diagnosed from its report alone.
        result["stall_reasons"] = {
            f"{t}<-{s}": {key: st.get(key) for key in ("state", "reason", "hwm", "source_last", "lag_entries")}
            for (t, s), st in final.items()
            if st["state"] != "live"
        }
    finally:
        codes = cluster.close()
    result["duration_seconds"] = round(time.monotonic() - started, 1)
    for label, code in codes.items():
        if code != 0:
            problems.append(f"node {label} exited with {code} on SIGTERM")
    result["tracebacks"] = tracebacks(workdir)
    result.update(
        check(
            cluster.paths,
            {name: writer.journal for name, writer in cluster.writers.items()},
            holds(cluster),
            [("a", "a1"), ("a", "afar"), ("b", "b3"), ("c", "c0"), ("p", "q")],
            {"agg": ["a", "b", "c"]},
        )
    )
    result["faults"] = dict(faults.counts)
    result["faults_total"] = sum(faults.counts.values())
    result["unexpected_deaths"] = [f"{node.name}: {node.exits}" for node in cluster.nodes.values() if node.exits]
    result["full_resyncs_expected"] = monitor.full_expected
    result["full_resyncs_seen"] = monitor.full_seen
    result["full_resyncs_unexpected"] = monitor.full_unexpected
    result["mark_regressions"] = monitor.mark_regressions
    result["full_resyncs_why"] = dict(monitor.full_reasons)
    result["partial_resyncs_seen"] = monitor.partial_seen
    result["max_lag_entries"] = monitor.max_lag_entries
    result["max_lag_seconds"] = monitor.max_lag_seconds
    result["proxied_connections"] = {name: link.connections for name, link in cluster.proxy.links.items()}
    result["problems"] = problems + faults.problems
    result["fault_log"] = faults.log
    result["ok"] = ok(result)
    (workdir / "report.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def export(revision: str, directory: Path) -> str:
    """Extract `src/` of a git revision into `directory`; returns the path to put on PYTHONPATH."""
    root = Path(__file__).resolve().parents[2]
    directory.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", revision, "src"], cwd=root, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    return str(directory / "src")


def holds(cluster: Cluster) -> dict[str, list[str]]:
    """Database -> the writers whose data it must hold."""
    result: dict[str, list[str]] = {name: [name] for name in cluster.writers}
    result["p"] = result["q"] = ["p", "q"]
    for replication in cluster.replications:
        if replication.mode == "one-way":
            result[replication.target] = list(replication.sources)
    return result


def fault_phase(
    settings: Settings, cluster: Cluster, monitor: Monitor, faults: Faults, rng: random.Random, problems: list[str]
) -> None:
    end = time.monotonic() + settings.seconds
    next_fault = time.monotonic() + rng.uniform(*settings.fault_every)
    next_poll = time.monotonic()
    # Bounded: each turn sleeps a little and the loop ends at `end` (repairs are bounded too).
    while time.monotonic() < end:
        now = time.monotonic()
        faults.due(now)
        if now >= next_fault:
            faults.inject()
            next_fault = time.monotonic() + rng.uniform(*settings.fault_every)
        if now >= next_poll:
            monitor.poll(skip=faults.down)
            next_poll = time.monotonic() + POLL_EVERY
        reap(cluster, faults, problems)
        time.sleep(0.05)


def reap(cluster: Cluster, faults: Faults, problems: list[str]) -> None:
    """A node or writer that died by itself is a failure: note it and start it again so the run goes on."""
    for child in [*cluster.nodes.values(), *cluster.writers.values()]:
        if child.process is None or child.process.poll() is None:
            continue
        code = child.process.returncode
        if code == -signal.SIGKILL and (child.name in faults.down or f"writer:{child.name}" in faults.busy):
            continue
        if child.name in faults.busy or f"writer:{child.name}" in faults.busy:
            continue
        child.exits.append(code)
        problems.append(f"{child.name} died by itself with {code}")
        faults.note("unexpected_death", child.name, str(code))
        try:
            child.start(cluster.cwd)  # type: ignore[attr-defined]
        except RuntimeError as error:
            problems.append(f"{child.name} could not be restarted: {error}")


def wait_converged(monitor: Monitor, cluster: Cluster, timeout: float, problems: list[str]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, _found = monitor.converged()
        if done:
            return True
        time.sleep(0.5)
    _done, found = monitor.converged()
    lagging = {f"{t}<-{s}": (st["state"], st["hwm"], monitor.sequence.get(s)) for (t, s), st in found.items()}
    problems.append(f"not converged within {timeout}s: {lagging}")
    return False


def diverged_content(cluster: Cluster, monitor: Monitor) -> dict[str, str]:
    """For each replica its node reports as diverged: a diff of its content against its source's (now)."""
    _done, found = monitor.converged()
    reports = {}
    with Manager() as manager:
        for target, source in sorted(key for key, status in found.items() if status["state"] == "diverged"):
            report = diff(
                manager.database(source, cluster.paths[source], config={"readonly": True}),
                manager.database(target, cluster.paths[target], config={"readonly": True}),
            )
            reports[f"{target}<-{source}"] = str(report)[:3000] if report else "no difference now"
    return reports


def detect_and_repair(cluster: Cluster, monitor: Monitor, faults: Faults) -> str:
    """Stop n1, change a document of replica a1 with the raw library, restart: VERIFY must say diverged, RESYNC
    must repair it."""
    node = cluster.nodes[cluster.holders["a1"]]
    node.terminate()
    changed = corrupt(cluster.paths["a1"])
    if changed is None:
        return "nothing to corrupt"
    faults.note("corrupt", "a1", f"document {changed} changed behind the node's back")
    node.start(cluster.cwd)
    params = {"path": cluster.paths["a1"], "uuid": cluster.uuids["a"]}
    deadline = time.monotonic() + 30
    state = ""
    while time.monotonic() < deadline and state != "diverged":
        try:
            reply = node.call("VERIFY", params, timeout=10)
            state = reply["replicas"][0]["state"]
        except (PyNNDBError, KeyError, IndexError) as error:
            state = f"error: {error}"
        time.sleep(0.2)
    if state != "diverged":
        return f"not detected (state {state})"
    monitor.forced("a1")
    node.call("RESYNC", params, timeout=10)
    faults.note("resync", "a1")
    while time.monotonic() < deadline:
        reply = node.call("VERIFY", params, timeout=10)
        if reply["replicas"][0]["state"] == "live" and reply["replicas"][0].get("verified"):
            return "repaired"
        time.sleep(0.2)
    return "detected, not repaired"


def links_down(cluster: Cluster, timeout: float = 15.0) -> list[str]:
    """The links of the topology that are not up after the heal (waits, bounded, for them to come back)."""
    names = {link.address: name for name, link in cluster.proxy.links.items()}
    deadline = time.monotonic() + timeout
    while True:
        missing = []
        for node in cluster.nodes.values():
            try:
                links = node.call("STATUS", timeout=2)["links"]
            except PyNNDBError:
                links = []
            up = {link["address"] for link in links if link["direction"] == "out" and link["up"]}
            missing += [names[address] for address in node.connect if address not in up]
        if not missing or time.monotonic() > deadline:
            for name in missing:  # what the node holding the missing link says of its links (for the log)
                address = cluster.proxy.links[name].address
                holder = next(node for node in cluster.nodes.values() if address in node.connect)
                try:
                    links = holder.call("STATUS", timeout=2)["links"]
                    print(f"link {name} is down; its node's links: {links}", file=sys.stderr, flush=True)
                except PyNNDBError as error:
                    print(f"link {name} is down; its node does not answer: {error!r}", file=sys.stderr, flush=True)
            return missing
        time.sleep(0.5)


def corrupt(path: str) -> str | None:
    """Change one document of `docs` in the LMDB file directly (the node is stopped); returns its key."""
    import lmdb  # the raw library: the harness plays a disk error or a stray tool, not a pynndb user

    env = lmdb.open(path, max_dbs=64, subdir=True)
    try:
        table = env.open_db(b"t/" + TABLE.encode())
        with env.begin(write=True) as txn:
            cursor = txn.cursor(db=table)
            if not cursor.first():
                return None
            key, value = cursor.key(), cursor.value()
            txn.put(key, value.replace(b'"x":', b'"x":1', 1) if b'"x":' in value else value + b" ", db=table)
            return bytes(key).decode()
    finally:
        env.close()


def tracebacks(workdir: Path) -> list[str]:
    found = []
    for log in sorted(workdir.glob("*.log")):
        count = len(TRACEBACK.findall(log.read_text(errors="replace")))
        if count:
            found.append(f"{log.name}: {count}")
    return found


def ok(result: dict[str, Any]) -> bool:
    zero = ("lost", "duplicated", "phantom", "stale", "diverged_pairs")
    empty = (
        "stalled_replicas",
        "links_down",
        "full_resyncs_unexpected",
        "mark_regressions",
        "tracebacks",
        "unexpected_deaths",
        "problems",
    )
    return all(result.get(name) == 0 for name in zero) and all(not result.get(name) for name in empty)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--minutes", type=float, required=True, help="length of the fault phase")
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10.0, help="transactions per second per writer")
    parser.add_argument("--workdir", type=Path, help="where databases, logs and report.json go (default: a temp dir)")
    parser.add_argument("--tree", help="run nodes and writers on this git revision's src/ (e.g. HEAD)")
    args = parser.parse_args(argv)
    if args.tree and not os.environ.get("PYNNDB_CHAOS_TREE"):
        # Harness, nodes and writers all run that revision's package (one protocol), whatever is being edited.
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"pynndb-chaos-{args.seed}-"))
        package = export(args.tree, workdir / "tree")
        env = {**os.environ, "PYNNDB_CHAOS_TREE": args.tree, "PYTHONPATH": package}
        arguments = [*(argv if argv is not None else sys.argv[1:]), "--workdir", str(workdir)]
        os.execve(sys.executable, [sys.executable, "-m", "tests.chaos.harness", *arguments], env)
    settings = Settings(args.seed, args.minutes * 60, args.nodes, args.rate, workdir=args.workdir)
    result = run(settings)
    print(report.table(result))
    print(f"report: {os.path.join(result['workdir'], 'report.json')}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
