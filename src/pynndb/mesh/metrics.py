"""Prometheus metrics of a node, read from its live state at scrape time (``pynndb node --metrics PORT``).

A custom collector turns `Controller.status()` and the replication service's figures into metric families, so
nothing is sampled in between and no figure can go stale: lag in seconds is computed when scraped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pynndb.mesh.controller import Controller

STATES = ("syncing", "live", "snapshot", "stalled", "diverged", "paused")
REPLICA = ["database", "source", "mode"]


class NodeCollector(Collector):
    """Every figure of one node, collected on demand."""

    def __init__(self, node: Controller) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        if not node.running:
            return
        status = node.status()
        yield from self._node(status)
        service = node.replication
        if service is not None:
            yield from self._databases(service.commands.figures())
            yield from self._replication(service.counters)

    def _node(self, status: dict[str, Any]) -> Iterator[Metric]:
        info = GaugeMetricFamily("pynndb_node_info", "This node: id and label.", labels=["node", "label"])
        info.add_metric([self.node.id, self.node.label], 1)
        yield info
        links = status["links"]
        yield GaugeMetricFamily(
            "pynndb_links_up", "Links to other nodes that are up.", sum(1 for x in links if x["up"])
        )
        yield GaugeMetricFamily("pynndb_links", "Links to other nodes, up or not.", len(links))
        yield GaugeMetricFamily(
            "pynndb_peers_known", "Nodes in this node's directory (itself included).", status["nodes"]
        )
        yield GaugeMetricFamily("pynndb_peers_alive", "Nodes in the directory that are alive.", status["alive"])
        counters = status["counters"]
        for name, key, text in [
            ("pynndb_messages_in", "frames_in", "Frames received on links and the command port."),
            ("pynndb_messages_out", "frames_out", "Frames sent on links."),
            ("pynndb_messages_relayed", "relayed", "Frames relayed for other nodes."),
            ("pynndb_messages_duplicate", "duplicates", "Frames dropped as already seen."),
            ("pynndb_messages_dropped", "dropped", "Frames that could not be sent (peer gone, queue full)."),
            ("pynndb_malformed_dropped", "malformed", "Malformed messages dropped by the mesh layer."),
        ]:
            yield CounterMetricFamily(name, text, value=counters.get(key, 0))
        yield GaugeMetricFamily(
            "pynndb_pending_requests", "Routed commands awaiting a reply.", status["pending_requests"]
        )
        commands = CounterMetricFamily(
            "pynndb_commands",
            "Commands run on this node by command and result code ('ok' or the error code).",
            labels=["command", "code"],
        )
        for command, codes in sorted(status.get("command_results", {}).items()):
            for code, count in sorted(codes.items()):
                commands.add_metric([command, code], count)
        yield commands

    def _replication(self, counters: dict[str, int]) -> Iterator[Metric]:
        for name, key, text in [
            ("pynndb_replication_published", "published", "Entries messages published by this node's sources."),
            ("pynndb_replication_received", "received", "Replication frames received."),
            ("pynndb_replication_requests_served", "requests_served", "Gap and snapshot requests answered."),
            ("pynndb_replication_snapshot_acks", "snapshot_acks", "Acknowledgements of snapshot chunks received."),
            ("pynndb_replication_snapshot_waits", "snapshot_waits", "Times a snapshot answer waited for its window."),
            ("pynndb_replication_answers_ended", "answers_ended", "Answers ended early (superseded, gone, stalled)."),
        ]:
            yield CounterMetricFamily(name, text, value=counters.get(key, 0))
        yield CounterMetricFamily(
            "pynndb_replication_malformed_dropped", "Malformed replication frames dropped.", value=counters["malformed"]
        )

    def _databases(self, figures: dict[str, Any]) -> Iterator[Metric]:
        labels = ["database", "uuid"]
        sequence = GaugeMetricFamily("pynndb_database_sequence", "Last journal sequence of a database.", labels=labels)
        first = GaugeMetricFamily(
            "pynndb_database_journal_first", "Oldest sequence the journal retains.", labels=labels
        )
        last = GaugeMetricFamily("pynndb_database_journal_last", "Newest sequence the journal retains.", labels=labels)
        source = GaugeMetricFamily("pynndb_database_source", "1 when this node serves it as a source.", labels=labels)
        lag_entries = GaugeMetricFamily("pynndb_replica_lag_entries", "Entries the replica is behind.", labels=REPLICA)
        lag_seconds = GaugeMetricFamily(
            "pynndb_replica_lag_seconds", "Age of the oldest entry the replica is known to miss.", labels=REPLICA
        )
        state = GaugeMetricFamily(
            "pynndb_replica_state", "1 for the replica's current state.", labels=[*REPLICA, "state"]
        )
        hwm = GaugeMetricFamily("pynndb_replica_hwm", "Highest source sequence applied.", labels=REPLICA)
        applied = CounterMetricFamily("pynndb_replica_applied_entries", "Journal entries applied.", labels=REPLICA)
        documents = CounterMetricFamily(
            "pynndb_replica_applied_documents", "Document puts and deletes applied.", labels=REPLICA
        )
        keyed = CounterMetricFamily(
            "pynndb_replica_keyed_documents",
            "Documents inserted with the index keys their journal entry carried (format 3), not decoded.",
            labels=REPLICA,
        )
        resyncs = CounterMetricFamily(
            "pynndb_replica_resyncs",
            "Resyncs by kind (retaken: snapshots that came with a lost chunk and were asked for again).",
            labels=[*REPLICA, "kind"],
        )
        malformed = CounterMetricFamily("pynndb_replica_malformed", "Malformed entries seen.", labels=REPLICA)
        snapshot = GaugeMetricFamily(
            "pynndb_replica_snapshot_documents",
            "Snapshot progress: documents received and expected.",
            labels=[*REPLICA, "which"],
        )
        stalled = GaugeMetricFamily(
            "pynndb_replica_stalled", "1 when stalled, with the reason.", labels=[*REPLICA, "reason"]
        )
        diverged = GaugeMetricFamily(
            "pynndb_replica_diverged",
            "1 when found diverged from its source, with the reason.",
            labels=[*REPLICA, "reason"],
        )
        for path, info in sorted(figures.items()):
            keys = [path, info["uuid"]]
            sequence.add_metric(keys, info["sequence"])
            first.add_metric(keys, info["retained"][0])
            last.add_metric(keys, info["retained"][1])
            source.add_metric(keys, 1 if info["source"] else 0)
            for replica in info["replicas"]:
                names = [path, replica["source"], replica["mode"]]
                current = "paused" if replica.get("paused") else replica["state"]
                for each in STATES:
                    state.add_metric([*names, each], 1 if current == each else 0)
                lag_entries.add_metric(names, replica["lag_entries"])
                lag_seconds.add_metric(names, replica["lag_seconds"])
                hwm.add_metric(names, replica["hwm"])
                applied.add_metric(names, replica.get("applied", 0))
                documents.add_metric(names, replica.get("applied_documents", 0))
                keyed.add_metric(names, replica.get("keyed_documents", 0))
                resyncs.add_metric([*names, "partial"], replica.get("partial_resyncs", 0))
                resyncs.add_metric([*names, "full"], replica.get("full_resyncs", 0))
                resyncs.add_metric([*names, "retaken"], replica.get("snapshots_retaken", 0))
                malformed.add_metric(names, replica.get("malformed", 0))
                progress = replica.get("snapshot_progress") or (0, 0)
                snapshot.add_metric([*names, "done"], progress[0])
                snapshot.add_metric([*names, "total"], progress[1])
                reason = str(replica.get("reason") or "")
                stalled.add_metric([*names, reason], 1 if replica["state"] == "stalled" else 0)
                diverged.add_metric([*names, reason], 1 if replica["state"] == "diverged" else 0)
        yield from (sequence, first, last, source, lag_entries, lag_seconds, state, hwm, applied, documents, keyed)
        yield from (resyncs, malformed, snapshot, stalled, diverged)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (scrapes are not news)
        return None


class MetricsServer:
    """An HTTP server for ``/metrics`` on its own thread; `stop()` closes it."""

    def __init__(self, node: Controller, port: int, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self._server: WSGIServer = make_server(host, port, make_wsgi_app(self.registry), handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"pynndb-{node.label}-metrics",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(node: Controller, port: int, host: str = "127.0.0.1") -> MetricsServer:
    """Serve the node's metrics at http://HOST:PORT/metrics (port 0 picks a free one: see `.port`)."""
    return MetricsServer(node, port, host)
