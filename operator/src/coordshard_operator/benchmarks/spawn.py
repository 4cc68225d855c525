"""Spawn → Ready of one worker process started alone, as local mode starts it.

An embedded nats-server with the group's stream, nothing else running: each
trial starts one worker (``local.workers.WorkerProcess``, so the same command
line and environment as ``coordshard up``) and polls its ``/readyz`` every
10 ms until it answers 200. The time runs from just before the process is
spawned to that answer, so it holds the interpreter start, the imports, the
store's migrations, the health server and the NATS connect. Trials alternate
between a new SQLite store (the first start of a group) and the one the
previous trial made (every later start).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import nats

from coordshard_operator.local.natsserver import start_server
from coordshard_operator.local.workers import WorkerProcess, WorkerSpec
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig

__all__ = ["PROBE_PERIOD_S", "measure_spawns"]

PROBE_PERIOD_S = 0.01
"""How often a trial asks ``/readyz``, seconds: the resolution of the figure."""


async def _ready_after(worker: WorkerProcess, spawned: float, *, timeout: float = 60.0) -> float:
    """Milliseconds from ``spawned`` until the worker's /readyz answers 200."""
    url = f"http://127.0.0.1:{worker.port}/readyz"
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
        while time.monotonic() < deadline:
            if not worker.running:
                raise RuntimeError(f"{worker.name} exited before it was ready")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return (time.monotonic() - spawned) * 1000
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(PROBE_PERIOD_S)  # the probe period
    raise TimeoutError(f"{worker.name} not ready after {timeout} s")


async def measure_spawns(trials: int, data_dir: Path) -> tuple[list[float], list[float]]:
    """Spawn → Ready in ms: (new store, existing store), ``trials`` spawns in all."""
    server = await asyncio.to_thread(start_server, data_dir / "nats")
    fresh: list[float] = []
    existing: list[float] = []
    try:
        nc = await nats.connect(servers=[server.url])
        try:
            config = GroupConfig(shards=16)
            await Engine(nc.jetstream(), config).ensure_stream()
        finally:
            await nc.close()
        store = data_dir / "store-0.db"
        for trial in range(trials):
            new = trial % 2 == 0
            if new:
                store = data_dir / f"store-{trial}.db"
            spec = WorkerSpec(
                nats_url=server.url,
                database_url=f"sqlite:///{store}",
                group=config.group,
                stream=config.stream,
                prefix=config.subject_prefix,
                shards=config.shards,
                log_dir=data_dir / "logs",
            )
            worker = WorkerProcess(f"spawn-{trial}", spec, wake=asyncio.Event())
            spawned = time.monotonic()
            await worker.start()
            try:
                (fresh if new else existing).append(await _ready_after(worker, spawned))
            finally:
                await worker.stop()
    finally:
        await asyncio.to_thread(server.stop)
    return fresh, existing
