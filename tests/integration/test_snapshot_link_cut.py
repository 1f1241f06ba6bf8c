"""A link cut in the middle of a snapshot stream, where users run it: two `pynndb node` processes linked through
the fault proxy (tests/chaos/proxy.py), the source's journal trimmed so a new replica needs a snapshot, and this
process as the application, holding its own handles on both databases from before REPLICATE.

The proxy slows the link so that the cut lands inside the stream: what the proxy holds at that moment is lost,
and ZeroMQ delivers what its queues still hold after it reconnects. The replica must take none of the broken
snapshot (its mark unmoved, never `live` on part of it), and ask for a new one once the link is back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pynndb import Manager
from pynndb.errors import PyNNDBError
from tests.chaos.cluster import Node
from tests.chaos.proxy import CUT, DELAY, UP, FaultProxy
from tests.helpers import wait_until
from tests.mesh.conftest import free_port

pytestmark = pytest.mark.timeout(120)
ROOT = str(Path(__file__).resolve().parents[2])
DOCUMENTS = 60_000  # about 6 MB of records and 1.5 MB of index entries: a snapshot of about 9 chunks
BATCH = 100
SLOW = 0.02  # seconds the proxy waits before forwarding each 64 KB it reads: a stream of a few seconds
# How long the link stays cut: shorter than the replica's 2 s request timeout (asked again when the link comes
# back), and longer (asked again into the cut, then again when it comes back).
CUTS = [pytest.param(0.3, id="short-cut"), pytest.param(2.5, id="cut-past-the-request-timeout")]


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    started = FaultProxy()
    try:
        yield started
    finally:
        started.close()


def replica_entry(node: Node, path: str, source: str) -> dict[str, Any] | None:
    """The replica's STATUS entry on `node` (None while the node does not answer or does not list it yet)."""
    try:
        databases = node.call("STATUS", timeout=2)["databases"]
    except PyNNDBError:
        return None
    for entry in databases.get(os.path.realpath(path), {}).get("replicas", []):
        if entry["source"] == source:
            return entry
    return None


def peer_of(node: Node, name: str) -> str | None:
    """The node id `node` finds under `name` (None until its directory has it)."""
    try:
        return node.call("LOOKUP", {"name": name}, timeout=2).get("peer")
    except PyNNDBError:
        return None


def person(number: int) -> dict[str, Any]:
    return {"name": f"Name {number:06}", "age": number % 90, "email": f"user{number}@example.com", "tags": ["a"]}


@pytest.mark.parametrize("cut_for", CUTS)
def test_a_link_cut_mid_snapshot_takes_none_of_it_and_the_replica_converges_after_the_heal(
    nodes: list[Node], proxy: FaultProxy, tmp_path: Path, cut_for: float
) -> None:
    source_path, replica_path = str(tmp_path / "source"), str(tmp_path / "replica")
    with Manager() as manager:
        source = manager.database(source_path, config={"replication": True, "journal": {"max_entries": 50}})
        people = source.table("people")
        people.ensure("by_name", "{name}", duplicates=True)
        for start in range(0, DOCUMENTS, BATCH):
            people.append_many([person(number) for number in range(start, start + BATCH)])
        assert source.replication.retained[0] > 1  # trimmed: a new replica can only start from a snapshot
        uuid, sequence = source.replication.uuid, source.replication.sequence
        replica = manager.database(replica_path, config={"replication": True})  # the application's handle

        holder = Node("b", tmp_path / "b.log", ports=(free_port(), free_port(), free_port()), databases=[replica_path])
        nodes.append(holder)
        assert holder.start(ROOT)
        link = proxy.add("a->b", *holder.ports[:2])
        serving = Node("a", tmp_path / "a.log", ports=(free_port(), free_port(), free_port()))
        serving.databases, serving.connect = [source_path], [link.address]
        nodes.append(serving)
        assert serving.start(ROOT)
        wait_until(lambda: peer_of(holder, "a") == serving.id, timeout=20, interval=0.1)

        proxy.set_mode("a->b", DELAY, SLOW)
        holder.call("REPLICATE", {"path": replica_path, "uuid": uuid}, timeout=10)
        # Cut once part of the snapshot is in: the application sees a snapshot under way, and documents.
        snapshots = replica.replication.snapshots
        wait_until(lambda: uuid in snapshots() and "people" in replica.tables() and len(replica["people"]), 60, 0.005)
        proxy.set_mode("a->b", CUT)
        taken = len(replica["people"])
        assert 0 < taken < DOCUMENTS, "the cut must land inside the stream"

        # While cut: the part that came is not the replica's content.
        deadline = time.monotonic() + cut_for
        seen: set[str] = set()
        while time.monotonic() < deadline:
            entry = replica_entry(holder, replica_path, uuid)
            if entry is not None:
                seen.add(entry["state"])
            assert replica.replication.marks().get(uuid, 0) == 0, "a broken snapshot moved the replica's mark"
            time.sleep(0.05)
        assert "live" not in seen and seen, f"the replica looked {seen} on part of a snapshot"
        assert snapshots() == {uuid: sequence}  # a restart now would ask for a snapshot too

        proxy.set_mode("a->b", UP)
        wait_until(lambda: replica.replication.marks().get(uuid, 0) == sequence, timeout=60, interval=0.05)
        entry = wait_until(lambda: replica_entry(holder, replica_path, uuid), timeout=10)
        assert entry["state"] == "live"
        # Taken again from its start: a second snapshot began (the first one's hole, or its silence, was seen).
        assert entry["full_resyncs"] >= 2, entry
        assert snapshots() == {}
        # Flow control between the two processes: the serving node waited for its window (the proxy is slow) and
        # the replica's node acknowledged the chunks it took.
        served = serving.call("STATUS", timeout=5)["replication"]
        assert served["snapshot_waits"] > 0 and served["snapshot_acks"] > 0, served

        # The application's handles, opened before REPLICATE, read the whole of it, indexes included.
        copied = replica["people"]
        assert len(copied) == DOCUMENTS
        with source.read_transaction() as ours, replica.read_transaction() as theirs:
            expected = {doc.key: dict(doc) for doc in people.find(txn=ours)}
            assert {doc.key: dict(doc) for doc in copied.find(txn=theirs)} == expected
        assert [doc["name"] for doc in copied.seek("by_name", {"name": "Name 004321"})] == ["Name 004321"]
