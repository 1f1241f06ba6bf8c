"""Property tests: random writes on 2-3 databases, journal entries delivered with reordering, duplication and loss,
then repaired through requests and ticks: one-way replicas equal their source, two-way pairs converge, an aggregate
is the union of its sources; replaying everything again changes nothing."""

from __future__ import annotations

import tempfile
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from pynndb import Database, Manager
from pynndb.replication import Entries, Publisher, Replica, diff, digest

TABLES = ("red", "blue")
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

operations = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # which database writes (modulo how many may write)
        st.sampled_from(["append", "append", "save", "delete"]),
        st.sampled_from(TABLES),
        st.integers(min_value=0, max_value=1000),  # which document (modulo how many there are) / a value
    ),
    max_size=25,
)


class Clock:
    """Time under the test's control, so that tick() re-asks when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Link:
    """One direction of replication, driven by hand: a publisher on the source, a replica on the target."""

    def __init__(self, source: Database, target: Database, mode: str, clock: Clock) -> None:
        self.source = source
        self.publisher = Publisher(source, batch_entries=3)
        self.publisher.published = 0  # publish the whole journal, not only what comes after this point
        self.replica = Replica(target, source.replication.uuid, mode, clock=clock, request_timeout=1.0).register()
        self.requests = self.replica.start()

    def deliver(self, messages: list[Any]) -> None:
        for message in messages:
            self.requests.extend(self.replica.receive(message))

    def repair(self) -> bool:
        """Serve pending requests and publish new entries reliably; True when something was delivered."""
        requests, self.requests = self.requests, []
        for request in requests:
            self.deliver(list(self.publisher.serve(request)))
        fresh = self.publisher.poll()
        self.deliver(fresh)
        self.requests.extend(self.replica.tick())
        return bool(requests or fresh)

    @property
    def settled(self) -> bool:
        return not self.requests and self.replica.hwm >= self.source.replication.sequence


def write(db: Database, kind: str, table_name: str, number: int) -> None:
    table = db.table(table_name)
    if kind == "append" or len(table) == 0:
        table.append({"n": number, "by": db.name})
        return
    keys = [doc.key for doc in table.find()]
    key = keys[number % len(keys)]
    if kind == "save":
        doc = table.get(key)
        doc["n"] = number
        doc["by"] = db.name
        table.save(doc)
    else:
        table.delete(key)


def shuffle_with_faults(data: st.DataObject, messages: list[Any]) -> list[Any]:
    """Messages reordered, some duplicated, some lost; the last one always arrives (a live link's next
    publication, which is what reveals a lost tail)."""
    if not messages:
        return []
    kept = [message for message in messages[:-1] if not data.draw(st.booleans(), label="lost")]
    duplicated = data.draw(st.lists(st.sampled_from(messages), max_size=4), label="duplicates")
    delivered = data.draw(st.permutations(kept + duplicated + [messages[-1]]), label="order")
    return delivered


def settle(links: list[Link], clock: Clock) -> None:
    for _round in range(200):
        clock.now += 2.0  # past every request timeout: tick() re-asks for what is missing
        progress = [link.repair() for link in links]
        if not any(progress) and all(link.settled for link in links):
            return
    raise AssertionError(f"not settled: {[link.replica.status() for link in links]}")


def replay_everything(links: list[Link]) -> None:
    for link in links:
        entries = link.source.replication.entries(1, 1_000_000)
        link.deliver([Entries(link.source.replication.uuid, entries, link.source.replication.sequence)])


def contents(db: Database) -> dict[str, dict[str, Any]]:
    return {name: {doc.key: doc.doc for doc in db[name].find()} for name in db.tables()}


def open_databases(manager: Manager, directory: str, count: int) -> list[Database]:
    databases = []
    for number in range(count):
        db = manager.database(f"db{number}", f"{directory}/db{number}", config={"replication": True})
        db.table("red").ensure("by_n", "{n}", duplicates=True)
        databases.append(db)
    return databases


@SETTINGS
@given(ops=operations, data=st.data())
def test_one_way_replica_equals_its_source(ops, data) -> None:
    with tempfile.TemporaryDirectory() as directory, Manager() as manager:
        source = open_databases(manager, directory, 1)[0]
        target = manager.database("target", f"{directory}/target", config={"replication": True})
        for _db, kind, table, number in ops:
            write(source, kind, table, number)
        if data.draw(st.booleans(), label="empty red"):
            source["red"].empty()
            write(source, "append", "red", 7)
        clock = Clock()
        link = Link(source, target, "one-way", clock)
        link.deliver(shuffle_with_faults(data, link.publisher.poll()))
        settle([link], clock)
        assert diff(source, target) == {}
        before = (digest(target), target.replication.sequence)
        replay_everything([link])
        assert (digest(target), target.replication.sequence) == before


@SETTINGS
@given(ops=operations, data=st.data())
def test_two_way_pair_converges(ops, data) -> None:
    with tempfile.TemporaryDirectory() as directory, Manager() as manager:
        left, right = open_databases(manager, directory, 2)
        clock = Clock()
        # Pair them first, so that both keep versions for their local writes (as a real pair does).
        links = [Link(left, right, "two-way", clock), Link(right, left, "two-way", clock)]
        settle(links, clock)
        for which, kind, table, number in ops:
            write((left, right)[which % 2], kind, table, number)
        for link in links:
            link.deliver(shuffle_with_faults(data, link.publisher.poll()))
        settle(links, clock)
        assert diff(left, right) == {}
        sequences = (left.replication.sequence, right.replication.sequence)
        replay_everything(links)
        settle(links, clock)
        assert diff(left, right) == {}
        assert (left.replication.sequence, right.replication.sequence) == sequences, "no echo"


@SETTINGS
@given(ops=operations, data=st.data())
def test_aggregate_is_the_union_of_its_sources(ops, data) -> None:
    with tempfile.TemporaryDirectory() as directory, Manager() as manager:
        sources = open_databases(manager, directory, 2)
        target = manager.database("target", f"{directory}/target", config={"replication": True})
        for which, kind, table, number in ops:
            write(sources[which % 2], kind, table, number)
        if data.draw(st.booleans(), label="empty red on the first source"):
            sources[0]["red"].empty()
        clock = Clock()
        links = [Link(source, target, "one-way", clock) for source in sources]
        for link in links:
            link.deliver(shuffle_with_faults(data, link.publisher.poll()))
        settle(links, clock)
        expected: dict[str, dict[str, Any]] = {}
        for source in sources:
            for name, documents in contents(source).items():
                expected.setdefault(name, {}).update(documents)
        actual = contents(target)
        assert {name: docs for name, docs in actual.items() if docs} == {
            name: docs for name, docs in expected.items() if docs
        }
        before = digest(target)
        replay_everything(links)
        assert digest(target) == before
