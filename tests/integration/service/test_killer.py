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
from coordshard_client.subjects import shard_of
from coordshard_operator.benchmarks.scratchdb import libpq_url
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.testing.cluster import wait_until
from coordshard_service.attempts import KILL_LIMIT
from coordshard_service.store import Store

from .conftest import GROUP, PREFIX, SHARDS, Provisioner, spawn_worker

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


@pytest.mark.parametrize("path", ["restart-in-place", "failover"])
async def test_a_message_that_kills_every_worker_is_dead_lettered_and_the_shard_goes_on(
    nats_server: NatsServer,
    nc: Client,
    provisioner: Provisioner,
    database_url: str,
    tmp_path: Path,
    path: str,
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a row lock blocks a SQLite worker before its attempt is claimed")
    killer = ("sys-k", "kp")
    others = [("sys-k", "ok")]  # the killer's shard
    home = shard_of(killer[0], SHARDS)
    others.append((next(f"sys-{i}" for i in range(99) if shard_of(f"sys-{i}", SHARDS) != home), "op"))
    members = iter(f"w{n}" for n in range(KILLS + 1))

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
            log=tmp_path / f"{member}-{len(list(tmp_path.glob('*.log')))}.log",
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
                        client.move_point(
                            system_id=s, point_id=p, moves=[MoveTo(position=(k, 0))]
                        )
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
                assert kills == KILL_LIMIT
                assert b'"kp"' in letter.data
                # The rest of its shard, and the other shard, go on while the row is held.
                await asyncio.gather(*moves)
            with pytest.raises(CoordinateValidationError, match="killed 3 workers"):
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
