"""How fast the operator moves a crashed pod's shards, and how much memory it needs.

Failover: the real ``coordshard operator`` (a subprocess) runs against the
API-server double and a real nats-server; in-process pull consumers stand in
for the workers, one per pod, each serving every lane of its pod's member. For each of
``--deletions`` rounds a victim pod's worker is stopped (a crash), the pod is
deleted from the double (its DELETED watch event goes out at once), and one
probe is published on every shard the victim owned. The sample is the time
from the deletion to the moment the *last* of those probes has been delivered
to its shard's new owner: watch -> reconcile -> fence -> create lanes ->
advisory -> fetch, end to end (the stream has the blocks layout). A
replacement pod then joins and the group converges before the next round.
Grace period 0.

Memory: 10 CRs (different selectors) and 1,000 Ready pods in one namespace;
once every CR reports all its members, the operator's RSS is read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nats
import yaml
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError, ServiceUnavailableError

from coordshard_client.naming import generation_of
from coordshard_client.tasks import cancel_and_wait
from coordshard_operator.benchmarks import Table
from coordshard_operator.benchmarks.workload import ids_per_shard
from coordshard_operator.local.natsserver import start_server
from coordshard_operator.local.quantiles import reported
from coordshard_operator.rebalancer.ranges import parse_ranges
from coordshard_operator.testing.apiserver import ApiServer
from coordshard_operator.testing.cluster import Cluster, OperatorProcess, wait_until

STREAM = "COORDINATE"
SHARDS = 32
PODS = 4
CRD = Path(__file__).parents[4] / "crds" / "coordinateshards.yaml"


@dataclass
class Worker:
    """A stand-in for one pod's container: pulls from every lane of the pod's member,
    binding each one as its consumer-created advisory arrives (as the real worker
    does), acks, records."""

    nc: Client
    consumer: str
    """The pod's member id (``Cluster.consumer``); its lanes are ``<id>_g<generation>``."""
    seen: dict[str, float] = field(default_factory=dict)
    """Probe payload -> monotonic delivery time."""
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    """Lane name -> its pull loop."""
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        # Not cancel() and gather(): nats-py's fetch can swallow a cancel (3.11), and a
        # pull loop that runs on would hold the benchmark for ever.
        await cancel_and_wait(*(t for t in (self.task, *self.tasks.values()) if t is not None))

    def _bind(self, name: str) -> None:
        if generation_of(name, member=self.consumer) is not None and name not in self.tasks:
            self.tasks[name] = asyncio.create_task(self._pull(name))

    async def _run(self) -> None:
        js = self.nc.jetstream()
        created = await self.nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{STREAM}.*")
        while True:  # the lanes made before the subscription, once the stream exists
            try:
                for name in await js.consumers_info(STREAM):
                    self._bind(name.name)
                break
            except (NotFoundError, ServiceUnavailableError):
                await asyncio.sleep(0.005)
        async for msg in created.messages:
            self._bind(msg.subject.rsplit(".", 1)[1])

    async def _pull(self, lane: str) -> None:
        js = self.nc.jetstream()
        sub = await js.pull_subscribe_bind(lane, stream=STREAM)
        while True:
            try:
                batch = await sub.fetch(64, timeout=0.05)
            except (NatsTimeoutError, TimeoutError):
                continue
            except (NotFoundError, ServiceUnavailableError):  # the lane was retired
                return
            now = time.monotonic()
            for msg in batch:
                self.seen.setdefault(msg.data.decode(), now)
                await msg.ack()


async def _failover(deletions: int, workdir: Path) -> tuple[list[float], int]:
    api = ApiServer(bookmark_interval=1.0)
    await api.start()
    api.create_crd(yaml.safe_load(CRD.read_text()))
    server = start_server(workdir / "nats")
    cluster = Cluster(api)
    op = OperatorProcess(api_url=api.url, nats_url=server.url, log=workdir / "operator.log")
    nc = await nats.connect(server.url)
    workers: dict[str, Worker] = {}
    samples: list[float] = []
    lost = 0
    try:
        cluster.add_cr(shards=SHARDS, grace=0)
        for i in range(PODS):
            name = f"w-{i}"
            cluster.add_pod(name)
            workers[name] = Worker(nc, cluster.consumer(name))
            workers[name].start()
        await wait_until(lambda: len(cluster.assignment()) == PODS, timeout=60, what="start")
        js = nc.jetstream()
        ids = ids_per_shard(SHARDS)
        for round_ in range(deletions):
            victim = sorted(workers)[round_ % len(workers)]
            orphans = parse_ranges(cluster.assignment()[victim])
            await workers.pop(victim).stop()
            start = time.monotonic()
            cluster.delete_pod(victim)
            probes = {f"r{round_}s{s}": s for s in orphans}
            for probe, shard in probes.items():
                await js.publish(f"coordinate.cmd.{shard}.{ids[shard]}.probe", probe.encode())

            def delivered(probes: dict[str, int] = probes) -> bool:
                return all(any(p in w.seen for w in workers.values()) for p in probes)

            try:
                await wait_until(delivered, timeout=10, what="probes delivered")
                last = max(min(w.seen[p] for w in workers.values() if p in w.seen) for p in probes)
                samples.append((last - start) * 1000)
            except AssertionError:
                lost += sum(1 for p in probes if not any(p in w.seen for w in workers.values()))
            newcomer = f"n-{round_}"
            cluster.add_pod(newcomer)
            workers[newcomer] = Worker(nc, cluster.consumer(newcomer))
            workers[newcomer].start()
            await wait_until(
                lambda: (
                    sorted(cluster.assignment()) == sorted(workers)
                    and cluster.condition("Progressing") == "False"
                ),
                timeout=30,
                what="converged",
            )
    finally:
        for w in workers.values():
            await w.stop()
        await nc.close()
        op.stop()
        server.kill()
        await api.stop()
    return samples, lost


async def _memory(crs: int, pods: int, workdir: Path) -> tuple[float, float]:
    api = ApiServer(bookmark_interval=5.0)
    await api.start()
    api.create_crd(yaml.safe_load(CRD.read_text()))
    server = start_server(workdir / "nats-mem")
    cluster = Cluster(api)
    op = OperatorProcess(api_url=api.url, nats_url=server.url, log=workdir / "operator-mem.log")
    try:
        per_cr = pods // crs
        for c in range(crs):
            cluster.add_cr(
                f"g{c}", shards=128, app=f"a{c}", stream=f"S{c}", subjectPrefix=f"g{c}.cmd"
            )
            for p in range(per_cr):
                cluster.add_pod(f"a{c}-{p}", app=f"a{c}")
        started = time.monotonic()
        await wait_until(
            lambda: all(
                cluster.status(f"g{c}").get("memberCount") == per_cr
                and cluster.condition("Progressing", f"g{c}") == "False"
                for c in range(crs)
            ),
            timeout=300,
            what="all CRs converged",
        )
        took = time.monotonic() - started
        return op.rss_bytes() / 2**20, took
    finally:
        op.stop()
        server.kill()
        await api.stop()


def run(args: argparse.Namespace) -> Table:
    deletions = getattr(args, "trials", None) or (5 if args.quick else 100)
    crs, pods = (2, 200) if args.quick else (10, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        samples, lost = asyncio.run(_failover(deletions, Path(tmp)))
        rss, took = asyncio.run(_memory(crs, pods, Path(tmp)))
    table = Table(columns=["measure", "value", "target"])
    table.samples["failover_ms"] = samples
    table.rows.append(["pod deletions", deletions, ">= 100 (for a p99)"])
    if samples:
        table.rows += [
            ["DELETED -> orphans delivering, p50 (ms)", statistics.median(samples), ""],
            ["... p95 (ms)", reported(samples, 0.95), ""],
            ["... p99 (ms)", reported(samples, 0.99), "<= 300"],
            ["... max (ms)", max(samples), ""],
        ]
    table.rows += [
        ["probes never delivered", lost, "0"],
        [f"operator RSS, {pods} pods / {crs} CRs (MB)", rss, "<= 150"],
        [f"time to converge {crs} CRs from scratch (s)", took, ""],
    ]
    table.notes.append(
        f"{SHARDS} shards over {PODS} pods, grace 0; real kopf operator subprocess against "
        "the API-server double, real nats-server, in-process pull workers."
    )
    return table
