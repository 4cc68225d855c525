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

from coordshard_operator.benchmarks import Table, percentile
from coordshard_operator.benchmarks.servicerig import (
    CpuMeter,
    batch_mean,
    batches,
    closed_loop,
    embedded,
    gomaxprocs_note,
    nats_procs,
    paced,
    process_pids,
    store_note,
    two_workers,
)
from coordshard_operator.local.quantiles import reported

RATES = (250, 500, 1000, 2000, 3000, 4000, 5000, 6000, 7000)
QUICK_RATES = (500, 2000, 5000)


async def _run(args: argparse.Namespace) -> Table:
    quick = bool(args.quick)
    rates = QUICK_RATES if quick else RATES
    seconds = 2.0 if quick else 6.0
    async with (
        embedded(args) as setup,
        two_workers(setup.nc, setup.server.url, setup.tmp, setup.db) as rig,
    ):
        pids = process_pids(rig, setup.server, setup.db)
        table = Table(
            [
                "offered/s",
                "achieved/s",
                "p50 ms",
                "p99 ms",
                *(f"{p} µs" for p in pids),
                "total µs",
                "cores busy",
                "mean batch",
            ]
        )

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
                    reported(lat, 0.99, ndigits=1),
                    *(round(v) for v in cpu.values()),
                    round(total),
                    round(total * got / 1e6, 2),
                    round(batch_mean(before, batches(rig.ports)) or 0.0, 1),
                ]
            )

        for rate in rates:
            meter, before = CpuMeter(pids), batches(rig.ports)
            got, lat = await paced(rig.client, rig.targets, rate, seconds)
            row(str(rate), got, lat, meter.per_command_us(len(lat)), before)
            print(f"load-curve: {rate}/s done", file=sys.stderr, flush=True)
        n = 5_000 if quick else 20_000
        meter, before = CpuMeter(pids), batches(rig.ports)
        got, lat = await closed_loop(rig.client, rig.targets, n, 1000)
        row("peak (1000 in flight)", got, lat, meter.per_command_us(n), before)
        db = setup.db
    table.notes.append(
        f"{seconds:.0f} s per rate; {os.cpu_count()} CPUs shared by all the processes; "
        f"nats-server with {gomaxprocs_note(nats_procs(args))}. "
        "CPU is user + system time from /proc per command. " + store_note(db)
    )
    return table


def run(args: argparse.Namespace) -> Table:
    return asyncio.run(_run(args))
