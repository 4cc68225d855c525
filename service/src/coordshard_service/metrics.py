"""The worker's Prometheus metrics, in a registry of their own.

A registry per ``Metrics`` (not the global default) lets tests run several
workers in one process; ``/metrics`` serves it, with the collectors the
default registry has (``process_*``, ``python_info``, ``python_gc_*``).

Prometheus conventions: a counter's samples end in ``_total`` (the client
library adds it to the names below); ratios are left to queries
(``rate(..._cache_hits_total[5m]) / (rate(..._hits_total[5m]) +
rate(..._misses_total[5m]))``), since a ratio since start neither sums over
workers nor says anything about the last hour. docs/service.md lists every
metric, and the names renamed (old → new).
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
)

__all__ = ["Metrics"]


BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Messages per batch: fetched, and per store transaction."""


class Metrics:
    """Counters and gauges named ``coordshard_worker_<name>_<unit>``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.commands = Counter(
            "coordshard_worker_commands",
            "Messages settled, by op and outcome (ok, refused code, or bad).",
            ["op", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "coordshard_worker_processing_seconds",
            "Seconds from fetch to ack of a batch, per message.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "coordshard_worker_batch_size",
            "Messages per fetched batch. Small batches pay the per-batch costs (pull,"
            " transaction, ack_sync) over few messages.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.store_batch_size = Histogram(
            "coordshard_worker_store_batch_size",
            "Messages per store transaction in the steady state: the batches of the lanes"
            " that waited, applied together.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "coordshard_worker_redeliveries",
            "Messages delivered more than once.",
            registry=self.registry,
        )
        self.dedupe_hits = Counter(
            "coordshard_worker_dedupe_hits",
            "Commands answered with a stored outcome instead of being applied again.",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "coordshard_worker_dead_letters",
            "Messages kept for inspection and terminated.",
            registry=self.registry,
        )
        self.given_up = Counter(
            "coordshard_worker_given_up",
            "Messages our consumer gave up on (max_deliver reached) and that were moved"
            " into the dead letters (also counted there).",
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "coordshard_worker_cache_hits", "Cache lookups that hit.", registry=self.registry
        )
        self.cache_misses = Counter(
            "coordshard_worker_cache_misses", "Cache lookups that missed.", registry=self.registry
        )
        self._cache_seen = (0, 0)
        """The cache's (hits, misses) at the last ``observe_cache``."""
        self.cache_entries = Gauge(
            "coordshard_worker_cache_entries", "Systems + points cached.", registry=self.registry
        )
        self.consumer_pending = Gauge(
            "coordshard_worker_consumer_pending_messages",
            "Messages of a lane's shards not yet delivered (JetStream num_pending), as last"
            " read, by lane (consumer); the series goes with the lane.",
            ["consumer"],
            registry=self.registry,
        )
        self.consumer_ack_pending = Gauge(
            "coordshard_worker_consumer_ack_pending_messages",
            "Messages delivered to a lane and not yet acked (JetStream num_ack_pending), as"
            " last read, by lane (consumer).",
            ["consumer"],
            registry=self.registry,
        )
        self.owned_shards = Gauge(
            "coordshard_worker_owned_shards",
            "Shards named by the filters of this worker's consumers (all its lanes).",
            registry=self.registry,
        )
        self.lanes = Gauge(
            "coordshard_worker_lanes",
            "Consumers of this worker's member it serves (lanes), each in its own pull loop.",
            registry=self.registry,
        )
        self.lanes_ended = Counter(
            "coordshard_worker_lanes_ended",
            "Lanes whose consumer was deleted while the worker served it (a planned move or"
            " a merge replaced it, or a fence); their deliveries in hand were dropped.",
            registry=self.registry,
        )
        self.rewinds = Counter(
            "coordshard_worker_rewinds",
            "Times the worker bound to its consumer with deliveries of a previous process "
            "pending and rewound it so they come again in stream order.",
            registry=self.registry,
        )
        self.fenced = Counter(
            "coordshard_worker_fenced",
            "Times the worker found its last consumer deleted (fenced) and waited for a"
            " consumer of its member again.",
            registry=self.registry,
        )
        self.stream_instances = Counter(
            "coordshard_worker_stream_instances",
            "Times the worker bound to a stream instance new to it or to the store (the"
            " stream re-created, or lost with a server's storage): its marks start afresh.",
            registry=self.registry,
        )
        self.late_applies = Counter(
            "coordshard_worker_late_applies",
            "Commands delivered behind later ones of their shard and applied late.",
            registry=self.registry,
        )
        self.store_retries = Counter(
            "coordshard_worker_store_retries",
            "Times the store refused a batch, which the worker held and applied again.",
            registry=self.registry,
        )
        self.store_refusals = Counter(
            "coordshard_worker_store_refusals",
            "Commands the database refused for a data reason (a value it cannot hold, a"
            " constraint) although they passed validation; each was dead-lettered.",
            registry=self.registry,
        )
        self.reply_failures = Counter(
            "coordshard_worker_reply_failures",
            "Outcomes that could not be published to their reply subject; the message was"
            " settled anyway.",
            registry=self.registry,
        )
        self.ack_retries = Counter(
            "coordshard_worker_ack_retries",
            "Times settling a batch failed while its consumer still existed, and was retried.",
            registry=self.registry,
        )

    def observe_cache(self, *, hits: int, misses: int, entries: int) -> None:
        """Count the cache's lookups since the last call (its own counts only grow)."""
        seen_hits, seen_misses = self._cache_seen
        self.cache_hits.inc(max(0, hits - seen_hits))
        self.cache_misses.inc(max(0, misses - seen_misses))
        self._cache_seen = (hits, misses)
        self.cache_entries.set(entries)

    def observe_consumer(self, consumer: str, *, pending: int, ack_pending: int) -> None:
        """Our consumer's lag, as just read from the server."""
        self.consumer_pending.labels(consumer=consumer).set(pending)
        self.consumer_ack_pending.labels(consumer=consumer).set(ack_pending)

    def forget_consumer(self, consumer: str) -> None:
        """Drop a consumer's lag series: we no longer serve it (it may be gone)."""
        for gauge in (self.consumer_pending, self.consumer_ack_pending):
            with contextlib.suppress(KeyError):
                gauge.remove(consumer)
