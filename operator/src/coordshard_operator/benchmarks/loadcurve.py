"""CPU per command and outcome latency across offered rates: why "half the peak" is busy.

The throughput suite's setup (two workers, one SQLite file, one client),
paced open-loop at a series of rates for a few seconds each, then one
closed-loop peak for reference. Each row gives the CPU every process spent
per command, the cores busy and the workers' mean batch. At low rates every
command pays for its own wake-ups (a pull, a transaction, an ack round trip,
a socket read at each hop); as the rate grows they are shared by more
commands, so CPU per command falls as the rate rises.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

import nats

from coordshard_operator.benchmarks import Table, percentile
from coordshard_operator.benchmarks.servicerig import (
    CpuMeter,
    batches,
    closed_loop,
    database_backends,
    gomaxprocs_note,
    nats_procs,
    paced,
    store_note,
    store_url,
    two_workers,
)
from coordshard_operator.natsserver import start_server

RATES = (250, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000)
QUICK_RATES = (500, 2000, 5000)
PROCESSES = ("client", "worker 1", "worker 2", "nats-server")


def _mean(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Mean batch between two (batches, messages) readings."""
    count, size = after[0] - before[0], after[1] - before[1]
    return size / count if count else 0.0


async def _run(args: argparse.Namespace) -> Table:
    quick, go_procs = bool(args.quick), nats_procs(args)
    rates = QUICK_RATES if quick else RATES
    seconds = 2.0 if quick else 6.0
    processes = [*PROCESSES, *(["postgres"] if getattr(args, "database_url", None) else [])]
    table = Table(
        [
            "offered/s",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            *(f"{p} µs" for p in processes),
            "total µs",
            "cores busy",
            "mean batch",
        ]
    )
    with (
        tempfile.TemporaryDirectory(prefix="coordshard-bench-") as tmp,
        store_url(args, Path(tmp)) as db,
    ):
        server = start_server(Path(tmp) / "nats", gomaxprocs=go_procs or None)
        try:
            nc = await nats.connect(server.url)
            assert server.process is not None
            async with two_workers(nc, server.url, Path(tmp), db) as rig:
                pids: list[int | list[int]] = [
                    os.getpid(),
                    rig.procs[0].pid,
                    rig.procs[1].pid,
                    server.process.pid,
                ]
                if getattr(args, "database_url", None):
                    pids.append(database_backends(db))
                meters = dict(zip(processes, pids, strict=True))

                def row(
                    offered: str,
                    got: float,
                    lat: list[float],
                    cpu: dict[str, float],
                    before: tuple[float, float],
                ) -> None:
                    total = sum(cpu.values())
                    table.rows.append(
                        [
                            offered,
                            round(got),
                            round(percentile(lat, 0.5), 1),
                            round(percentile(lat, 0.99), 1),
                            *(round(cpu[p]) for p in processes),
                            round(total),
                            round(total * got / 1e6, 2),
                            round(_mean(before, batches(rig.ports)), 1),
                        ]
                    )

                for rate in rates:
                    meter, before = CpuMeter(meters), batches(rig.ports)
                    got, lat = await paced(rig.client, rig.targets, rate, seconds)
                    row(str(rate), got, lat, meter.per_command_us(len(lat)), before)
                    print(f"load-curve: {rate}/s done", file=sys.stderr, flush=True)
                n = 5_000 if quick else 20_000
                meter, before = CpuMeter(meters), batches(rig.ports)
                got, lat = await closed_loop(rig.client, rig.targets, n, 1000)
                row("peak (1000 in flight)", got, lat, meter.per_command_us(n), before)
            await nc.close()
        finally:
            server.kill()
    table.notes.append(
        f"{seconds:.0f} s per rate; {os.cpu_count()} CPUs shared by all the processes; "
        f"nats-server with {gomaxprocs_note(go_procs)}. "
        "CPU is user + system time from /proc per command. " + store_note(db)
    )
    return table


def run(args: argparse.Namespace) -> Table:
    return asyncio.run(_run(args))
