"""nats-server's CPU per message by consumer layout: what a lane's filter list costs.

``bench throughput --shards`` found nats-server's share per command larger at
N = 4096 (K = 512 blocks) than at N = 16, whatever the lane size. Here the
server alone is measured: one fresh nats-server, and per case a work-queue
stream storing under the blocks transform (``block_transform``), its
consumers made, ``backlog`` messages published (spread over 256 ids, as the
throughput rig's systems), then drained by one pull loop per consumer
(``fetch(100)``, acks, ``ack_sync`` for the last). The server's CPU time
(``/proc``) is divided by the messages, for the publish and for the drain.

The cases: K = 16 and 512 blocks split over 3 consumers (the default lanes
of 3 members at N = 16, and one lane per member at N = 4096), K = 16 over 8
and 16 (two filters and one filter per consumer), K = 512 over 18 (6 lanes
per member at F = 32), one consumer listing all 512 blocks, and one consumer
with the single wildcard ``<prefix>.b.>``. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    PubAck,
    RetentionPolicy,
    StreamConfig,
    SubjectTransform,
)

from coordshard_client.subjects import block_filter, block_transform, shard_of
from coordshard_operator.benchmarks import Table
from coordshard_operator.benchmarks.servicerig import CpuMeter
from coordshard_operator.local.natsserver import start_server

__all__ = ["CASES", "Case", "measure", "run"]

PREFIX = "fc.cmd"
IDS = [f"sys-{i}" for i in range(256)]


@dataclass(frozen=True, slots=True)
class Case:
    label: str
    blocks: int
    shards: int
    consumers: int
    """Consumers the blocks are dealt over (block b to consumer b mod consumers);
    0: one consumer with the one wildcard filter."""

    def filters(self) -> list[list[str]]:
        if self.consumers == 0:
            return [[f"{PREFIX}.b.>"]]
        return [
            [block_filter(b, prefix=PREFIX) for b in range(self.blocks) if b % self.consumers == c]
            for c in range(self.consumers)
        ]


CASES = (
    Case("N=16: 16 blocks over 3 consumers", 16, 16, 3),
    Case("16 blocks over 8 consumers", 16, 16, 8),
    Case("16 blocks over 16 consumers", 16, 16, 16),
    Case("N=4096: 512 blocks over 3 (F >= 171)", 512, 4096, 3),
    Case("N=4096: 512 blocks over 18 (F = 32)", 512, 4096, 18),
    Case("512 blocks on 1 consumer", 512, 4096, 1),
    Case("1 consumer, one wildcard (K = 512)", 512, 4096, 0),
    Case("1 consumer, one wildcard (K = 16)", 16, 16, 0),
)


async def _drain(
    js: JetStreamContext, stream: str, consumer: str, total: list[int], n: int
) -> None:
    sub = await js.pull_subscribe_bind(durable=consumer, stream=stream)
    while total[0] < n:
        try:
            msgs = await sub.fetch(100, timeout=0.5)
        except (TimeoutError, nats.errors.TimeoutError):
            continue
        if not msgs:
            continue
        for m in msgs[:-1]:
            await m.ack()
        await msgs[-1].ack_sync(timeout=30)
        total[0] += len(msgs)


async def _case(
    js: JetStreamContext, pid: int, case: Case, name: str, n: int
) -> tuple[float, float]:
    """(publish, drain) server CPU µs per message."""
    src, dest = block_transform(case.blocks, prefix=PREFIX)
    await js.add_stream(
        StreamConfig(name=name, subjects=[f"{PREFIX}.*.*.*"], retention=RetentionPolicy.WORK_QUEUE,
                     subject_transform=SubjectTransform(src=src, dest=dest))
    )  # fmt: skip
    filters = case.filters()
    for c, subjects in enumerate(filters):
        await js.add_consumer(
            name, ConsumerConfig(durable_name=f"c{c}", ack_policy=AckPolicy.EXPLICIT,
                                 max_ack_pending=100_000, filter_subjects=subjects),
        )  # fmt: skip
    try:
        meter = CpuMeter({"nats-server": pid})
        pending: list[asyncio.Future[PubAck]] = []
        for i in range(n):
            sid = IDS[i % len(IDS)]
            subject = f"{PREFIX}.{shard_of(sid, case.shards)}.{sid}.op"
            pending.append(await js.publish_async(subject, b"x" * 100))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        publish = meter.per_command_us(n)["nats-server"]
        meter = CpuMeter({"nats-server": pid})
        total = [0]
        drains = (_drain(js, name, f"c{c}", total, n) for c in range(len(filters)))
        async with asyncio.timeout(300):
            await asyncio.gather(*drains)
        return publish, meter.per_command_us(n)["nats-server"]
    finally:
        await js.delete_stream(name)


async def _measure(url: str, pid: int, n: int, trials: int) -> dict[str, list[tuple[float, float]]]:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=60)
    found: dict[str, list[tuple[float, float]]] = {c.label: [] for c in CASES}
    try:
        for trial in range(trials):
            for k, case in enumerate(CASES):
                found[case.label].append(await _case(js, pid, case, f"FC{trial}_{k}", n))
                sys.stderr.write(f"  trial {trial + 1}/{trials}: {case.label}\n")
    finally:
        await nc.close()
    return found


def measure(n: int, trials: int) -> Table:
    table = Table(["case", "filters per consumer", "publish µs/msg", "drain µs/msg"])
    with tempfile.TemporaryDirectory(prefix="bench-filter-cost-") as tmp:
        server = start_server(Path(tmp) / "nats")
        assert server.process is not None
        try:
            found = asyncio.run(_measure(server.url, server.process.pid, n, trials))
        finally:
            server.kill()
    for case in CASES:
        runs = found[case.label]
        widths = sorted({len(f) for f in case.filters()})
        width = f"{widths[0]}" if len(widths) == 1 else f"{widths[0]}-{widths[-1]}"
        table.rows.append([
            case.label, width,
            ", ".join(f"{p:.0f}" for p, _ in runs), ", ".join(f"{d:.0f}" for _, d in runs),
        ])  # fmt: skip
        table.samples[f"{case.label} drain_us"] = [d for _, d in runs]
    table.notes.append(
        f"{n} messages per case, {trials} trial(s) each (one value per trial); one nats-server "
        "(file storage, default GOMAXPROCS), its CPU time from /proc over each phase."
    )
    return table


def run(args: argparse.Namespace) -> Table:
    quick = bool(getattr(args, "quick", False))
    n = getattr(args, "backlog", None) or (2_000 if quick else 20_000)
    trials = getattr(args, "trials", None) or (1 if quick else 2)
    return measure(n, trials)
