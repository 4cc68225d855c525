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

The consumers are provisioned here the way the rebalancer does (WorkQueue
stream, one durable pull consumer per member, filter = its shards); the
operator package starts workers as processes and talks to them only over
NATS, HTTP and the SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig

from coordshard_client import CoordinateClient, Translate, shard_filter
from coordshard_client.messages import Envelope, MovePoint
from coordshard_client.naming import consumer_name
from coordshard_operator.benchmarks import Table, percentile
from coordshard_operator.natsserver import free_port, start_server

SHARDS = 16
STREAM = "COORDINATE"
PREFIX = "coordinate.cmd"
GROUP = "coordinate"


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


async def _assign(nc: Client, member: str, shards: list[int]) -> str:
    name = consumer_name(group=GROUP, member=member, incarnation="bench")
    await nc.jetstream().add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subjects=[shard_filter(s, prefix=PREFIX) for s in shards],
            max_ack_pending=20_000,
        ),
    )
    return name


def _spawn(url: str, member: str, db: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "coordshard_service", "--nats-url", url, "--pod-name", member,
        "--pod-uid", "bench", "--database-url", db, "--shards", str(SHARDS),
        "--http-host", "127.0.0.1", "--http-port", str(port), "--log-level", "WARNING",
    ]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=sink)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU per command, by process: robust where wall-clock rates are not (a shared machine)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start = {name: _cpu_s(pid) for name, pid in pids.items()}

    def per_command_us(self, commands: int) -> dict[str, float]:
        return {
            name: (_cpu_s(pid) - self._start[name]) / commands * 1e6
            for name, pid in self.pids.items()
        }


def _cpu_note(us: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {v:.0f}" for name, v in us.items())
    return f"CPU µs/command: {parts}; total {sum(us.values()):.0f}"


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


def _batches(ports: list[int]) -> tuple[float, float]:
    """(batches, messages) the workers have fetched so far, from their /metrics."""
    count = sum(_metric(p, "coordshard_worker_batch_size_count") for p in ports)
    total = sum(_metric(p, "coordshard_worker_batch_size_sum") for p in ports)
    return count, total


def _mean_batch(before: tuple[float, float], after: tuple[float, float]) -> str:
    batches, messages = after[0] - before[0], after[1] - before[1]
    return f"mean batch {messages / batches:.1f}" if batches else "no batches"


async def _closed_loop(
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


async def _paced(
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


def _seed_points(db: str, systems: list[str], per_system: int) -> list[tuple[str, str]]:
    """Insert points straight into the (already migrated) SQLite store: setup, not measured."""
    path = db.removeprefix("sqlite:///")
    rows = [(s, f"p{j:05d}", "[0.0, 0.0]", 1) for s in systems for j in range(per_system)]
    with sqlite3.connect(path, timeout=30) as conn:
        conn.executemany(
            "INSERT INTO points (system_id, point_id, coordinates, version) VALUES (?,?,?,?)", rows
        )
    return [(r[0], r[1]) for r in rows]


async def _run(quick: bool, nats_procs: int) -> Table:
    n_ceiling = 20_000 if quick else 100_000
    n_peak = 5_000 if quick else 30_000
    half_seconds = 5.0 if quick else 15.0
    cached_points = 10_000 if quick else 100_000
    size = _payload_size()
    table = Table(["phase", "commands", "commands/s", "p50 ms", "p99 ms", "notes"])
    with tempfile.TemporaryDirectory(prefix="coordshard-bench-") as tmp:
        server = start_server(Path(tmp) / "nats", gomaxprocs=nats_procs or None)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            nc = await nats.connect(server.url)
            assert server.process is not None
            me, nats_pid = os.getpid(), server.process.pid
            meter = CpuMeter({"client": me, "nats-server": nats_pid})
            ceiling = await _ceiling(nc, n_ceiling, size)
            ceiling_cpu = meter.per_command_us(n_ceiling)
            table.rows.append(
                [
                    "ceiling (raw nats-py)",
                    n_ceiling,
                    round(ceiling),
                    "",
                    "",
                    f"publish_async + fetch(500) + ack, {size} B; {_cpu_note(ceiling_cpu)}",
                ]
            )
            js = nc.jetstream()
            await js.add_stream(
                StreamConfig(
                    name=STREAM, subjects=[PREFIX + ".>"], retention=RetentionPolicy.WORK_QUEUE
                )
            )
            half = SHARDS // 2
            db = f"sqlite:///{Path(tmp) / 'store.db'}"
            ports = [free_port(), free_port()]
            names = [
                await _assign(nc, "w1", list(range(half))),
                await _assign(nc, "w2", list(range(half, SHARDS))),
            ]
            for i, member in enumerate(("w1", "w2")):
                procs.append(_spawn(server.url, member, db, ports[i], Path(tmp) / f"{member}.log"))
            async with CoordinateClient(nc, shards=SHARDS, timeout=60) as client:
                systems = [f"sys-{i:02d}" for i in range(64)]
                for s in systems:
                    await client.create_system(system_id=s, name=s, dimension=2)
                targets = [(s, f"p{j}") for s in systems for j in range(16)]
                for s, p in targets:
                    await client.create_point(system_id=s, point_id=p, coordinates=(0, 0))
                await _closed_loop(client, targets, 1000, 500)  # warm-up
                # What a latency-minded gateway does once it is set up: keep the
                # long-lived objects out of every full collection (pauses of up to
                # 55 ms in this process otherwise, counted as outcome latency).
                gc.freeze()
                meter = CpuMeter(
                    {
                        "client": me,
                        "worker 1": procs[0].pid,
                        "worker 2": procs[1].pid,
                        "nats-server": nats_pid,
                    }
                )
                before_peak = _batches(ports)
                peak, lat = await _closed_loop(client, targets, n_peak, 1000)
                peak_cpu = meter.per_command_us(n_peak)
                after_peak = _batches(ports)
                peak_batch = _mean_batch(before_peak, after_peak)
                table.samples["peak_ms"] = lat
                table.samples["ceiling_cpu_us"] = list(ceiling_cpu.values())
                table.samples["peak_cpu_us"] = list(peak_cpu.values())
                table.rows.append(
                    [
                        "peak (2 workers, SDK)",
                        n_peak,
                        round(peak),
                        percentile(lat, 0.5),
                        percentile(lat, 0.99),
                        f"{peak / ceiling:.0%} of ceiling; 1000 in flight; {_cpu_note(peak_cpu)}; "
                        + peak_batch,
                    ]
                )
                meter = CpuMeter(meter.pids)
                got, lat = await _paced(client, targets, peak / 2, half_seconds)
                half_cpu = meter.per_command_us(len(lat))
                half_batch = _mean_batch(after_peak, _batches(ports))
                busy = sum(half_cpu.values()) * got / 1e6
                table.samples["half_ms"] = lat
                table.rows.append(
                    [
                        "half of peak, paced",
                        len(lat),
                        round(got),
                        percentile(lat, 0.5),
                        percentile(lat, 0.99),
                        f"target {peak / 2:.0f}/s for {half_seconds:.0f}s; "
                        f"{_cpu_note(half_cpu)}; {busy:.2f} cores busy; {half_batch}",
                    ]
                )
                # Memory: hand every shard to w1 (no messages pending, so no reset is needed).
                await js.delete_consumer(STREAM, names[1])
                await _assign(nc, "w1", list(range(SHARDS)))
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
                entries = _metric(ports[0], "coordshard_worker_cache_entries")
                table.rows.append(
                    [
                        "memory (1 worker)",
                        len(seeded),
                        round(reads),
                        "",
                        "",
                        f"worker RSS {_rss_mb(procs[0].pid):.0f} MB "
                        f"with {entries:.0f} cached entries (get_point rate shown)",
                    ]
                )
            await nc.close()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            server.kill()
    gomax = f"GOMAXPROCS={nats_procs}" if nats_procs else "Go's default GOMAXPROCS"
    table.notes.append(
        f"Machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; nats-server "
        f"({gomax}), both workers and the client share it. Store: SQLite WAL, one shared file."
    )
    return table


def run(args: argparse.Namespace) -> Table:
    return asyncio.run(_run(bool(args.quick), int(getattr(args, "nats_procs", 1))))
