"""End-to-end throughput and latency of the Coordinate Service, against the raw ceiling.

One run, one embedded nats-server, on this machine:

1. *ceiling*: raw nats-py, one process: ``publish_async`` of N messages of
   the same size as a command, while a pull consumer ``fetch(500)`` + ``ack()``s
   them; no domain work, no database, no replies.
2. *peak*: 2 worker processes (``python -m coordshard_service``, SQLite WAL
   shared file, 8 shards each) + 1 SDK client with many commands in flight
   (``move_point``): commands/s and outcome latency.
3. *half*: the same client paced open-loop at half the peak rate: latency.
4. *memory*: all shards handed to worker 1, which reads 100k points (quick:
   10k), then its RSS and cache size.

The nats-server runs with ``GOMAXPROCS=1`` unless ``--nats-procs`` says
otherwise. It shares the machine with three busy processes, and with Go's
default (one thread running Go code per CPU) a third of its CPU at half the
peak rate went to handing goroutines between its threads (``perf``: context
switches, futex wake-ups, the runtime's monitor thread); docs/benchmarks.md
has the comparison. The ceiling runs on the same server.

The consumers are provisioned the way the rebalancer does (``servicerig``: WorkQueue
stream, one durable pull consumer per member, filter = its shards); the
operator package starts workers as processes and talks to them only over
NATS, HTTP and the SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time

import nats
import psycopg
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from coordshard_client import Translate
from coordshard_client.messages import Envelope, MovePoint
from coordshard_operator.benchmarks import Table, int_list, percentile
from coordshard_operator.benchmarks.scratchdb import libpq_url
from coordshard_operator.benchmarks.servicerig import (
    GROUP,
    SHARDS,
    STREAM,
    CpuMeter,
    Setup,
    assign,
    batches,
    closed_loop,
    cpu_note,
    embedded,
    gomaxprocs_note,
    mean_batch,
    metric,
    nats_procs,
    paced,
    process_pids,
    rss_mb,
    store_note,
    two_workers,
)
from coordshard_operator.benchmarks.shardcount import WORKERS, measure_counts
from coordshard_operator.local.quantiles import reported
from coordshard_operator.rebalancer.lanes import LANE_BLOCKS


def _payload_size() -> int:
    command = MovePoint(system_id="sys-00", point_id="p0000", moves=(Translate(delta=(1, 0)),))
    return len(Envelope(command=command).model_dump_json(exclude_none=True))


async def _ceiling(nc: Client, n: int, size: int) -> float:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name="CEIL", subjects=["ceil.>"], retention=RetentionPolicy.WORK_QUEUE)
    )
    await js.add_consumer("CEIL", ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT))
    psub = await js.pull_subscribe_bind(durable="c", stream="CEIL")
    payload = b"x" * size
    started = time.perf_counter()

    async def publish() -> None:
        for i in range(n):
            await js.publish_async(f"ceil.{i % SHARDS}.k.op", payload)
        await js.publish_async_completed()

    async def consume() -> None:
        got = 0
        while got < n:
            try:
                msgs = await psub.fetch(500, timeout=2)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for m in msgs:
                await m.ack()
            got += len(msgs)

    await asyncio.gather(publish(), consume())
    elapsed = time.perf_counter() - started
    await js.delete_stream("CEIL")
    return n / elapsed


def _seed_points(db: str, systems: list[str], per_system: int) -> list[tuple[str, str]]:
    """Insert points straight into the (already migrated) store: setup, not measured."""
    rows = [(GROUP, s, f"p{j:05d}", "[0.0, 0.0]", 1) for s in systems for j in range(per_system)]
    columns = "points (group_name, system_id, point_id, coordinates, version)"
    if db.startswith("sqlite"):
        with sqlite3.connect(db.removeprefix("sqlite:///"), timeout=30) as conn:
            conn.executemany(f"INSERT INTO {columns} VALUES (?,?,?,?,?)", rows)
    else:
        with (
            psycopg.connect(libpq_url(db)) as pg,
            pg.cursor() as cur,
            cur.copy(f"COPY {columns} FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
    return [(r[1], r[2]) for r in rows]


async def _run(args: argparse.Namespace) -> Table:
    quick = bool(args.quick)
    n_ceiling = 20_000 if quick else 100_000
    n_peak = 5_000 if quick else 30_000
    half_seconds = 5.0 if quick else 15.0
    cached_points = 10_000 if quick else 100_000
    size = _payload_size()
    table = Table(["phase", "commands", "commands/s", "p50 ms", "p99 ms", "notes"])
    async with embedded(args) as setup:
        nc, server, db = setup.nc, setup.server, setup.db
        assert server.process is not None
        meter = CpuMeter({"client": os.getpid(), "nats-server": server.process.pid})
        ceiling = await _ceiling(nc, n_ceiling, size)
        ceiling_cpu = meter.per_command_us(n_ceiling)
        table.samples["ceiling_cpu_us"] = list(ceiling_cpu.values())
        table.rows.append(
            [
                "ceiling (raw nats-py)",
                n_ceiling,
                round(ceiling),
                "",
                "",
                f"publish_async + fetch(500) + ack, {size} B; {cpu_note(ceiling_cpu)}",
            ]
        )
        if counts := _counts(args):
            await _by_count(table, setup, args, counts, n_peak, ceiling)
        else:
            await _phases(table, setup, args, ceiling, n_peak, half_seconds, cached_points)
    table.notes.append(
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; nats-server "
        f"({gomaxprocs_note(nats_procs(args))}), the workers and the client share it. "
        + store_note(db)
    )
    return table


def _counts(args: argparse.Namespace) -> list[int]:
    """``--shards``: the shard counts to compare end to end ([]: the 16-shard phases)."""
    return list(int_list(getattr(args, "shards", None)))


async def _by_count(
    table: Table,
    setup: Setup,
    args: argparse.Namespace,
    counts: list[int],
    commands: int,
    ceiling: float,
) -> None:
    """One row per shard count (3 workers, closed loop) and its rate against the first
    N's run before it: a count may be repeated (``16,4096,16,4096``), making pairs."""
    results = await measure_counts(
        setup.nc, setup.server, setup.tmp, setup.db, counts=counts, commands=commands,
        lane_blocks=int_list(getattr(args, "lane_blocks", None), (LANE_BLOCKS,)),
    )  # fmt: skip
    reference = results[0].rate
    for k, c in enumerate(results):
        if c.shards == counts[0]:
            reference = c.rate
        table.samples[f"shards_{c.shards}_run{k}_ms"] = c.latencies
        table.samples[f"shards_{c.shards}_run{k}_cpu_us"] = list(c.cpu_us.values())
        batch = (
            f"mean batch {c.mean_batch:.1f} fetched, {c.mean_store_batch:.1f} per transaction"
            if c.mean_batch is not None and c.mean_store_batch is not None
            else "no batches"
        )
        table.rows.append(
            [
                f"N={c.shards} F={c.lane_blocks} ({WORKERS} workers, SDK)",
                commands,
                round(c.rate),
                percentile(c.latencies, 0.5),
                reported(c.latencies, 0.99),
                f"{c.rate / reference:.2f} of N={counts[0]}; {c.rate / ceiling:.0%} of "
                f"ceiling; 1000 in flight; {batch}; {c.lanes} lanes; {cpu_note(c.cpu_us)}; a "
                "new (blocks) stream, consumers placed by run_pass",
            ]
        )


async def _phases(
    table: Table,
    setup: Setup,
    args: argparse.Namespace,
    ceiling: float,
    n_peak: int,
    half_seconds: float,
    cached_points: int,
) -> None:
    """Peak, half of peak and memory: two workers on 16 shards."""
    nc, server, db = setup.nc, setup.server, setup.db
    async with two_workers(nc, server.url, setup.tmp, db) as rig:
        client, targets, procs, ports = rig.client, rig.targets, rig.procs, rig.ports
        meter = CpuMeter(process_pids(rig, server, db))
        before_peak = batches(ports)
        peak, lat = await closed_loop(client, targets, n_peak, 1000)
        peak_cpu = meter.per_command_us(n_peak)
        after_peak = batches(ports)
        peak_batch = mean_batch(before_peak, after_peak)
        table.samples["peak_ms"] = lat
        table.samples["peak_cpu_us"] = list(peak_cpu.values())
        table.rows.append(
            [
                "peak (2 workers, SDK)",
                n_peak,
                round(peak),
                percentile(lat, 0.5),
                reported(lat, 0.99),
                f"{peak / ceiling:.0%} of ceiling; 1000 in flight; {cpu_note(peak_cpu)}; "
                + peak_batch,
            ]
        )
        meter = CpuMeter(meter.pids)
        got, lat = await paced(client, targets, peak / 2, half_seconds)
        half_cpu = meter.per_command_us(len(lat))
        half_batch = mean_batch(after_peak, batches(ports))
        busy = sum(half_cpu.values()) * got / 1e6
        table.samples["half_ms"] = lat
        table.rows.append(
            [
                "half of peak, paced",
                len(lat),
                round(got),
                percentile(lat, 0.5),
                reported(lat, 0.99),
                f"target {peak / 2:.0f}/s for {half_seconds:.0f}s; "
                f"{cpu_note(half_cpu)}; {busy:.2f} cores busy; {half_batch}",
            ]
        )
        # Memory: hand every shard to w1 (no messages pending, so no reset is needed).
        await nc.jetstream().delete_consumer(STREAM, rig.consumers[1])
        await assign(nc, "w1", list(range(SHARDS)))
        big = [f"big-{i}" for i in range(10)]
        for s in big:
            await client.create_system(system_id=s, name=s, dimension=2)
        seeded = _seed_points(db, big, cached_points // len(big))
        started = time.perf_counter()

        async def reader(first: int) -> None:
            for s, p in seeded[first::500]:
                await client.get_point(system_id=s, point_id=p)

        await asyncio.gather(*(reader(w) for w in range(500)))
        reads = len(seeded) / (time.perf_counter() - started)
        entries = metric(ports[0], "coordshard_worker_cache_entries")
        table.rows.append(
            [
                "memory (1 worker)",
                len(seeded),
                round(reads),
                "",
                "",
                f"worker RSS {rss_mb(procs[0].pid):.0f} MB "
                f"with {entries:.0f} cached entries (get_point rate shown)",
            ]
        )


def run(args: argparse.Namespace) -> Table:
    return asyncio.run(_run(args))
