"""A replica's hold: the divergence detector stops a replica exactly at the sequence of its source's digest,
however the entries are batched, then releases it."""

from __future__ import annotations

from collections.abc import Callable

from pynndb import Database
from pynndb.replication import Publisher, Replica
from pynndb.replication.digest import sequenced_summary, summary
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
