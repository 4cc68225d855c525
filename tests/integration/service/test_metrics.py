"""A real worker's ``/metrics`` follows Prometheus conventions.

Scraped over HTTP and parsed with the client library's own parser: every
counter's samples end in ``_total`` (the cache's hits and misses were gauges),
no precomputed ratio, the collectors a default registry has (``process_*``),
and the lag of the consumer it serves, labelled with the consumer, which goes
when the consumer does.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from nats.js import JetStreamContext
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from coordshard_client import CoordinateClient
from coordshard_operator.local.natsserver import NatsServer

from .conftest import SHARDS, Provisioner, start_worker, wait_until, worker_settings

pytestmark = pytest.mark.integration

LAG = (
    "coordshard_worker_consumer_pending_messages",
    "coordshard_worker_consumer_ack_pending_messages",
)


async def scrape(port: int) -> dict[str, Metric]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as r,
    ):
        assert r.status == 200
        text = await r.text()
    return {m.name: m for m in text_string_to_metric_families(text)}


def value(family: Metric, sample: str, **labels: str) -> float:
    (found,) = [s.value for s in family.samples if s.name == sample and s.labels == labels]
    return found


async def test_a_workers_metrics_follow_prometheus_conventions(
    nats_server: NatsServer,
    provisioner: Provisioner,
    client: CoordinateClient,
    js: JetStreamContext,
    tmp_path: Path,
) -> None:
    name = await provisioner.assign(member="m", incarnation="1", shards=list(range(SHARDS)))
    settings = worker_settings(
        nats_server,
        stream=provisioner.stream,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        member="m",
        incarnation="1",
    ).model_copy(update={"http_enabled": True, "http_port": 0, "http_host": "127.0.0.1"})
    running = await start_worker(settings)
    try:
        await wait_until(lambda: running.worker.bound)
        health = running.health
        assert health is not None
        await client.create_system(system_id="m", name="m", dimension=2)
        for _ in range(3):
            await client.get_system(system_id="m")
        families = await scrape(health.port)

        counters = [m for m in families.values() if m.type == "counter"]
        assert counters
        for counter in counters:
            for sample in counter.samples:
                assert sample.name.endswith(("_total", "_created")), sample.name
        assert families["coordshard_worker_cache_hits"].type == "counter"
        assert families["coordshard_worker_cache_misses"].type == "counter"
        hits = value(families["coordshard_worker_cache_hits"], "coordshard_worker_cache_hits_total")
        assert hits >= 2  # the gets after the first
        assert not [n for n in families if "_ratio" in n]
        for process in ("process_cpu_seconds", "process_resident_memory_bytes", "python_info"):
            assert process in families, process

        info = await js.consumer_info(provisioner.stream, name)
        assert (info.num_pending, info.num_ack_pending) == (0, 0)
        for lag in LAG:
            assert families[lag].type == "gauge"
            assert value(families[lag], lag, consumer=name) == 0

        # Fenced (the consumer deleted): its lag series go with it.
        await provisioner.delete(name)
        await wait_until(lambda: not running.worker.bound)
        families = await scrape(health.port)
        for lag in LAG:
            assert not [s for s in families[lag].samples if s.labels.get("consumer") == name]
    finally:
        await running.shutdown()
