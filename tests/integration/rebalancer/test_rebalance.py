"""A rebalance pass resumes what a pass that died at its very end left paused."""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.passes import rebalance

pytestmark = pytest.mark.integration


class Crash(Exception):
    """The rebalancer's process dying right after a step."""


async def test_pass_that_died_after_the_last_grow_is_finished_by_the_next(
    js: JetStreamContext,
) -> None:
    config = GroupConfig(shards=8, pause_s=60.0)
    a = MemberInfo.of(group=config.group, member="a", incarnation="1")
    b = MemberInfo.of(group=config.group, member="b", incarnation="1")

    async def die_after_grow(step: str) -> None:
        if step.startswith("grown"):
            raise Crash(step)

    engine = Engine(js, config)
    await engine.ensure_stream()
    first = await rebalance(engine, shards=8, members={a.consumer: a, b.consumer: b}, epoch=1)
    assert first.changed

    crashing = Engine(js, config, checkpoint=die_after_grow)
    with pytest.raises(Crash):
        await rebalance(crashing, shards=8, members={a.consumer: a}, epoch=2)
    stuck = await engine.observe()
    assert stuck.assignment == {a.consumer: tuple(range(8))}, "grown, then died"
    assert stuck.consumers[a.consumer].paused, "left paused: the plan alone looks converged"

    again = await rebalance(engine, shards=8, members={a.consumer: a}, epoch=3)
    assert again.plan.converged and again.report is not None
    assert a.consumer in again.report.resumed
    assert not (await engine.observe()).consumers[a.consumer].paused
    # And now it really is converged: a third pass does nothing.
    assert (await rebalance(engine, shards=8, members={a.consumer: a}, epoch=4)).report is None
