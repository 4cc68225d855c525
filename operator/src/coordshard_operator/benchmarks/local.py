"""Rebalance latency in local mode: kill -9 a worker, time until each of its shards answers.

One local system (embedded nats-server, worker processes, the local
rebalancer, grace 0). Each trial picks a worker, notes its shards, kills it
with SIGKILL, and at once sends a query for a system on every one of those
shards; the query is retried until it answers. The latency of a shard is from
the kill to its first successful outcome, so it includes noticing the death
(the process-exit watcher), planning, the engine's handoff and the new
owner's first fetch. Then the worker is restarted (a new incarnation, which
takes shards back by the planner's rules) before the next trial.

Before that system starts, ``benchmarks.spawn`` times spawn → Ready of one
worker started alone, with a new store and with an existing one.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from coordshard_client.errors import CoordinateError, CoordinateTimeoutError
from coordshard_client.publisher import CoordinateClient
from coordshard_operator.benchmarks import Table
from coordshard_operator.benchmarks.spawn import measure_spawns
from coordshard_operator.benchmarks.workload import ids_per_shard
from coordshard_operator.local.quantiles import reported
from coordshard_operator.local.system import LocalSystem, SystemOptions

SHARDS = 16
WORKERS = 3


async def _first_answer(client: CoordinateClient, system_id: str, killed_at: float) -> float:
    """Milliseconds from ``killed_at`` until a query for ``system_id`` answers."""
    while True:
        try:
            await client.get_system(system_id=system_id, timeout=2.0)
            return (time.monotonic() - killed_at) * 1000
        except CoordinateTimeoutError:
            continue
        except CoordinateError:
            return (time.monotonic() - killed_at) * 1000  # a refusal is an answer too


async def measure(trials: int, data_dir: Path) -> tuple[list[float], list[float], list[int]]:
    """Per-shard latencies, per-kill worst latencies, shards moved per kill."""
    ids = ids_per_shard(SHARDS)
    rng = random.Random(7)
    shard_ms: list[float] = []
    kill_ms: list[float] = []
    moved: list[int] = []
    options = SystemOptions(workers=WORKERS, shards=SHARDS)
    async with LocalSystem(options, data_dir) as system:
        assert system.client is not None and system.group is not None
        client = system.client
        for sid in ids:
            await client.create_system(system_id=sid, name=sid, dimension=2)
        for trial in range(trials):
            await system.wait_converged()
            victim = system.workers[rng.choice(sorted(system.workers))]
            shards = system.group.assignment.get(victim.member_id, ())
            if not shards:
                continue
            killed_at = time.monotonic()
            system.kill(victim.name)
            answers = await asyncio.gather(
                *(_first_answer(client, ids[s], killed_at) for s in shards)
            )
            shard_ms.extend(answers)
            kill_ms.append(max(answers))
            moved.append(len(shards))
            await victim.start()
            if (trial + 1) % 10 == 0:
                sys.stderr.write(f"local: {trial + 1}/{trials} kills\n")
    return shard_ms, kill_ms, moved


def run(args: argparse.Namespace) -> Table:
    trials = getattr(args, "trials", None) or (10 if args.quick else 100)
    spawns = getattr(args, "trials", None) or (10 if args.quick else 100)
    with tempfile.TemporaryDirectory(prefix="coordshard-bench-") as tmp:
        fresh, existing = asyncio.run(measure_spawns(spawns, Path(tmp) / "spawn"))
        shard_ms, kill_ms, moved = asyncio.run(measure(trials, Path(tmp) / "failover"))
    table = Table(["measure", "samples", "median ms", "p90 ms", "p99 ms", "max ms"])
    for name, values in (
        ("spawn -> Ready, new store", fresh.wall_ms),
        ("spawn -> Ready, existing store", existing.wall_ms),
        ("  worker CPU until Ready, new store", fresh.cpu_ms),
        ("  worker CPU until Ready, existing store", existing.cpu_ms),
        ("kill -> shard answers", shard_ms),
        ("kill -> all shards", kill_ms),
    ):
        if not values:
            continue  # CPU times need Linux's /proc
        table.rows.append(
            [
                name,
                len(values),
                statistics.median(values),
                reported(values, 0.9),
                reported(values, 0.99),
                max(values),
            ]
        )
    table.notes.append(
        f"spawn -> Ready: {spawns} workers started one at a time, alone (no other worker, "
        "no load), /readyz polled every 10 ms; CPU: the worker's user + system time when "
        "it turned Ready. Target: <= 2000 ms for a worker started alone on a quiet machine."
    )
    table.notes.append(
        f"{len(kill_ms)} kills of 1 of {WORKERS} workers, {SHARDS} shards, grace 0; "
        f"{statistics.mean(moved):.1f} shards moved per kill. Target: p99 <= 500 ms."
    )
    table.samples = {
        "shard_ms": shard_ms,
        "kill_ms": kill_ms,
        "spawn_new_store_ms": fresh.wall_ms,
        "spawn_existing_store_ms": existing.wall_ms,
        "spawn_new_store_cpu_ms": fresh.cpu_ms,
        "spawn_existing_store_cpu_ms": existing.cpu_ms,
    }
    return table
