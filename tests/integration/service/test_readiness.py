"""Readiness and liveness follow the serving loop, not only the connection.

Each test wedges a bound worker in a way that leaves it connected and its HTTP
server answering — a batch held by a store that never takes it, a NATS reader
that died — and checks that /readyz turns 503 within the stall bound (so the
rebalancer's grace period moves its shards), /healthz after twice that (so a
liveness probe restarts it), and that both recover when the wedge goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from coordshard_client import CoordinateClient
from coordshard_operator.local.natsserver import NatsServer

from ..conftest import sqlite_write_lock
from .conftest import SHARDS, Provisioner, RunningWorker, start_worker, wait_until, worker_settings

pytestmark = pytest.mark.integration

STALL = 1.0
"""The test's stall bound (seconds); the default is 30."""


async def probe(running: RunningWorker, path: str) -> tuple[int, dict[str, object]]:
    assert running.health is not None
    url = f"http://127.0.0.1:{running.health.port}{path}"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, await r.json()


async def until_status(
    running: RunningWorker, path: str, status: int, *, timeout: float
) -> dict[str, object]:
    """Poll ``path`` until it answers ``status``; its body."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        code, body = await probe(running, path)
        if code == status:
            return body
        assert asyncio.get_running_loop().time() < deadline, f"{path} still {code}: {body}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def watched(
    nats_server: NatsServer, provisioner: Provisioner, tmp_path: Path
) -> AsyncIterator[RunningWorker]:
    """A bound worker on a SQLite store, with its probes served and a 1 s stall bound."""
    await provisioner.assign(member="r", incarnation="1", shards=list(range(SHARDS)))
    settings = worker_settings(
        nats_server,
        stream=provisioner.stream,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        member="r",
        incarnation="1",
    ).model_copy(
        update={
            "http_enabled": True,
            "http_port": 0,
            "http_host": "127.0.0.1",
            "stall_timeout": STALL,
        }
    )
    running = await start_worker(settings)
    await wait_until(lambda: running.worker.bound)
    yield running
    await running.shutdown()


async def test_a_batch_the_store_holds_turns_the_worker_unready_then_not_live_then_back(
    watched: RunningWorker, client: CoordinateClient, tmp_path: Path
) -> None:
    await client.create_system(system_id="held", name="h", dimension=2)
    assert (await probe(watched, "/readyz"))[0] == 200
    async with sqlite_write_lock(tmp_path / "store.db"):  # a writer that never commits
        call = asyncio.create_task(
            client.create_point(system_id="held", point_id="p", coordinates=(1, 2), timeout=60)
        )
        body = await until_status(watched, "/readyz", 503, timeout=10 * STALL)
        assert "stuck" in body and watched.worker.bound
        await until_status(watched, "/healthz", 503, timeout=10 * STALL)
    point = await call
    assert point.coordinates == (1.0, 2.0)
    await until_status(watched, "/readyz", 200, timeout=10 * STALL)
    await until_status(watched, "/healthz", 200, timeout=10 * STALL)


async def test_a_worker_whose_nats_reader_died_turns_unready_and_not_live(
    watched: RunningWorker, client: CoordinateClient
) -> None:
    # The reader task is what a poison subject killed in nats-py: the connection
    # stays "connected", every pull and request goes unanswered.
    reader = watched.worker.nc._reading_task
    assert reader is not None
    reader.cancel()
    assert watched.worker.nc.is_connected
    call = asyncio.create_task(
        client.create_system(system_id="deaf", name="d", dimension=2, timeout=30)
    )
    body = await until_status(watched, "/readyz", 503, timeout=10 * STALL)
    assert "stuck" in body, body
    await until_status(watched, "/healthz", 503, timeout=20 * STALL)
    call.cancel()


async def test_an_idle_bound_worker_stays_ready_and_live(watched: RunningWorker) -> None:
    # Nothing to do is not stuck: the loop comes round and its consumer answers.
    await asyncio.sleep(3 * STALL)  # proving a negative needs a window
    assert (await probe(watched, "/readyz"))[0] == 200
    assert (await probe(watched, "/healthz"))[0] == 200
