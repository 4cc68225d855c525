"""``bench throughput --shards``: end-to-end commands/s at several shard counts, one run.

Issue 12's row "end-to-end commands/s at N=4096 vs N=16, 3 workers, same run,
>= 0.9". For each N in turn: a fresh stream made by the product's engine (the
layout a new stream gets: server-computed blocks), three worker processes,
their consumers placed by one ``run_pass`` as the membership sources would,
then the same closed loop as the peak phase (1000 callers). The stream is
deleted between counts; the store is shared (the systems are named per N).
The ratio printed is each N's rate against the first N's.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client

from coordshard_client import CoordinateClient
from coordshard_client.subjects import blocks_of
from coordshard_operator.benchmarks.servicerig import (
    CONFIG,
    GROUP,
    CpuMeter,
    Rig,
    batch_mean,
    batches,
    closed_loop,
    process_pids,
    seed_targets,
    spawn_worker,
    stop_workers,
)
from coordshard_operator.local.natsserver import NatsServer, free_port
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.lanes import LANE_BLOCKS
from coordshard_operator.rebalancer.passes import run_pass

__all__ = ["WORKERS", "Count", "measure_counts", "variants"]

WORKERS = 3
SYSTEMS = 256
POINTS = 4
"""Targets: 256 systems of 4 points, so at any N the load is spread over many shards."""


@asynccontextmanager
async def group_at(
    nc: Client, url: str, tmp: Path, db: str, *, shards: int, label: str, lane_blocks: int
) -> AsyncIterator[Rig]:
    """A stream of ``shards`` shards, three workers serving it on lanes of at most
    ``lane_blocks`` blocks, and a warmed-up client; ``label`` names its workers and
    systems (unique in the shared store)."""
    config = GroupConfig(stream=CONFIG.stream, subject_prefix=CONFIG.subject_prefix,
                         group=GROUP, shards=shards, lane_blocks=lane_blocks,
                         max_ack_pending=CONFIG.max_ack_pending)  # fmt: skip
    engine = Engine(nc.jetstream(), config)
    await engine.ensure_stream()
    names = [f"{label}-w{i}" for i in range(WORKERS)]
    infos = [MemberInfo.of(group=GROUP, member=n, incarnation="bench") for n in names]
    await run_pass(engine, shards=shards, members={i.id: i for i in infos}, epoch=1)
    ports = [free_port() for _ in names]
    procs = [spawn_worker(url, n, db, port, tmp / f"{n}.log", shards=shards)
             for n, port in zip(names, ports, strict=True)]  # fmt: skip
    try:
        async with CoordinateClient(nc, shards=shards, timeout=60) as client:
            systems = [f"{label}-sys-{i:03d}" for i in range(SYSTEMS)]
            targets = await seed_targets(client, systems, points=POINTS)
            yield Rig(client, targets, procs, ports, [i.id for i in infos])
    finally:
        stop_workers(procs)
        await nc.jetstream().delete_stream(config.stream)


@dataclass(frozen=True, slots=True)
class Count:
    """One N's closed loop: the rate, the latencies, and how the workers saw it."""

    shards: int
    lane_blocks: int
    """F, the most blocks on one lane."""
    rate: float
    latencies: list[float]
    mean_batch: float | None
    """Messages per fetched batch over the loop (from the workers' /metrics)."""
    mean_store_batch: float | None
    """Messages per store transaction over the loop (several lanes' batches joined)."""
    lanes: int
    """Consumers the group's workers serve (one pull loop each)."""
    cpu_us: dict[str, float]
    """CPU µs per command of the loop, by process (``CpuMeter``)."""


def variants(counts: Sequence[int], lane_blocks: Sequence[int]) -> list[tuple[int, int]]:
    """(N, F) to run, in order: each N with each F, but one F of those that give the
    same lanes (at N=16 every F from 6 up is one lane per member)."""
    runs = []
    for n in counts:
        per_member = math.ceil(blocks_of(n) / WORKERS)
        seen: set[int] = set()
        for f in lane_blocks:
            if (lanes := math.ceil(per_member / f)) not in seen:
                seen.add(lanes)
                runs.append((n, f))
    return runs


async def measure_counts(
    nc: Client,
    server: NatsServer,
    tmp: Path,
    db: str,
    *,
    counts: list[int],
    commands: int,
    lane_blocks: Sequence[int] = (LANE_BLOCKS,),
) -> list[Count]:
    """One ``Count`` for each (N, F) of ``variants``, in order."""
    results = []
    for k, (n, f) in enumerate(variants(counts, lane_blocks)):
        label = f"r{k}n{n}"
        async with group_at(nc, server.url, tmp, db, shards=n, label=label, lane_blocks=f) as rig:
            lanes = len(await nc.jetstream().consumers_info(CONFIG.stream))
            before = batches(rig.ports)
            before_store = batches(rig.ports, histogram="store_batch_size")
            meter = CpuMeter(process_pids(rig, server, db))
            rate, lat = await closed_loop(rig.client, rig.targets, commands, 1000)
            cpu = meter.per_command_us(len(lat))
            mean = batch_mean(before, batches(rig.ports))
            store = batch_mean(before_store, batches(rig.ports, histogram="store_batch_size"))
        results.append(Count(n, f, rate, lat, mean, store, lanes, cpu))
    return results
