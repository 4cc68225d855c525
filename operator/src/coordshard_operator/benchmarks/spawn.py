"""Spawn → Ready of one worker process started alone, as local mode starts it.

An embedded nats-server with the group's stream, nothing else running: each
trial starts one worker (``local.workers.WorkerProcess``, so the same command
line and environment as ``coordshard up``) and polls its ``/readyz`` every
10 ms until it answers 200. The time runs from just before the process is
spawned to that answer, so it holds the interpreter start, the imports, the
store's migrations, the health server and the NATS connect. Trials alternate
between a new SQLite store (the first start of a group) and the one the
previous trial made (every later start). Beside the wall time each trial reads
the CPU time the worker had used when it turned Ready (Linux ``/proc``): on a
machine shared with other work the wall time follows the load, the CPU time
does not.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats

from coordshard_operator.local.natsserver import start_server
from coordshard_operator.local.workers import WorkerProcess, WorkerSpec
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig

__all__ = ["PROBE_PERIOD_S", "Spawns", "measure_spawns"]

PROBE_PERIOD_S = 0.01
"""How often a trial asks ``/readyz``, seconds: the resolution of the figure."""


@dataclass
class Spawns:
    """Spawn → Ready of each trial, ms: wall time and the worker's CPU time."""

    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)


def _cpu_ms(pid: int) -> float | None:
    """User + system CPU time ``pid`` has used, ms; None without Linux's /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


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


async def measure_spawns(trials: int, data_dir: Path) -> tuple[Spawns, Spawns]:
    """Spawn → Ready: (new store, existing store), ``trials`` spawns in all."""
    server = await asyncio.to_thread(start_server, data_dir / "nats")
    fresh = Spawns()
    existing = Spawns()
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
                wall = await _ready_after(worker, spawned)
                cpu = _cpu_ms(worker.pid) if worker.pid is not None else None
                into = fresh if new else existing
                into.wall_ms.append(wall)
                if cpu is not None:
                    into.cpu_ms.append(cpu)
            finally:
                await worker.stop()
    finally:
        await asyncio.to_thread(server.stop)
    return fresh, existing
