"""Journal format 3 the way users deploy it: the application appends batches in its own process, the entries carry
their index keys, and a replica held by a node (in-process or a `pynndb node` process) writes them into its
indexes, which the application then reads through its own handle."""

from __future__ import annotations

from pathlib import Path

import pytest

from pynndb import Manager
from pynndb.core.entries import KEYED_FORMAT, KEYED_MIN
from tests.helpers import person, wait_until
from tests.integration.deployment import Deployment
from tests.integration.test_deployments import identical, open_db, peer_of, replicas, replicate

pytestmark = pytest.mark.timeout(90)


def test_index_keys_carried_by_entries_of_inserts_fill_a_replica_held_by_a_node(
    deployment: Deployment, manager: Manager, tmp_path: Path
) -> None:
    source, target = open_db(manager, tmp_path, "source"), open_db(manager, tmp_path, "target")
    people = source.table("people")
    people.ensure("by_name", "{name}", duplicates=True)
    people.ensure("by_email", "{email}")  # unique
    people.ensure("by_nick", "{nick}", duplicates=True)  # sparse
    a = deployment.node("a", [source.path])
    b = deployment.node("b", connect=[a])
    cmd = deployment.plugin(a)
    wait_until(lambda: peer_of(cmd, "b") == b.id, timeout=10)
    assert replicate(cmd, b, target, source)["mode"] == "one-way"
    batch = 4 * KEYED_MIN
    for start in range(0, 5 * batch, batch):  # the replica is live: these arrive as entries, not in a snapshot
        people.append_many([{**person(n), **({"nick": f"n{n}"} if n % 3 else {})} for n in range(start, start + batch)])
    last = source.replication.entries(source.replication.sequence)[0][2]
    assert last[0] == KEYED_FORMAT
    wait_until(lambda: identical(cmd, source, target), timeout=20)
    replica = target.table("people")
    for index in ("by_name", "by_email", "by_nick"):
        assert [doc.key for doc in replica.find(index)] == [doc.key for doc in people.find(index)], index
    assert replica.records() == 5 * batch
    assert len(list(replica.find("by_nick"))) == sum(1 for n in range(5 * batch) if n % 3)
    # The node took every document with the keys its entry carried (STATUS, through the mesh)...
    assert [entry["keyed_documents"] for entry in replicas(cmd, b, target)] == [5 * batch]
    # ...and relayed each entry as it came (the replica's own journal holds the same format 3 bodies).
    assert target.replication.entries(target.replication.sequence)[0][2] == last
