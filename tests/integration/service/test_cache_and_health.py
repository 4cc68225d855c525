"""The cache across a shard moving away and back, and the HTTP probes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from coordshard_client import CoordinateClient, Translate, shard_of
from coordshard_client.messages import (
    Command,
    CreatePoint,
    CreateSystem,
    GetPoint,
    MovePoint,
    Outcome,
    Point,
)
from coordshard_operator.local.natsserver import NatsServer, free_port
from coordshard_service import app
from coordshard_service.cache import Cache
from coordshard_service.commands import Incoming, apply_batch
from coordshard_service.metrics import Metrics
from coordshard_service.store import Store

from .conftest import (
    SHARDS,
    STREAM_KEY,
    Provisioner,
    RunningWorker,
    delivery,
    start_member,
    start_worker,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.integration


async def test_cache_drops_a_shard_that_leaves_and_is_fresh_when_it_returns(
    nats_server: NatsServer,
    provisioner: Provisioner,
    client: CoordinateClient,
    database_url: str,
) -> None:
    moving = shard_of("roamer", SHARDS)
    others = [s for s in range(SHARDS) if s != moving]
    everything = list(range(SHARDS))
    await provisioner.assign(member="a", incarnation="1", shards=everything)
    # b has no shards yet, so (as the engine does) it has no consumer: it waits for one.
    workers: list[RunningWorker] = []
    for member in ("a", "b"):
        workers.append(
            await start_member(nats_server, provisioner, database_url=database_url, member=member)
        )
    a, b = workers
    try:
        await wait_until(lambda: a.worker.bound)
        await client.create_system(system_id="roamer", name="r", dimension=2)
        await client.create_point(system_id="roamer", point_id="p", coordinates=(0, 0))
        await client.get_point(system_id="roamer", point_id="p")
        assert moving in a.worker.cache.shards()

        # Move the shard to b: narrow a first (WorkQueue filters must not overlap), then grow b.
        await provisioner.assign(member="a", incarnation="1", shards=others)
        await provisioner.assign(member="b", incarnation="1", shards=[moving])
        await wait_until(lambda: moving not in a.worker.shards and moving in b.worker.shards)
        assert moving not in a.worker.cache.shards()

        on_b = await client.move_point(
            system_id="roamer", point_id="p", moves=[Translate(delta=(5, 0))]
        )
        assert on_b.version == 2

        # And back to a: a must read b's write, not an old cached value.
        # b is left with no shards, so its consumer goes.
        await provisioner.delete(provisioner.consumers["b"])
        await provisioner.assign(member="a", incarnation="1", shards=everything)
        await wait_until(lambda: moving in a.worker.shards and moving not in b.worker.shards)
        back = await client.move_point(
            system_id="roamer", point_id="p", moves=[Translate(delta=(1, 0))]
        )
        assert back.version == 3 and back.coordinates == (6.0, 0.0)
        assert moving not in b.worker.cache.shards()
    finally:
        for w in workers:
            await w.shutdown()


async def test_probes_follow_the_consumer_and_metrics_count_commands(
    nats_server: NatsServer,
    provisioner: Provisioner,
    client: CoordinateClient,
    database_url: str,
) -> None:
    name = await provisioner.assign(member="h", incarnation="1", shards=list(range(SHARDS)))
    settings = worker_settings(
        nats_server,
        stream=provisioner.stream,
        database_url=database_url,
        member="h",
        incarnation="1",
    ).model_copy(update={"http_enabled": True, "http_port": 0, "http_host": "127.0.0.1"})
    running = await start_worker(settings)
    try:
        await wait_until(lambda: running.worker.bound)
        await client.create_system(system_id="m", name="m", dimension=2)
        health = running.health
        assert health is not None
        base = f"http://127.0.0.1:{health.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
            async with http.get(base + "/metrics") as r:
                text = await r.text()
            assert 'coordshard_worker_commands_total{op="create-system",outcome="ok"} 1.0' in text
            assert "coordshard_worker_owned_shards 8.0" in text
            assert "coordshard_worker_batch_size_sum 1.0" in text  # the one command, one batch

            # No consumer (no shards, or fenced): still ready to be given shards, but unbound.
            await provisioner.delete(name)
            await wait_until(lambda: not running.worker.bound)
            async with http.get(base + "/readyz") as r:
                assert r.status == 200
                assert (await r.json())["state"] == "waiting"

        await running.shutdown()
        assert running.worker.state == "stopped"
    finally:
        await running.shutdown()


async def test_while_nats_is_unreachable_it_is_alive_not_ready_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    # Nothing listens on the port: the worker keeps trying, as a pod started
    # before NATS must, and says so on its probes instead of failing liveness.
    nowhere = NatsServer(store_dir=tmp_path / "never-started", port=free_port())
    settings = worker_settings(
        nowhere,
        stream="S",
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        member="w",
        incarnation="1",
    ).model_copy(update={"http_enabled": True, "http_host": "127.0.0.1", "http_port": free_port()})
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(settings, stop=stop, handle_signals=False))
    base = f"http://127.0.0.1:{settings.http_port}"
    async with aiohttp.ClientSession() as http:

        async def probes() -> tuple[int, int, dict[str, object]] | None:
            try:
                async with http.get(base + "/healthz") as live, http.get(base + "/readyz") as ready:
                    return live.status, ready.status, await ready.json()
            except aiohttp.ClientConnectionError:
                return None  # not listening yet

        seen = None
        async with asyncio.timeout(10):
            while seen is None and not task.done():
                seen = await probes()
                await asyncio.sleep(0.05)
        assert seen is not None and seen[:2] == (200, 503)
        assert seen[2]["state"] == "connecting" and seen[2]["nats"] is False
    stop.set()
    await asyncio.wait_for(task, 10)  # returns, no exception


def test_a_pod_whose_shard_was_written_elsewhere_meanwhile_reads_the_store_not_its_cache(
    database_url: str,
) -> None:
    # Pod a caches a point; the shard moves to pod b and back between two of a's
    # looks at its consumer, so a never saw it leave (retain did not run). Only
    # the shard's mark in the store, changed by b's batch, tells a its cache is stale.
    store = Store(database_url)
    store.migrate()
    sid = "roamer"
    metrics = Metrics()

    def incoming(seq: int, command: Command) -> Incoming:
        return delivery(sid, seq, command)

    def move(seq: int, dx: float) -> Incoming:
        return incoming(
            seq, MovePoint(system_id=sid, point_id="p", moves=(Translate(delta=(dx, 0)),))
        )

    def apply(cache: Cache, *items: Incoming) -> list[Outcome]:
        return apply_batch(
            store, cache, list(items), shards=SHARDS, stream=STREAM_KEY, consumer="c",
            metrics=metrics,
        )  # fmt: skip

    on_a, on_b = Cache(100), Cache(100)
    try:
        apply(
            on_a,
            incoming(1, CreateSystem(system_id=sid, name="r", dimension=2)),
            incoming(2, CreatePoint(system_id=sid, point_id="p", coordinates=(0, 0))),
            incoming(3, GetPoint(system_id=sid, point_id="p")),
        )
        assert on_a.point(sid, "p") is not None
        (elsewhere,) = apply(on_b, move(4, 5))
        assert elsewhere.ok
        (back,) = apply(on_a, move(5, 1))
        assert isinstance(back.result, Point)
        assert (back.result.coordinates, back.result.version) == ((6.0, 0.0), 3)
    finally:
        store.dispose()
