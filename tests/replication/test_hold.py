"""A replica's hold: the divergence detector stops a replica exactly at the sequence of its source's digest,
however the entries are batched, then releases it."""

from __future__ import annotations

from collections.abc import Callable

from pynndb import Database
from pynndb.replication import Publisher, Replica
from pynndb.replication.digest import replica_summary, sequenced_summary, summary
from tests.replication.conftest import deliver, serve


def test_hold_stops_at_the_digest_sequence_and_release_applies_the_rest(open_db: Callable[..., Database]) -> None:
    source, target = open_db("source"), open_db("target")
    docs = source.table("docs")
    publisher = Publisher(source)
    replica = Replica(target, source.replication.uuid).register()
    serve(publisher, replica, replica.start())
    for number in range(10):
        docs.append({"n": number})
    at, digest = sequenced_summary(source)
    for number in range(10, 20):
        docs.append({"n": number})
    replica.hold_at = at
    requests = deliver(replica, publisher.poll())  # one batch running past the digest's sequence
    assert requests == [] and replica.tick() == []
    assert replica.hwm == at and replica.holding
    assert summary(target) == digest
    replica.release()
    assert replica.hwm == source.replication.sequence and replica.state == "live"
    assert summary(target) == summary(source)
    assert replica.counters["partial_resyncs"] == 0


def test_a_replica_digest_says_what_mark_it_shows_and_none_while_a_snapshot_is_under_way(
    open_db: Callable[..., Database],
) -> None:
    """The divergence detector compares a replica's digest only if it was taken at the check's sequence: a
    snapshot answering an older request can begin between the decision to digest and the digest's read."""
    source, target = open_db("source"), open_db("target")
    uuid = source.replication.uuid
    docs = source.table("docs")
    for number in range(30):
        docs.append({"n": number})
    publisher = Publisher(source)
    replica = Replica(target, uuid).register()
    serve(publisher, replica, replica.start())
    at, tables = replica_summary(target, uuid)
    assert at == replica.hwm == source.replication.sequence
    assert tables == summary(source)

    messages = list(publisher.serve(replica.resync()[0]))  # begin, chunks, end
    assert len(messages) >= 3
    deliver(replica, messages[:-1])  # the end has not come: the tables hold part of the snapshot at most
    during, _partial = replica_summary(target, uuid)
    assert during is None
    deliver(replica, messages[-1:])
    after, tables = replica_summary(target, uuid)
    assert after == source.replication.sequence and tables == summary(source)
    assert replica_summary(target, "a-source-it-never-followed")[0] == 0
