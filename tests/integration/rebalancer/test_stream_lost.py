"""A stream that goes while the group runs is created again, and the group goes on.

It goes when someone deletes it (the documented way to move a group to the blocks
layout) or when nats-server comes back without its JetStream storage (an emptyDir
volume, a lost disk). Before, every pass after that raised StreamMissingError for
ever: publishers got "no responders" and no worker was given a consumer again
until the operator restarted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from coordshard_client.subjects import command_subject
from coordshard_operator.local.natsserver import NatsServer, start_server
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, Layout, MemberInfo
from coordshard_operator.rebalancer.passes import Pass, run_pass

from ..conftest import wait_for_jetstream

pytestmark = pytest.mark.integration

PREFIX = "lost.cmd"
SHARDS = 1024


def members(count: int) -> dict[str, MemberInfo]:
    every = (MemberInfo.of(group="g", member=f"m{i}", incarnation="1") for i in range(count))
    return {m.id: m for m in every}


async def check_group_serves(js: JetStreamContext, stream: str, done: Pass) -> None:
    assert sorted(s for owned in done.plan.balance.assignment.values() for s in owned) == list(
        range(SHARDS)
    )
    subject = command_subject(system_id="sys-1", op="create-system", shards=SHARDS, prefix=PREFIX)
    ack = await js.publish(str(subject), b"{}")
    assert ack.stream == stream
    infos = await js.consumers_info(stream)
    assert sum(c.num_pending for c in infos) == 1, "one consumer of the group holds it"


@pytest.mark.parametrize("layout", ["blocks", "shards"])
async def test_a_stream_deleted_under_a_running_group_is_made_again_and_every_shard_owned(
    js: JetStreamContext, stream_name: str, layout: Layout
) -> None:
    config = GroupConfig(
        stream=stream_name, subject_prefix=PREFIX, group="g", shards=SHARDS, layout=layout
    )
    engine = Engine(js, config)
    await engine.ensure_stream()
    live = members(3)
    first = await run_pass(engine, shards=SHARDS, members=live, epoch=1)
    assert first.changed and not first.observed.recreated

    await js.delete_stream(stream_name)
    again = await run_pass(engine, shards=SHARDS, members=live, epoch=2)

    assert again.observed.recreated
    assert again.observed.consumers == {}
    stream = await js.stream_info(stream_name)
    assert (stream.config.subject_transform is not None) == (layout == "blocks")
    await check_group_serves(js, stream_name, again)
    quiet = await run_pass(engine, shards=SHARDS, members=live, epoch=3)
    assert not quiet.observed.recreated and quiet.report is None


async def test_a_server_back_without_its_storage_gets_the_stream_and_consumers_again(
    tmp_path: Path,
) -> None:
    first = start_server(tmp_path / "before")
    servers: list[NatsServer] = [first]
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    nc: Client = await nats.connect(
        first.url, reconnected_cb=on_reconnect, max_reconnect_attempts=-1, reconnect_time_wait=0.1
    )
    try:
        js = nc.jetstream()
        engine = Engine(
            js, GroupConfig(stream="S", subject_prefix=PREFIX, group="g", shards=SHARDS)
        )
        await engine.ensure_stream()
        live = members(3)
        await run_pass(engine, shards=SHARDS, members=live, epoch=1)

        first.kill()
        servers.append(start_server(tmp_path / "after-an-empty-disk", port=first.port))
        await asyncio.wait_for(reconnected.wait(), 20)
        await wait_for_jetstream(nc)
        again = await run_pass(engine, shards=SHARDS, members=live, epoch=2)

        assert again.observed.recreated
        assert again.changed
        await check_group_serves(js, "S", again)
    finally:
        await nc.close()
        for s in servers:
            s.kill()
