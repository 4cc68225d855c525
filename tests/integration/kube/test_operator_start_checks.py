"""The operator refuses what it cannot serve, once, and creates nothing (issues 13 §3
and 15 §3): a nats-server too old for it, a stream recording another shard count.

On nats-server 2.9 it created an unfiltered consumer, posted six identical
ShardsMoved Events and looped on "multiple non-filtered consumers not allowed".
Now it reads the server's version at connect and reports one Degraded
condition and one Event naming the version found and the one needed; it
creates nothing, pass after pass.
"""

from __future__ import annotations

import re

import aiohttp
import nats
import pytest
from nats.js.api import RetentionPolicy, StreamConfig

from coordshard_client.subjects import STREAM_META_SHARDS, stream_subjects
from coordshard_operator.kube import crd
from coordshard_operator.local.natsserver import NatsServer, free_port
from coordshard_operator.testing.cluster import wait_until

from ..conftest import streams_and_consumers
from . import test_operator_on_both
from .test_operator_on_both import Scenario

scenario = test_operator_on_both.scenario  # the fixture: one test, two backends

pytestmark = pytest.mark.integration


async def reconcile_errors(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(url) as r:
        text = await r.text()
    found = re.search(r"coordshard_reconcile_errors_total\{[^}]*\} (\S+)", text)
    return float(found.group(1)) if found else 0.0


async def test_an_old_server_gives_one_condition_one_event_and_no_consumer(
    scenario: Scenario, old_nats_server: NatsServer
) -> None:
    cluster = scenario.cluster
    metrics = free_port()
    scenario.start_operator(
        nats_url=old_nats_server.url,
        env={"COORDSHARD_RESYNC_SECONDS": "1", "COORDSHARD_METRICS_PORT": str(metrics)},
    )
    cluster.add_pod("w-0")
    cluster.add_cr(shards=4)

    def degraded() -> dict[str, str] | None:
        for c in cluster.status().get("conditions") or []:
            if c["type"] == crd.CONDITION_DEGRADED and c["status"] == "True":
                return dict(c)
        return None

    condition = await wait_until(degraded, timeout=30, what="Degraded")
    assert condition["reason"] == crd.REASON_NATS_SERVER_TOO_OLD
    assert re.search(r"nats-server 2\.9\.\d+ is too old.*needs 2\.14\.0", condition["message"])
    url = f"http://127.0.0.1:{metrics}/metrics"
    async with aiohttp.ClientSession() as http:
        # Several passes, each refused: still one condition, one Event.
        await wait_until(lambda: reconcile_errors(http, url), timeout=30, what="a failed reconcile")
        first = await reconcile_errors(http, url)
        await wait_until(lambda: _more(http, url, first + 2), timeout=30, what="two more passes")
    events = await wait_until(
        lambda: cluster.events(crd.REASON_NATS_SERVER_TOO_OLD), what="the Event"
    )
    assert len(events) == 1 and "needs 2.14.0" in events[0]
    assert cluster.events(crd.EVENT_SHARDS_MOVED) == []
    assert degraded() == condition  # not rewritten pass after pass
    assert await streams_and_consumers(old_nats_server.url) == (0, 0)


async def _more(http: aiohttp.ClientSession, url: str, at_least: float) -> bool:
    return await reconcile_errors(http, url) >= at_least


async def test_a_stream_recording_another_shard_count_is_degraded_and_left_alone(
    scenario: Scenario, nats_server: NatsServer
) -> None:
    cluster = scenario.cluster
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name="COORDINATE",
                subjects=stream_subjects(8),
                retention=RetentionPolicy.WORK_QUEUE,
                metadata={STREAM_META_SHARDS: "8"},
            )
        )
        scenario.start_operator()
        cluster.add_pod("w-0")
        cluster.add_cr(shards=4)
        await wait_until(
            lambda: cluster.condition(crd.CONDITION_DEGRADED) == "True", what="Degraded"
        )
        [condition] = [
            c for c in cluster.status()["conditions"] if c["type"] == crd.CONDITION_DEGRADED
        ]
        assert condition["reason"] == crd.REASON_STREAM_MISMATCH
        assert "records 8 shards" in condition["message"]
        events = await wait_until(
            lambda: cluster.events(crd.REASON_STREAM_MISMATCH), what="the Event"
        )
        assert len(events) == 1
        info = await js.stream_info("COORDINATE")
        assert info.config.subjects == stream_subjects(8)
        assert (await js.account_info()).consumers == 0
    finally:
        await nc.close()
