"""The engine refuses, at start, what it cannot serve: an old nats-server, a stream
whose recorded shard count is not the group's.

Issue 13 §3: against nats-server 2.9 the engine made an unfiltered consumer (2.9
reads ``filter_subjects`` as none), and the group looped on "multiple
non-filtered consumers not allowed". Issue 15 §3: the group's N is a fact of the
stream, recorded in its metadata; a client or worker reads it from there.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig

from coordshard_client.subjects import STREAM_META_SHARDS, stream_subjects
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.rebalancer.errors import NatsServerTooOldError, StreamMismatchError
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.passes import run_pass

from ..conftest import wait_for_jetstream

pytestmark = pytest.mark.integration

PREFIX = "o.cmd"


def config(stream: str, shards: int = 8) -> GroupConfig:
    return GroupConfig(stream=stream, subject_prefix=PREFIX, group="g", shards=shards)


async def test_an_old_server_is_refused_before_anything_is_created(
    old_nats_server: NatsServer,
) -> None:
    nc = await nats.connect(old_nats_server.url, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        engine = Engine(js, config("OLD"))
        with pytest.raises(NatsServerTooOldError) as refused:
            await engine.ensure_stream()
        assert refused.value.found.startswith("2.9.")
        assert refused.value.needed == "2.14.0"
        assert "consumer reset (CONSUMER.RESET) needs 2.14.0" in str(refused.value)
        m = MemberInfo.of(group="g", member="a", incarnation="1")
        with pytest.raises(NatsServerTooOldError):
            await engine.apply({m.id: tuple(range(8))}, members={m.id: m}, epoch=1)
        assert (await js.account_info()).streams == 0
        assert (await js.account_info()).consumers == 0
    finally:
        await nc.close()


async def test_the_stream_records_its_shard_count(js: JetStreamContext, stream_name: str) -> None:
    await Engine(js, config(stream_name)).ensure_stream()
    info = await js.stream_info(stream_name)
    assert (info.config.metadata or {})[STREAM_META_SHARDS] == "8"


async def test_a_stream_recording_another_shard_count_is_refused_and_left_alone(
    js: JetStreamContext, stream_name: str
) -> None:
    await Engine(js, config(stream_name, shards=8)).ensure_stream()
    with pytest.raises(StreamMismatchError, match=r"records 8 shards .*not 16"):
        await Engine(js, config(stream_name, shards=16)).ensure_stream()
    info = await js.stream_info(stream_name)
    assert info.config.subjects == stream_subjects(8, prefix=PREFIX)
    assert (info.config.metadata or {})[STREAM_META_SHARDS] == "8"


async def test_a_stream_made_before_the_count_was_recorded_is_adopted(
    js: JetStreamContext, stream_name: str
) -> None:
    await js.add_stream(
        StreamConfig(
            name=stream_name,
            subjects=stream_subjects(8, prefix=PREFIX),
            retention=RetentionPolicy.WORK_QUEUE,
        )
    )
    await js.publish(f"{PREFIX}.3.sys.get-point", b"{}")
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    info = await js.stream_info(stream_name)
    assert (info.config.metadata or {})[STREAM_META_SHARDS] == "8"
    assert info.config.subjects == stream_subjects(8, prefix=PREFIX)
    assert info.state.messages == 1
    m = MemberInfo.of(group="g", member="a", incarnation="1")
    done = await run_pass(engine, shards=8, members={m.id: m}, epoch=1)
    assert done.swept is None or done.swept.messages == 0


async def test_an_r3_stream_waits_for_its_third_peer_instead_of_being_refused(
    nats_cluster: list[NatsServer], caplog: pytest.LogCaptureFixture
) -> None:
    # "no suitable peers for placement" (10005) is what a cluster answers while a
    # node is still joining or restarting: local mode's R3 chaos test met it at
    # start on a loaded machine, and it was taken for a stream mismatch ("fix or
    # remove the stream by hand") and ended `coordshard up`.
    late = nats_cluster[2]
    late.stop()
    nc = await nats.connect(nats_cluster[0].url, max_reconnect_attempts=-1)
    try:
        await wait_for_jetstream(nc)
        engine = Engine(nc.jetstream(), replace(config("R3LATE"), replicas=3))
        caplog.set_level(logging.INFO, logger="coordshard_operator.rebalancer.jetstream")
        creating = asyncio.ensure_future(engine.ensure_stream())
        deadline = asyncio.get_running_loop().time() + 20
        while not any("no suitable peers" in r.getMessage() for r in caplog.records):
            if creating.done() or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)  # polling the log, with a deadline
        late.start()
        await asyncio.wait_for(creating, 30)
        assert any("no suitable peers" in r.getMessage() for r in caplog.records)  # it waited
        info = await nc.jetstream().stream_info("R3LATE")
        assert info.config.num_replicas == 3
    finally:
        await nc.close()
