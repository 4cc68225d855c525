"""A running local system: nats-server(s), the stream, worker processes, the rebalancer.

``coordshard up``, the chaos tests and the local-mode benchmark all drive one
``LocalSystem``; they differ only in the faults they inject::

    async with LocalSystem(SystemOptions(workers=3, shards=16), data_dir) as system:
        load = system.start_load(rate=200)
        system.workers["worker-1"].kill()
        ...
        summary = await system.finish()        # stop load, restart the dead, verify
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import nats
from nats.aio.client import Client

from coordshard_client.publisher import CoordinateClient
from coordshard_client.tasks import cancel_and_wait
from coordshard_operator.local.check import Verdict, verify
from coordshard_operator.local.group import LocalGroup
from coordshard_operator.local.load import Ledger, LoadGenerator
from coordshard_operator.local.natsserver import NatsServer, start_cluster, start_server
from coordshard_operator.local.quantiles import percentile, reported
from coordshard_operator.local.workers import WorkerProcess, WorkerSpec, pid_file, stop_leftovers
from coordshard_operator.rebalancer.errors import TransientError
from coordshard_operator.rebalancer.handoff import Checkpoint, Engine, GroupConfig

__all__ = ["LocalSystem", "SystemOptions", "summarize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SystemOptions:
    """The shape of a local system."""

    workers: int = 3
    """Worker processes; default 3."""
    shards: int = 16
    """Shard count N; default 16."""
    grace_s: float = 0.0
    """How long a dead or unready worker keeps its shards, seconds; default 0."""
    nats_url: str | None = None
    """Use this NATS (comma-separated URLs) instead of starting one."""
    cluster: int = 1
    """Nodes of the embedded NATS: 1, or 3 for a cluster with an R3 stream."""
    database_url: str | None = None
    """The shared store; default SQLite in the data dir."""
    systems: int = 64
    """Coordinate systems the load uses; default 64."""
    seed: int = 1
    """Seed of the load (and of chaos, in ``up``)."""
    fetch_timeout_s: float = 0.05
    """How long a worker's pull waits for messages, seconds; default 0.05 (the worker's
    own default). It bounds failover latency: see the worker's ``fetch_timeout``."""
    command_timeout_s: float = 2.0
    """How long the SDK waits for one outcome before the load retries it, seconds."""
    worker_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every worker."""
    restart_crashed_s: float | None = 1.0
    """Restart a worker that exits by itself (not killed, not stopped) after this many
    seconds, doubling per crash in a row up to 30 s, as a kubelet does; None: never.
    Default 1."""
    stop_grace_s: float = 5.0
    """On ``close``, how long each worker (and the embedded nats-server, and the
    rebalancer and load tasks) gets to stop after SIGTERM before it is killed, seconds;
    default 5. It bounds how long stopping takes, whatever state the workers are in."""


class LocalSystem:
    """Starts on ``__aenter__``, tears everything down on ``__aexit__``."""

    def __init__(
        self, options: SystemOptions, data_dir: Path, *, checkpoint: Checkpoint | None = None
    ) -> None:
        self.options = options
        self.data_dir = data_dir
        self.checkpoint = checkpoint
        self.servers: list[NatsServer] = []
        self.nc: Client | None = None
        self.engine: Engine | None = None
        self.group: LocalGroup | None = None
        self.workers: dict[str, WorkerProcess] = {}
        self.client: CoordinateClient | None = None
        self.wake = asyncio.Event()
        self.stop = asyncio.Event()
        self.started = time.monotonic()
        self.kills: list[float] = []
        self.run_id = uuid.uuid4().hex[:8]
        """Part of the ids of the systems this run's load creates: a store kept from an
        earlier run already holds that run's ``sys-<run>-<i>``, and a create of an
        existing id is refused, which would leave this run nothing to check."""
        self._rebalancer: asyncio.Task[None] | None = None
        self._load: tuple[LoadGenerator, asyncio.Event, asyncio.Task[Ledger]] | None = None

    @property
    def url(self) -> str:
        if self.options.nats_url:
            return self.options.nats_url
        return ",".join(s.url for s in self.servers)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start everything and wait until it converged (``__aenter__`` does this; whoever
        calls it instead calls ``close`` afterwards, also when it failed or was cancelled)."""
        o = self.options
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logs = self.data_dir / "logs"
        for name, pid in await asyncio.to_thread(stop_leftovers, logs):
            logger.warning(
                "stopped %s (pid %d), left running by an earlier run on %s",
                name,
                pid,
                self.data_dir,
            )
        if not o.nats_url:
            starting = asyncio.ensure_future(asyncio.to_thread(self._start_servers))
            try:
                self.servers = await asyncio.shield(starting)
            except asyncio.CancelledError:
                # The thread starts them all the same; close() must know them to stop them.
                self.servers = await starting
                raise
            for server in self.servers:
                assert server.process is not None
                pid_file(logs, server.name).write_text(f"{server.process.pid}\n")
        self.nc = await nats.connect(
            servers=self.url.split(","),
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            ping_interval=5,
        )
        config = GroupConfig(shards=o.shards, replicas=3 if o.cluster >= 3 else 1)
        self.engine = Engine(self.nc.jetstream(), config, checkpoint=self.checkpoint)
        await _retry_transient(self.engine.ensure_stream)
        spec = WorkerSpec(
            nats_url=self.url,
            database_url=o.database_url or f"sqlite:///{self.data_dir / 'store.db'}",
            group=config.group,
            stream=config.stream,
            prefix=config.subject_prefix,
            shards=o.shards,
            log_dir=logs,
            extra_env={"COORDSHARD_FETCH_TIMEOUT": str(o.fetch_timeout_s), **o.worker_env},
        )
        self.workers = {
            f"worker-{i}": WorkerProcess(
                f"worker-{i}", spec, wake=self.wake, restart_crashed_s=o.restart_crashed_s
            )
            for i in range(o.workers)
        }
        for w in self.workers.values():
            await w.start()
        self.group = LocalGroup(
            self.engine,
            self.workers,
            shards=o.shards,
            group=config.group,
            grace=o.grace_s,
            wake=self.wake,
        )
        self.start_rebalancer()
        await self.wait_converged()
        self.client = CoordinateClient(self.nc, shards=o.shards, timeout=o.command_timeout_s)
        await self.client.start()
        self.started = time.monotonic()

    def _start_servers(self) -> list[NatsServer]:
        if self.options.cluster > 1:
            return start_cluster(self.data_dir / "nats", size=self.options.cluster)
        return [start_server(self.data_dir / "nats")]

    def start_rebalancer(self) -> None:
        """(Re)start the rebalancing loop, e.g. after a test crashed it."""
        assert self.group is not None
        if self._rebalancer is None or self._rebalancer.done():
            self.stop = asyncio.Event()
            self._rebalancer = asyncio.create_task(self.group.run(self.stop))

    @property
    def rebalancer(self) -> asyncio.Task[None] | None:
        return self._rebalancer

    async def wait_converged(self, *, timeout: float = 60.0) -> None:
        """Wait until every running worker is a member and every shard has an owner."""
        assert self.group is not None
        deadline = time.monotonic() + timeout
        while True:
            running = {
                w.member_id
                for w in self.workers.values()
                if w.process is not None and w.process.returncode is None
            }
            owned = sum(len(s) for s in self.group.assignment.values())
            if owned == self.options.shards and running <= set(self.group.assignment):
                return
            if self._rebalancer is not None and self._rebalancer.done():
                self._rebalancer.result()  # surfaces the crash
                raise RuntimeError("the rebalancer stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not converged after {timeout}s: live {self.group.live}, "
                    f"assignment {self.group.assignment}; worker logs in {self.data_dir}/logs"
                )
            await asyncio.sleep(0.05)  # polling a condition with a deadline

    def start_load(self, *, rate: float) -> LoadGenerator:
        """Start driving ``rate`` commands per second until ``finish``."""
        assert self.client is not None
        generator = LoadGenerator(
            self.client,
            rate=rate,
            systems=self.options.systems,
            seed=self.options.seed,
            prefix=f"sys-{self.run_id}",
        )
        stop = asyncio.Event()
        self._load = (generator, stop, asyncio.create_task(generator.run(stop)))
        return generator

    def kill(self, name: str) -> None:
        """kill -9 one worker (recorded for the summary)."""
        self.workers[name].kill()
        self.kills.append(time.monotonic())

    async def finish(self) -> dict[str, Any]:
        """Stop the load, bring every worker back, converge, verify; the summary."""
        elapsed = time.monotonic() - self.started
        ledger = Ledger()
        if self._load is not None:
            _, stop, task = self._load
            stop.set()
            ledger = await task
        self.start_rebalancer()
        for w in self.workers.values():
            if w.process is None or w.process.returncode is not None:
                await w.start()
        await self.wait_converged()
        assert self.client is not None and self.group is not None
        verdict = await verify(self.client, ledger) if ledger.systems else Verdict()
        return summarize(
            ledger=ledger,
            verdict=verdict,
            group=self.group,
            kills=len(self.kills),
            elapsed=elapsed,
            workers=self.options.workers,
            shards=self.options.shards,
        )

    async def close(self) -> None:
        """Stop load, rebalancer, workers, the connection and the servers.

        Bounded: each worker gets SIGTERM, then SIGKILL after ``stop_grace_s`` (a frozen
        or wedged worker must not hold the rest up), and so does the nats-server.
        """
        grace = self.options.stop_grace_s
        if self._load is not None:
            self._load[1].set()
            self._load[2].cancel()
        self.stop.set()
        tasks = [t for t in (self._rebalancer, self._load[2] if self._load else None) if t]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
            await cancel_and_wait(*tasks)  # those still running
        await asyncio.gather(
            *(w.stop(grace=grace) for w in self.workers.values()), return_exceptions=True
        )
        if self.client is not None:
            await self.client.close()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()
        for server in self.servers:
            await asyncio.to_thread(server.stop, timeout=grace)


async def _retry_transient(call: Any, *, timeout: float = 30.0) -> None:
    """Retry ``call`` while JetStream is still electing its first leader."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await call()
            return
        except TransientError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def summarize(
    *,
    ledger: Ledger,
    verdict: Verdict,
    group: LocalGroup,
    kills: int,
    elapsed: float,
    workers: int,
    shards: int,
) -> dict[str, Any]:
    """The JSON summary ``coordshard up --json`` prints."""
    rebalance_ms = [r.duration_ms for r in group.rebalances]
    lost = verdict.lost + verdict.mismatched
    duplicates = verdict.duplicate_effects + verdict.unexpected
    return {
        "ok": lost == 0 and duplicates == 0,
        "workers": workers,
        "shards": shards,
        "duration_s": round(elapsed, 1),
        "published": ledger.published,
        "succeeded": ledger.succeeded,
        "failed": dict(sorted(ledger.failed.items())),
        "unknown": ledger.unknown,
        "retries": ledger.retries,
        "lost": lost,
        "duplicate_effects": duplicates,
        "stale_reads": ledger.stale_reads,
        "points_checked": verdict.checked,
        "points_uncertain": verdict.skipped_uncertain,
        "kills": kills,
        "rebalances": len(group.rebalances),
        "rebalance_ms": {
            "p50": round(statistics.median(rebalance_ms), 1) if rebalance_ms else 0.0,
            "p99": reported(rebalance_ms, 0.99, ndigits=1),  # None: fewer than 100
            "max": round(max(rebalance_ms), 1) if rebalance_ms else 0.0,
        },
        "latency_ms": {
            "p50": round(percentile(ledger.latencies_ms, 0.5), 1),
            "p99": reported(ledger.latencies_ms, 0.99, ndigits=1),
        },
        "throughput_per_s": round(ledger.succeeded / elapsed, 1) if elapsed > 0 else 0.0,
        "reconcile_errors": group.errors,
        "problems": verdict.details[:20],
    }
