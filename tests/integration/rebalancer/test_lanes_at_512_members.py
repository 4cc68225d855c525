"""N = 4096 over 512 members, the CRD's largest group, on a default nats-server 2.15.

512 members get one lane each (K = 512 blocks), a crash of 128 of them grants
their blocks on new lanes of the survivors, and every block has exactly one
owner after each pass, with no member past its lane bound once quiet passes
have run. The group stays well under the server's default of 1000 consumers a
stream even before the quiet passes (640 lanes here); the engine's blocks
stream sets ``max_consumers`` = 4096 all the same (``MAX_CONSUMERS``).
"""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from coordshard_client.subjects import blocks_of
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.lanes import lane_bound
from coordshard_operator.rebalancer.passes import run_pass

pytestmark = pytest.mark.integration

SHARDS = 4096
MEMBERS = 512


def members(count: int) -> dict[str, MemberInfo]:
    every = (MemberInfo.of(group="g", member=f"m{i:03d}", incarnation="1") for i in range(count))
    return {m.id: m for m in every}


async def lanes_of(engine: Engine) -> dict[str, list[tuple[int, ...]]]:
    observed = await engine.observe()
    by_member: dict[str, list[tuple[int, ...]]] = {}
    for name, lane in observed.consumers.items():
        by_member.setdefault(observed.owner(name), []).append(lane.blocks)
    return by_member


def assert_every_block_owned_once(by_member: dict[str, list[tuple[int, ...]]]) -> None:
    blocks = sorted(b for lanes in by_member.values() for lane in lanes for b in lane)
    assert blocks == list(range(blocks_of(SHARDS)))


async def test_512_members_then_a_quarter_lost_on_a_default_server(
    js: JetStreamContext, stream_name: str
) -> None:
    engine = Engine(js, GroupConfig(stream=stream_name, group="g", shards=SHARDS))
    await engine.ensure_stream()
    live = members(MEMBERS)
    first = await run_pass(engine, shards=SHARDS, members=live, epoch=1)
    assert first.changed
    by_member = await lanes_of(engine)
    assert sorted(by_member) == sorted(live)
    assert all(len(lanes) == 1 for lanes in by_member.values())
    assert_every_block_owned_once(by_member)

    for victim in sorted(live)[::4]:
        del live[victim]
    crash = await run_pass(engine, shards=SHARDS, members=live, epoch=2)
    assert crash.report is not None and len(crash.report.fenced) == MEMBERS // 4
    by_member = await lanes_of(engine)
    assert sorted(by_member) == sorted(live)
    assert_every_block_owned_once(by_member)
    epoch = 3
    while (await run_pass(engine, shards=SHARDS, members=live, epoch=epoch)).report:
        epoch += 1  # quiet passes merge what the crash left
    by_member = await lanes_of(engine)
    assert_every_block_owned_once(by_member)
    for lanes in by_member.values():
        assert len(lanes) <= lane_bound(sum(len(lane) for lane in lanes))
    # Every consumer on the stream is a lane of a live member (paged: past 256 consumers
    # nats-py's consumers_info returns only the first page).
    assert len(await engine.api.consumers(stream_name)) == sum(map(len, by_member.values()))
