"""The worker's Prometheus metrics, in a registry of their own.

A registry per ``Metrics`` (not the global default) lets tests run several
workers in one process; ``/metrics`` serves it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """Counters and gauges named ``coordshard_worker_<name>_<unit>``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
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
        self.cache_hits = Gauge(
            "coordshard_worker_cache_hits", "Cache lookups that hit.", registry=self.registry
        )
        self.cache_misses = Gauge(
            "coordshard_worker_cache_misses", "Cache lookups that missed.", registry=self.registry
        )
        self.cache_hit_ratio = Gauge(
            "coordshard_worker_cache_hit_ratio",
            "Hits / lookups since start.",
            registry=self.registry,
        )
        self.cache_entries = Gauge(
            "coordshard_worker_cache_entries", "Systems + points cached.", registry=self.registry
        )
        self.owned_shards = Gauge(
            "coordshard_worker_owned_shards",
            "Shards named by this worker's consumer filter.",
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
            "Times the worker found its consumer deleted (fenced) and waited for it again.",
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
        self.cache_hits.set(hits)
        self.cache_misses.set(misses)
        self.cache_entries.set(entries)
        total = hits + misses
        self.cache_hit_ratio.set(hits / total if total else 0.0)
