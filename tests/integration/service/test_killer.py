"""A message that kills every worker applying it is dead-lettered, not the group's end.

JetStream's delivery counts start afresh for a container restarted in place
(its lane is rewound on bind) and for the member that takes a lost pod's shards
(a new lane), so ``max_deliver`` never stops such a message: each worker that
applies it dies, and the next one gets it. The test makes one message kill its
worker for real: it holds the database row the message writes (a PostgreSQL
row lock), so the worker blocks inside the batch that holds it, and is then
killed with SIGKILL; then the next process comes, in place or on another
member, and is killed the same way, until the message is dead-lettered.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from nats.aio.client import Client

from coordshard_client import CoordinateClient, CoordinateValidationError, MoveTo
from coordshard_client.messages import Command, CreatePoint, CreateSystem, MovePoint, Point
from coordshard_client.subjects import shard_of
from coordshard_operator.benchmarks.scratchdb import libpq_url
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.testing.cluster import wait_until
from coordshard_service.attempts import KILL_LIMIT, apply_guarded
from coordshard_service.cache import Cache
from coordshard_service.commands import Applied, Incoming
from coordshard_service.metrics import Metrics
from coordshard_service.store import Attempts, Store

from .conftest import GROUP, PREFIX, SHARDS, STREAM_KEY, Provisioner, delivery, spawn_worker

pytestmark = pytest.mark.integration

KILLS = KILL_LIMIT + 3
"""Workers killed before the test gives up on the message being dead-lettered."""
MOVES = 5
"""Moves of each other point, published behind the killer."""


@contextmanager
def row_held(url: str, system_id: str, point_id: str) -> Iterator[psycopg.Connection]:
    """Hold one point's row locked, as a write that never ends would: whoever writes it
    waits inside its batch transaction."""
    with psycopg.connect(libpq_url(url)) as holder:
        holder.execute(
            "SELECT 1 FROM points WHERE group_name = %s AND system_id = %s AND point_id = %s"
            " FOR UPDATE",
            (GROUP, system_id, point_id),
        )
        yield holder
        holder.rollback()


def lock_waiters(url: str) -> int:
    """Sessions of the test database waiting for a lock (a worker inside its batch)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def end_waiters(url: str) -> None:
    """End the sessions of a killed worker still waiting for the lock (PostgreSQL would,
    once it noticed the connection gone; a waiting session does not look)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )


def kill(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("path", ["restart-in-place", "failover"])
async def test_a_message_that_kills_every_worker_is_dead_lettered_and_the_shard_goes_on(
    nats_server: NatsServer,
    nc: Client,
    provisioner: Provisioner,
    database_url: str,
    tmp_path: Path,
    path: str,
) -> None:
    killer = ("sys-k", "kp")
    others = [("sys-k", "ok")]  # the killer's shard
    home = shard_of(killer[0], SHARDS)
    elsewhere = next(f"sys-{i}" for i in range(99) if shard_of(f"sys-{i}", SHARDS) != home)
    others.append((elsewhere, "op"))
    members = iter(f"w{n}" for n in range(KILLS + 1))
    spawned = iter(range(KILLS + 1))

    async def start() -> subprocess.Popen[bytes]:
        member = "w" if path == "restart-in-place" else next(members)
        if path == "failover" or not provisioner.consumers:
            old = provisioner.consumers.pop("current", None)
            if old is not None:
                await provisioner.delete(old)  # the lost pod's lane goes
            name = await provisioner.assign(
                member=member, incarnation="1", shards=list(range(SHARDS)), ack_wait=120
            )
            provisioner.consumers["current"] = name
        return spawn_worker(
            nats_server,
            stream=provisioner.stream,
            database_url=database_url,
            member=member,
            log=tmp_path / f"{member}-{next(spawned)}.log",
        )

    store = Store(database_url, group=GROUP)
    worker = await start()
    try:
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=120
        ) as client:
            for system_id in sorted({s for s, _ in [killer, *others]}):
                await client.create_system(system_id=system_id, name="k", dimension=2)
            for system_id, point_id in [killer, *others]:
                await client.create_point(
                    system_id=system_id, point_id=point_id, coordinates=(0, 0)
                )
            with row_held(database_url, *killer):
                doomed = asyncio.create_task(
                    client.move_point(
                        system_id=killer[0], point_id=killer[1], moves=[MoveTo(position=(9, 9))]
                    )
                )
                moves = [
                    asyncio.create_task(
                        client.move_point(system_id=s, point_id=p, moves=[MoveTo(position=(k, 0))])
                    )
                    for k in range(1, MOVES + 1)
                    for s, p in others
                ]
                kills = 0
                while not store.dead_letters():
                    assert kills < KILLS, (
                        f"the killer was never dead-lettered: {kills} workers killed "
                        f"({path}); delivery counts start afresh with every process"
                    )
                    await wait_until(
                        lambda: lock_waiters(database_url) > 0 or store.dead_letters(),
                        timeout=30,
                        what="the worker to block inside the killer's batch",
                    )
                    if store.dead_letters():
                        break
                    await asyncio.to_thread(kill, worker)
                    kills += 1
                    end_waiters(database_url)
                    await wait_until(lambda: lock_waiters(database_url) == 0)
                    worker = await start()
                [letter] = store.dead_letters()
                assert letter.reason == f"killed {KILL_LIMIT} workers while being applied"
                # The first dies in its steady state, claiming nothing: not counted.
                assert kills == KILL_LIMIT + 1
                assert b'"kp"' in letter.data
                # The rest of its shard, and the other shard, go on while the row is held.
                await asyncio.gather(*moves)
            with pytest.raises(CoordinateValidationError, match=f"killed {KILL_LIMIT} workers"):
                await doomed
            point = await client.get_point(system_id=killer[0], point_id=killer[1])
            assert (point.coordinates, point.version) == ((0.0, 0.0), 1)
            for system_id, point_id in others:
                point = await client.get_point(system_id=system_id, point_id=point_id)
                assert (point.coordinates, point.version) == ((float(MOVES), 0.0), 1 + MOVES)
    finally:
        worker.kill()
        await asyncio.to_thread(worker.wait, 10)
        store.dispose()


def test_claims_left_by_dead_processes_isolate_then_dead_letter_the_killer(
    database_url: str,
) -> None:
    """What each process leaves in the store, on both stores: a process that dies keeps
    its committed claim and nothing of its batch (as SIGKILL inside the batch does)."""
    sid = "k"
    shard = shard_of(sid, SHARDS)
    metrics = Metrics()

    def incoming(seq: int, command: Command) -> Incoming:
        return delivery(sid, seq, command, data=f"raw-{seq}".encode())

    def move(x: float) -> MovePoint:
        return MovePoint(system_id=sid, point_id="p", moves=(MoveTo(position=(x, 0)),))

    items = [incoming(1, CreateSystem(system_id=sid, name="k", dimension=2))]
    items.append(incoming(2, CreatePoint(system_id=sid, point_id="p", coordinates=(0, 0))))
    items += [incoming(seq, move(seq)) for seq in range(3, 7)]
    killer = 4

    def process() -> Store:
        store = Store(database_url, group=GROUP)
        store.migrate()
        return store

    def guarded(store: Store, part: list[Incoming]) -> list[Applied]:
        applied: list[Applied] = []
        apply_guarded(
            store, Cache(100), part, applied=applied, shards=SHARDS, stream=STREAM_KEY,
            consumer="c", metrics=metrics, retention=3600, in_doubt=len(items),
        )  # fmt: skip
        return applied

    def died(store: Store, his: dict[int, int], *, single: bool) -> dict[int, Attempts]:
        found = store.claim_attempts(his, stream=STREAM_KEY, single=single)
        store.dispose()
        return found

    # 1: dies inside the whole batch.
    assert died(process(), {shard: 6}, single=False) == {shard: Attempts(0, 0, 0)}
    # 2: finds one death; applies 1..3 one at a time (each commits), dies on 4 alone.
    second = process()
    assert [o.ok for _, o in guarded(second, items[:3])] == [True] * 3
    assert died(second, {shard: killer}, single=True) == {shard: Attempts(1, 6, 0)}
    # 3: two deaths, the last on 4 alone: below the limit, 4 is tried alone again; dies.
    third = process()
    assert third.claim_attempts({shard: 6}, stream=STREAM_KEY, single=False) == {
        shard: Attempts(2, 6, killer)
    }
    died(third, {shard: killer}, single=True)
    # 4: three deaths, the last on 4 alone: 4 is dead-lettered, 5 and 6 applied in order.
    fourth = process()
    try:
        applied = guarded(fourth, items[3:])
        assert [(i.stream_seq, i.bad is None, o.ok) for i, o in applied] == [
            (4, False, False),
            (5, True, True),
            (6, True, True),
        ]
        [letter] = fourth.dead_letters()
        reason = f"killed {KILL_LIMIT} workers while being applied"
        assert (letter.stream_seq, letter.reason) == (killer, reason)
        assert letter.data == b"raw-4"
        # The mark passed every sequence the dead held: the count is forgotten.
        assert fourth.claim_attempts({shard: 6}, stream=STREAM_KEY, single=False) == {
            shard: Attempts(0, 0, 0)
        }
        point = applied[-1][1].result
        assert isinstance(point, Point) and (point.coordinates, point.version) == ((6.0, 0.0), 4)
        # A claim left over messages applied since (by a lane past its doubt) is no death.
        died(process(), {shard: 8}, single=False)
        past = [incoming(seq, move(seq)) for seq in (7, 8)]
        applied = []
        apply_guarded(
            fourth, Cache(100), past, applied=applied, shards=SHARDS, stream=STREAM_KEY,
            consumer="c", metrics=metrics, retention=3600, in_doubt=0,
        )  # fmt: skip
        assert fourth.claim_attempts({shard: 9}, stream=STREAM_KEY, single=False) == {
            shard: Attempts(0, 0, 0)
        }
    finally:
        fourth.dispose()
