"""A member fenced while frozen comes back under a consumer name never used before.

Acks name their consumer (in the ack subject) and carry no other token, so a
consumer re-created under an old name would take a zombie's late acks. A
worker frozen past grace (SIGSTOP here; a long GC, an I/O stall or a paused
VM in production) is fenced, then wakes as the same incarnation (same pod
UID) and is given shards again. The test runs the real engine and real
workers through freeze/wake, kill -9 and restart, and a rebalancer restart
that starts its epochs again from 1, with traffic throughout; it collects
every name the group's consumers ever had from the server's consumer-created
advisories, and checks that they are all distinct and that every command was
applied once, in stream order.

SQLite only: the freeze must land outside a write transaction (see
``sqlite_write_lock``), which the test can guarantee with SQLite's one write
lock; the naming does not depend on the store.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from coordshard_client import CoordinateClient, MoveTo, Point
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.passes import run_pass

from ..conftest import process_stopped, sqlite_write_lock
from .conftest import GROUP, PREFIX, SHARDS, spawn_worker, start_worker, wait_until, worker_settings

pytestmark = pytest.mark.integration

POINTS = [(f"sys-{i}", "p") for i in range(8)]
BIND_POLL = "30"
"""The workers' slow look-up timer: far longer than the test, so a worker that binds
in time learned of its new consumer from the consumer-created advisory."""


async def freeze(proc: subprocess.Popen[bytes], db: Path) -> None:
    async with sqlite_write_lock(db):
        proc.send_signal(signal.SIGSTOP)
        await wait_until(lambda: process_stopped(proc.pid), timeout=10)


class OrderedLoad:
    """MoveTo commands in waves, published in order; positions do not commute, so the
    versions each point's answers carry show the order they were applied in."""

    def __init__(self, client: CoordinateClient) -> None:
        self.client = client
        self.sent: list[tuple[str, str]] = []
        self.calls: list[asyncio.Task[Point]] = []

    async def seed(self) -> None:
        for system_id, point_id in POINTS:
            await self.client.create_system(system_id=system_id, name="fence", dimension=2)
            await self.client.create_point(
                system_id=system_id, point_id=point_id, coordinates=(0, 0)
            )

    def wave(self, n: int) -> None:
        for _ in range(n):
            k = len(self.sent)
            s, p = POINTS[k % len(POINTS)]
            self.sent.append((s, p))
            self.calls.append(
                asyncio.create_task(
                    self.client.move_point(system_id=s, point_id=p, moves=[MoveTo(position=(k, 0))])
                )
            )

    def done(self) -> int:
        return sum(c.done() for c in self.calls)

    async def check(self) -> None:
        """Every move applied once, in the order it was published; the last one stands."""
        moved = await asyncio.gather(*self.calls)
        by_point: dict[tuple[str, str], list[int]] = {}
        for point, answer in zip(self.sent, moved, strict=True):
            by_point.setdefault(point, []).append(answer.version)
        for point, versions in by_point.items():
            assert versions == list(range(2, 2 + len(versions))), f"{point}: {versions}"
        last = {pt: k for k, pt in enumerate(self.sent)}
        for (s, p), k in last.items():
            now = await self.client.get_point(system_id=s, point_id=p)
            assert (now.coordinates, now.version) == ((float(k), 0.0), 1 + len(by_point[(s, p)]))


async def serving(js: JetStreamContext, stream: str, consumer: str, *, since: float) -> float:
    """Seconds from ``since`` until a worker pulls from ``consumer`` (a pull waiting, or
    a delivery), within 10 s."""
    while True:
        info = await js.consumer_info(stream, consumer)
        if (info.num_waiting or 0) > 0 or (info.delivered and info.delivered.stream_seq):
            return time.perf_counter() - since
        assert time.perf_counter() - since < 10, f"no worker pulls from {consumer}"
        await asyncio.sleep(0.005)


async def test_consumer_names_never_repeat_across_freeze_wake_kill_and_rebalancer_restart(
    nats_server: NatsServer, nc: Client, stream_name: str, tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    database_url = f"sqlite:///{db}"
    js = nc.jetstream()
    config = GroupConfig(stream=stream_name, subject_prefix=PREFIX, group=GROUP, shards=SHARDS)
    engine = Engine(js, config)
    await engine.ensure_stream()
    created: list[str] = []
    reported: list[str] = []
    """Every consumer name the passes' reports say they created."""
    made = asyncio.Event()

    async def on_created(msg: Msg) -> None:
        created.append(msg.subject.rsplit(".", 1)[-1])
        made.set()

    await nc.subscribe(f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{stream_name}.*", cb=on_created)

    async def converge(members: list[MemberInfo], epoch: int, on: Engine) -> str | None:
        """One pass; the name of the consumer it created for the first member, if any."""
        made.clear()
        done = await run_pass(on, shards=SHARDS, members={m.id: m for m in members}, epoch=epoch)
        assert done.report is not None
        reported.extend(done.report.created_names)
        by_member = dict(zip(done.report.created, done.report.created_names, strict=True))
        name = by_member.get(members[0].id)
        if name is not None:
            await wait_until(lambda: name in created)
        return name

    def spawn(incarnation: str) -> subprocess.Popen[bytes]:
        return spawn_worker(
            nats_server,
            stream=stream_name,
            database_url=database_url,
            member="a",
            incarnation=incarnation,
            log=tmp_path / f"a-{incarnation}.log",
            extra=["--bind-poll", BIND_POLL],
        )

    a1 = MemberInfo.of(group=GROUP, member="a", incarnation="1")
    a2 = MemberInfo.of(group=GROUP, member="a", incarnation="2")
    b = MemberInfo.of(group=GROUP, member="b", incarnation="1")
    settings = worker_settings(
        nats_server, stream=stream_name, database_url=database_url, member="b", incarnation="1"
    ).model_copy(update={"bind_poll": float(BIND_POLL)})
    procs = [spawn("1")]
    survivor = await start_worker(settings)
    try:
        await converge([a1, b], 1, engine)
        await wait_until(lambda: survivor.worker.bound)
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream=stream_name, timeout=60
        ) as client:
            load = OrderedLoad(client)
            await load.seed()

            # Freeze a past grace: fenced; wake it: a consumer under a new name.
            load.wave(400)
            await wait_until(lambda: load.done() >= 50, timeout=30)
            await freeze(procs[0], db)
            await converge([b], 2, engine)
            load.wave(200)
            procs[0].send_signal(signal.SIGCONT)
            woken_at = time.perf_counter()
            woken = await converge([a1, b], 3, engine)
            assert woken is not None
            heard_at = time.perf_counter()  # the created advisory reached us
            await serving(js, stream_name, woken, since=heard_at)
            wake_to_serving = time.perf_counter() - woken_at
            created_to_serving = time.perf_counter() - heard_at

            # kill -9 and a restart: a new incarnation.
            load.wave(200)
            procs[0].kill()
            await asyncio.to_thread(procs[0].wait, 10)
            await converge([b], 4, engine)
            procs.append(spawn("2"))
            await converge([a2, b], 5, engine)

            # A rebalancer restarted with its epochs from 1 (as local mode's are):
            # freeze and wake again under it.
            engine = Engine(js, config)
            load.wave(200)
            await wait_until(lambda: load.done() >= len(load.calls) - 150, timeout=30)
            await freeze(procs[1], db)
            await converge([b], 1, engine)
            procs[1].send_signal(signal.SIGCONT)
            rewoken = await converge([a2, b], 2, engine)
            assert rewoken is not None
            await serving(js, stream_name, rewoken, since=time.perf_counter())
            load.wave(200)
            await load.check()
        # Shown with -s: the figure docs/handoff.md quotes.
        print(
            f"\nwake -> serving {wake_to_serving * 1000:.0f} ms"
            f" (advisory -> pulling {created_to_serving * 1000:.0f} ms); consumers {created}"
        )
        assert len(created) == len(set(created)), f"a consumer name came back: {created}"
        # a1, b; a1 woken; a2; a2 woken: five with one consumer per member; on a blocks
        # stream also the lanes b gains while a is away. Every one was heard.
        assert sorted(created) == sorted(reported) and len(created) >= 5, created
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        await survivor.shutdown()
