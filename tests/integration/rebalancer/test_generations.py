"""Every consumer the engine creates has a name no consumer of its group had before.

A member fenced while its process was frozen comes back as the same
incarnation; its late acks name the deleted consumer, so the one made for it
now must be named anew, also by an engine restarted with epochs that repeat
(a reconcile whose epoch was never recorded) or start again from 0 (local
mode's, at each ``coordshard up``).
"""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from coordshard_client.naming import consumer_name
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("restart_epoch", [0, 2], ids=["started-again", "repeated"])
async def test_a_member_back_after_a_fence_gets_a_new_name_from_a_restarted_engine(
    js: JetStreamContext, stream_name: str, restart_epoch: int
) -> None:
    config = GroupConfig(stream=stream_name, group="g", shards=4, layout="shards")
    a = MemberInfo.of(group="g", member="a", incarnation="1")
    b = MemberInfo.of(group="g", member="b", incarnation="1")
    both = {a.id: a, b.id: b}
    names: list[str] = []

    async def fence_a_and_bring_it_back(engine: Engine, epoch: int) -> None:
        fenced = await engine.apply({b.id: range(4)}, members={b.id: b}, epoch=epoch)
        assert [f.consumer for f in fenced.fenced] == [a.id]
        back = await engine.apply({a.id: (0, 1), b.id: (2, 3)}, members=both, epoch=epoch + 1)
        assert back.created == (a.id,)
        names.extend(back.created_names)

    engine = Engine(js, config)
    await engine.ensure_stream()
    first = await engine.apply({a.id: (0, 1), b.id: (2, 3)}, members=both, epoch=1)
    names.extend(first.created_names)
    assert first.created_names == (consumer_name(a.id, generation=1), f"{b.id}_g1")
    await fence_a_and_bring_it_back(engine, 2)
    assert names[-1] == consumer_name(a.id, generation=3), "named after its epoch"

    await fence_a_and_bring_it_back(Engine(js, config), restart_epoch)
    assert len(names) == len(set(names)), names
    observed = await Engine(js, config).observe()
    assert observed.consumers[a.id].name == names[-1]
    assert observed.generation >= 4
