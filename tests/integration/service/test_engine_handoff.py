"""The worker under the real rebalancing engine: a kill -9 handoff to a live survivor.

Here the survivor's consumer is not created afresh: the engine pauses it,
drains it, rewinds it (reset to the stream's first sequence) and grows its
filter, so the survivor receives the dead worker's leftovers behind its own
traffic, and must answer each of them exactly once.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client

from coordshard_client import CoordinateClient
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.passes import run_pass

from .conftest import (
    GROUP,
    PREFIX,
    SHARDS,
    MoveLoad,
    Provisioner,
    spawn_worker,
    start_member,
    wait_until,
)

pytestmark = pytest.mark.integration


async def test_engine_crash_handoff_to_a_live_worker_applies_every_command_once(
    nats_server: NatsServer, nc: Client, stream_name: str, database_url: str, tmp_path: Path
) -> None:
    js = nc.jetstream()
    engine = Engine(js, GroupConfig(stream=stream_name, subject_prefix=PREFIX, shards=SHARDS))
    await engine.ensure_stream()
    a = MemberInfo.of(group=GROUP, member="a", incarnation="1")
    b = MemberInfo.of(group=GROUP, member="b", incarnation="1")
    await run_pass(engine, shards=SHARDS, members={a.id: a, b.id: b}, epoch=1)

    proc = spawn_worker(
        nats_server, stream=stream_name, database_url=database_url, member="a", log=tmp_path / "a"
    )
    survivor = await start_member(
        nats_server, Provisioner(js, stream_name), database_url=database_url, member="b"
    )
    try:
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream=stream_name, timeout=60
        ) as client:
            load = await MoveLoad.seed(client, systems=8, per_system=4)
            load.launch(800)
            await wait_until(lambda: load.done() >= 100, timeout=30)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert load.done() < 800, "everything finished before the kill"

            done = await run_pass(engine, shards=SHARDS, members={b.id: b}, epoch=2)
            assert done.changed
            await wait_until(lambda: survivor.worker.shards == set(range(SHARDS)), timeout=10)
            await load.check_applied_once()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await survivor.shutdown()
