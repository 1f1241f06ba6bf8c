"""A divergence check holds its replica only until the replica's digest has its read transaction open at the
check's sequence: while both digests are read (every document, on workers), the replica goes on applying. Before,
it stood still for both digests every check (724 ms with 200k documents, once every 30 s). DIGEST with pin answers
the sequence at once and the digest by its ticket."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from pynndb import Manager
from pynndb.errors import CommandError
from pynndb.mesh import divergence
from pynndb.mesh.commands import BAD_PARAMS
from tests.helpers import person, wait_until
from tests.mesh.conftest import Mesh
from tests.mesh.test_service_on_loop import replicated_pair


def test_the_replica_goes_on_applying_while_its_digest_is_read(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reading, go_on = threading.Event(), threading.Event()
    replica_summary = divergence.replica_summary

    def slow(db: Any, source: str, pinned: Any = None) -> Any:
        def pinned_then_read_slowly(mark: int | None) -> None:
            pinned(mark)
            reading.set()
            assert go_on.wait(30)  # (the read transaction stays open: the digest is of the content at S)

        return replica_summary(db, source, pinned_then_read_slowly)

    monkeypatch.setattr(divergence, "replica_summary", slow)
    source, replica, cmd, peer, params = replicated_pair(mesh, manager, tmp_path)
    people = source.table("people")
    people.append_many([person(number) for number in range(30)])
    wait_until(lambda: "people" in replica.tables() and replica.table("people").records() == 30, timeout=10)
    verdict: dict[str, Any] = {}
    verifier = threading.Thread(target=lambda: verdict.update(cmd.call("VERIFY", params, target=peer, timeout=30)))
    verifier.start()
    try:
        assert reading.wait(20)
        oid = people.append(person(99)).oid  # written while the replica's digest is being read
        wait_until(lambda: replica.table("people").get(oid) is not None, timeout=10)
    finally:
        go_on.set()
        verifier.join(40)
    assert [entry["verification"] for entry in verdict["replicas"]] == ["match"], verdict
    assert replica.table("people").records() == 31


def test_a_source_node_without_pins_still_answers_the_check(
    mesh: Mesh, manager: Manager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source's node of a release before pins refuses DIGEST's pin (bad_params): the check asks for the whole
    digest instead, holding the replica while it is read, and still concludes."""
    source, replica, cmd, peer, params = replicated_pair(mesh, manager, tmp_path)
    source.table("people").append_many([person(number) for number in range(30)])
    wait_until(lambda: "people" in replica.tables() and replica.table("people").records() == 30, timeout=10)
    service = mesh.nodes[0].replication  # (node a, which serves the source)
    assert service is not None
    digest = service.commands.digest
    refused: list[dict[str, Any]] = []

    def older(request: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
        if request.get("pin") or request.get("ticket") is not None:
            refused.append(request)
            raise CommandError("unknown params: pin", BAD_PARAMS)
        return digest(request, context)

    monkeypatch.setattr(service.commands, "digest", older)
    service.node.register_command("DIGEST", older)
    reply = cmd.call("VERIFY", params, target=peer, timeout=30)
    assert [entry["verification"] for entry in reply["replicas"]] == ["match"], reply
    assert refused


def test_digest_pin_and_ticket(mesh: Mesh, manager: Manager, tmp_path: Path) -> None:
    """DIGEST with pin answers the sequence and a ticket; the ticket's digest is the content at that sequence, not
    what was written after it; a ticket answers once, for its own database only; pin and ticket together are
    refused."""
    source, _replica, cmd, _peer, _params = replicated_pair(mesh, manager, tmp_path)
    people = source.table("people")
    people.append_many([person(number) for number in range(20)])
    uuid = source.replication.uuid
    whole = cmd.call("DIGEST", {"uuid": uuid})
    pinned = cmd.call("DIGEST", {"uuid": uuid, "pin": True})
    assert pinned["sequence"] == whole["sequence"] and "tables" not in pinned
    people.append(person(21))  # after the pin: not in its digest
    done = cmd.call("DIGEST", {"uuid": uuid, "ticket": pinned["ticket"], "wait": 10})
    assert done["sequence"] == pinned["sequence"] and done["tables"] == whole["tables"]
    assert done["tables"]["people"]["records"] == 20
    for params, code in (
        ({"uuid": uuid, "ticket": pinned["ticket"]}, "not_found"),  # (answered once)
        ({"uuid": uuid, "ticket": 10**6}, "not_found"),
        ({"uuid": uuid, "pin": True, "ticket": 1}, BAD_PARAMS),
        ({"uuid": uuid, "ticket": 1, "wait": 0}, BAD_PARAMS),
    ):
        with pytest.raises(CommandError) as caught:
            cmd.call("DIGEST", params)
        assert caught.value.code == code, (params, caught.value)
    other = manager.database("o", str(tmp_path / "o"), config={"replication": True})
    other.table("t").append({"n": 1})
    cmd.call("REGISTER", {"path": other.path})
    ticket = cmd.call("DIGEST", {"uuid": other.replication.uuid, "pin": True})["ticket"]
    with pytest.raises(CommandError) as caught:
        cmd.call("DIGEST", {"uuid": uuid, "ticket": ticket})  # another database's ticket
    assert caught.value.code == "not_found"
