"""A rebalance pass resumes what a pass that died at its very end left paused."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js import JetStreamContext

from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.passes import run_pass

pytestmark = pytest.mark.integration


class Crash(Exception):
    """The rebalancer's process dying right after a step."""


async def test_pass_that_died_after_the_last_grow_is_finished_by_the_next(
    js: JetStreamContext,
) -> None:
    config = GroupConfig(shards=8, pause_s=60.0, layout="shards")
    a = MemberInfo.of(group=config.group, member="a", incarnation="1")
    b = MemberInfo.of(group=config.group, member="b", incarnation="1")

    async def die_after_grow(step: str) -> None:
        if step.startswith("grown"):
            raise Crash(step)

    engine = Engine(js, config)
    await engine.ensure_stream()
    first = await run_pass(engine, shards=8, members={a.id: a, b.id: b}, epoch=1)
    assert first.changed

    crashing = Engine(js, config, checkpoint=die_after_grow)
    with pytest.raises(Crash):
        await run_pass(crashing, shards=8, members={a.id: a}, epoch=2)
    stuck = await engine.observe()
    assert stuck.assignment == {a.id: tuple(range(8))}, "grown, then died"
    assert stuck.consumers[a.id].paused, "left paused: the plan alone looks converged"

    again = await run_pass(engine, shards=8, members={a.id: a}, epoch=3)
    assert again.plan.converged and again.report is not None
    assert a.id in again.report.resumed
    assert not (await engine.observe()).consumers[a.id].paused
    # And now it really is converged: a third pass does nothing.
    assert (await run_pass(engine, shards=8, members={a.id: a}, epoch=4)).report is None


async def test_the_engine_runs_the_planned_steps_and_a_pass_reads_nats_once(
    js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = GroupConfig(shards=12, layout="shards")
    a, b, c, d = (
        MemberInfo.of(group=config.group, member=m, incarnation="1") for m in ("a", "b", "c", "d")
    )
    engine = Engine(js, config)
    await engine.ensure_stream()
    reads = 0
    listing = engine.api.consumers

    async def counted(stream: str) -> Any:
        nonlocal reads
        reads += 1
        return await listing(stream)

    monkeypatch.setattr(engine.api, "consumers", counted)
    await run_pass(engine, shards=12, members={m.id: m for m in (a, b, c)}, epoch=1)
    assert reads == 1

    # c is lost and d joins in the same pass: a fence, narrows and grows at once.
    done = await run_pass(engine, shards=12, members={m.id: m for m in (a, b, d)}, epoch=2)
    assert reads == 2
    assert done.report is not None
    steps = done.plan.steps
    assert (
        [f.consumer for f in done.report.fenced]
        == [st.member for st in steps if st.action == "fence"]
        == [c.id]
    )
    assert dict(done.report.narrowed) == {
        st.member: st.changed for st in steps if st.action == "narrow"
    }
    assert dict(done.report.grown) == {st.member: st.changed for st in steps if st.action == "grow"}
    assert d.id in done.report.grown
    in_force = (await engine.observe()).assignment
    assert in_force == {m: s for m, s in done.plan.balance.assignment.items() if s}
