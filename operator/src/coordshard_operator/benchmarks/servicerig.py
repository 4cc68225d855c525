"""What the service benchmarks share: two worker processes, their consumers, pacing, CPU.

The consumers are provisioned the way the rebalancer does (WorkQueue stream,
one durable pull consumer per member, filter = its shards); workers run as
processes and are measured from the outside (``/proc``, ``/metrics``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import nats
import psycopg
from nats.aio.client import Client

from coordshard_client import CoordinateClient, Translate, shard_filter
from coordshard_client.naming import member_id
from coordshard_operator.benchmarks.scratchdb import libpq_url, scratch_database
from coordshard_operator.local.natsserver import NatsServer, free_port, start_server
from coordshard_operator.rebalancer.handoff import GroupConfig
from coordshard_operator.rebalancer.jetstream import consumer_config, stream_config


def nats_procs(args: object) -> int:
    """``--nats-procs``: GOMAXPROCS of the suite's nats-server (0: Go's default)."""
    return int(getattr(args, "nats_procs", 1))


def gomaxprocs_note(procs: int) -> str:
    return f"GOMAXPROCS={procs}" if procs else "Go's default GOMAXPROCS"


@contextmanager
def store_url(args: object, tmp: Path) -> Iterator[str]:
    """The run's store: with ``--database-url`` (PostgreSQL) a scratch database made
    beside the one named and dropped afterwards; else a SQLite file in ``tmp``."""
    given = getattr(args, "database_url", None)
    if not given:
        yield f"sqlite:///{tmp / 'store.db'}"
        return
    with scratch_database(given, prefix="coordshard_bench_") as url:
        yield url


@dataclass
class Setup:
    """What a service suite runs on: a scratch folder, its store, a nats-server, a client
    connection."""

    tmp: Path
    db: str
    server: NatsServer
    nc: Client


@asynccontextmanager
async def embedded(args: object) -> AsyncIterator[Setup]:
    """A scratch folder, the run's store (``store_url``) and a nats-server with the
    suite's ``--nats-procs``, connected to; all gone afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="coordshard-bench-") as tmp,
        store_url(args, Path(tmp)) as db,
    ):
        server = start_server(Path(tmp) / "nats", gomaxprocs=nats_procs(args) or None)
        try:
            nc = await nats.connect(server.url)
            try:
                yield Setup(Path(tmp), db, server, nc)
            finally:
                await nc.close()
        finally:
            server.kill()


def store_note(db: str) -> str:
    if db.startswith("sqlite"):
        return "Store: SQLite WAL, one shared file."
    return "Store: PostgreSQL on this machine (a scratch database)."


SHARDS = 16
STREAM = "COORDINATE"
PREFIX = "coordinate.cmd"
GROUP = "coordinate"
CONFIG = GroupConfig(
    stream=STREAM, subject_prefix=PREFIX, group=GROUP, shards=SHARDS, max_ack_pending=20_000
)
"""The suites' group: the rebalancer's defaults, but room for a whole burst in flight."""


async def assign(nc: Client, member: str, shards: list[int]) -> str:
    """Provision ``member``'s consumer as the rebalancer's engine would (no metadata:
    nothing here reads it)."""
    name = member_id(group=GROUP, member=member, incarnation="bench")
    await nc.jetstream().add_consumer(
        STREAM,
        consumer_config(
            name=name,
            filter_subjects=[shard_filter(s, prefix=PREFIX) for s in shards],
            ack_wait_s=CONFIG.ack_wait_s,
            max_ack_pending=CONFIG.max_ack_pending,
            max_deliver=CONFIG.max_deliver,
            metadata={},
        ),
    )
    return name


def spawn_worker(url: str, member: str, db: str, port: int, log: Path, *,
                 shards: int = SHARDS) -> subprocess.Popen[bytes]:  # fmt: skip
    args = [
        sys.executable, "-m", "coordshard_service", "--nats-url", url, "--pod-name", member,
        "--pod-uid", "bench", "--database-url", db, "--shards", str(shards),
        "--http-host", "127.0.0.1", "--http-port", str(port), "--log-level", "WARNING",
    ]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=sink)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pids: int | list[int]) -> float:
    """User + system CPU seconds the process (or processes) used so far; 0 for one gone."""
    total = 0.0
    for pid in [pids] if isinstance(pids, int) else pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class CpuMeter:
    """CPU per command, by process: robust where wall-clock rates are not (a shared machine).

    A name may stand for several processes (PostgreSQL's backends), summed."""

    def __init__(self, pids: dict[str, int | list[int]]) -> None:
        self.pids = pids
        self._start = {name: _cpu_s(pid) for name, pid in pids.items()}

    def per_command_us(self, commands: int) -> dict[str, float]:
        return {
            name: (_cpu_s(pid) - self._start[name]) / commands * 1e6
            for name, pid in self.pids.items()
        }


def database_backends(db: str) -> list[int]:
    """PIDs of the PostgreSQL backends serving ``db`` on this machine ([] for SQLite,
    or a server elsewhere): their CPU is part of a command's cost."""
    if db.startswith("sqlite"):
        return []
    name = db.rsplit("/", 1)[1].split("?", 1)[0]
    with psycopg.connect(libpq_url(db)) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return [pid for (pid,) in rows if Path(f"/proc/{pid}").exists()]


def process_pids(rig: Rig, server: NatsServer, db: str) -> dict[str, int | list[int]]:
    """The processes a command's CPU is spent in, by name: this one (the client), the
    workers, the nats-server, and PostgreSQL's backends when they run here."""
    assert server.process is not None
    pids: dict[str, int | list[int]] = {"client": os.getpid()}
    pids |= {f"worker {n}": p.pid for n, p in enumerate(rig.procs, start=1)}
    pids["nats-server"] = server.process.pid
    if backends := database_backends(db):
        pids["postgres"] = backends
    return pids


def cpu_note(us: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {v:.0f}" for name, v in us.items())
    return f"CPU µs/command: {parts}; total {sum(us.values()):.0f}"


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def batches(ports: list[int], *, histogram: str = "batch_size") -> tuple[float, float]:
    """(batches, messages) the workers have fetched so far, from their /metrics
    (``histogram="store_batch_size"``: applied, one transaction a batch)."""
    count = sum(metric(p, f"coordshard_worker_{histogram}_count") for p in ports)
    total = sum(metric(p, f"coordshard_worker_{histogram}_sum") for p in ports)
    return count, total


def batch_mean(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Mean batch between two ``batches`` readings; None if no batch came between."""
    count, messages = after[0] - before[0], after[1] - before[1]
    return messages / count if count else None


def mean_batch(before: tuple[float, float], after: tuple[float, float]) -> str:
    mean = batch_mean(before, after)
    return f"mean batch {mean:.1f}" if mean is not None else "no batches"


async def closed_loop(
    client: CoordinateClient, targets: list[tuple[str, str]], n: int, window: int
) -> tuple[float, list[float]]:
    """n moves by ``window`` concurrent callers; returns (commands/s, latencies ms)."""
    latencies: list[float] = []

    async def caller(first: int) -> None:
        for i in range(first, n, window):
            system_id, point_id = targets[i % len(targets)]
            t0 = time.perf_counter()
            await client.move_point(
                system_id=system_id, point_id=point_id, moves=[Translate(delta=(1, 0))]
            )
            latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller(w) for w in range(window)))
    return n / (time.perf_counter() - started), latencies


async def paced(
    client: CoordinateClient, targets: list[tuple[str, str]], rate: float, seconds: float
) -> tuple[float, list[float]]:
    """Open loop: start a move every 1/rate s for ``seconds``; returns (achieved/s, ms)."""
    latencies: list[float] = []
    loop = asyncio.get_running_loop()

    async def one(i: int) -> None:
        system_id, point_id = targets[i % len(targets)]
        t0 = time.perf_counter()
        await client.move_point(
            system_id=system_id, point_id=point_id, moves=[Translate(delta=(1, 0))]
        )
        latencies.append((time.perf_counter() - t0) * 1000)

    # Only the calls in flight are kept: holding every finished task would grow
    # the heap by ~60k objects that each full garbage collection walks (pauses
    # of ~150 ms in this very loop, counted as outcome latency).
    running: set[asyncio.Task[None]] = set()
    start = loop.time()
    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing, not synchronisation
        task = asyncio.create_task(one(i))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)  # none are started after this
    return total / (loop.time() - start), latencies


@dataclass
class Rig:
    """Two workers serving 8 shards each, and a warmed-up client."""

    client: CoordinateClient
    targets: list[tuple[str, str]]
    """(system, point) pairs that exist: 64 systems of 16 points."""
    procs: list[subprocess.Popen[bytes]]
    ports: list[int]
    """The workers' HTTP ports (``/metrics``)."""
    consumers: list[str]


async def seed_targets(
    client: CoordinateClient, systems: list[str], *, points: int
) -> list[tuple[str, str]]:
    """Create ``systems`` of ``points`` points each, move every point once (warm-up), then
    freeze this process's objects out of garbage collection, as a latency-minded gateway
    would once set up; returns the (system, point) pairs.

    ``gc.freeze()``, not ``gc.collect()``: a collection now leaves the long-lived objects
    in the oldest generation, so every full collection during the measurement still walks
    them (pauses of up to 55 ms in this process, counted as outcome latency); frozen, no
    collection walks them again (docs/benchmarks.md, "Garbage collection").
    """
    for s in systems:
        await client.create_system(system_id=s, name=s, dimension=2)
    targets = [(s, f"p{j}") for s in systems for j in range(points)]
    for s, p in targets:
        await client.create_point(system_id=s, point_id=p, coordinates=(0, 0))
    await closed_loop(client, targets, 1000, 500)
    gc.freeze()
    return targets


def stop_workers(procs: list[subprocess.Popen[bytes]], *, timeout: float = 15) -> None:
    """SIGTERM every worker, then SIGKILL those still running past ``timeout`` each."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


@asynccontextmanager
async def two_workers(nc: Client, url: str, tmp: Path, db: str) -> AsyncIterator[Rig]:
    """Stream, consumers and two worker processes on the store ``db``; 1024 points
    created and moved once, then frozen out of garbage collection (``seed_targets``)."""
    await nc.jetstream().add_stream(
        stream_config(
            name=CONFIG.stream,
            subject_prefix=CONFIG.subject_prefix,
            shards=CONFIG.shards,
            replicas=CONFIG.replicas,
            duplicate_window_s=CONFIG.duplicate_window_s,
        )
    )
    half = SHARDS // 2
    ports = [free_port(), free_port()]
    consumers = [
        await assign(nc, "w1", list(range(half))),
        await assign(nc, "w2", list(range(half, SHARDS))),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i, member in enumerate(("w1", "w2")):
            procs.append(spawn_worker(url, member, db, ports[i], tmp / f"{member}.log"))
        async with CoordinateClient(nc, shards=SHARDS, timeout=60) as client:
            systems = [f"sys-{i:02d}" for i in range(64)]
            targets = await seed_targets(client, systems, points=16)
            yield Rig(client, targets, procs, ports, consumers)
    finally:
        stop_workers(procs)
