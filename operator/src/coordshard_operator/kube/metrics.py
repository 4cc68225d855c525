"""Prometheus metrics of the operator, in a registry of their own.

Names follow ``coordshard_<subsystem>_<name>_<unit>``, labelled by the CR
(``namespace``, ``name``: the group); counters end in ``_total``. The registry
lives in ``memo`` (made at startup), not in module globals, so tests can run
several operators in one process; it holds the collectors a default registry
has (``process_*``, ``python_info``, ``python_gc_*``). docs/service.md lists
every metric.
"""

from __future__ import annotations

import contextlib

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

__all__ = ["OperatorMetrics"]


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        labels = ["namespace", "name"]
        self.rebalance_duration = Histogram(
            "coordshard_rebalance_duration_seconds",
            "Time to apply one changed assignment to JetStream.",
            labels,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.moved_shards = Counter(
            "coordshard_rebalance_moved_shards_total",
            "Shards moved.",
            labels,
            registry=self.registry,
        )
        self.unassigned_shards = Gauge(
            "coordshard_unassigned_shards",
            "Shards with no owner.",
            labels,
            registry=self.registry,
        )
        self.epoch = Gauge("coordshard_epoch", "Assignment epoch.", labels, registry=self.registry)
        self.unowned_removed = Counter(
            "coordshard_unowned_messages_removed_total",
            "Messages on subjects no shard owns, removed from the stream.",
            labels,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "coordshard_reconcile_errors_total",
            "Failed reconciles.",
            labels,
            registry=self.registry,
        )

        self.pending = Gauge(
            "coordshard_group_pending_messages",
            "Messages not yet delivered, summed over the group's consumers (JetStream"
            " num_pending), as the last reconcile read them.",
            labels,
            registry=self.registry,
        )
        self.ack_pending = Gauge(
            "coordshard_group_ack_pending_messages",
            "Messages delivered and not yet acked, summed over the group's consumers"
            " (JetStream num_ack_pending), as the last reconcile read them.",
            labels,
            registry=self.registry,
        )
        self._labelled = (
            self.rebalance_duration,
            self.moved_shards,
            self.unassigned_shards,
            self.epoch,
            self.unowned_removed,
            self.reconcile_errors,
            self.pending,
            self.ack_pending,
        )

    def forget(self, *, namespace: str, name: str) -> None:
        """Drop every series of one group (its CR was deleted): a gauge left behind would
        go on reporting the group's last lag and unassigned shards for ever."""
        for metric in self._labelled:
            with contextlib.suppress(KeyError):  # never reported for this group
                metric.remove(namespace, name)

    def serve(self, port: int) -> None:
        """Serve ``/metrics`` on ``port`` (a daemon thread)."""
        start_http_server(port, registry=self.registry)
