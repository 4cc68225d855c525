"""The rewind after a grow: a reset that did not take is caught and sent again.

A gainer's consumer is reset to the stream's first sequence before its filter
grows, so that it delivers the gained shards' leftovers. The engine then reads
the cursor back and resets again when it is still past them (on R3 the filter
update itself can move it, and a reset answered across a leader change may
not take). Here the fault is injected at the engine's JetStream boundary, on a
real nats-server: the first resets it sends are answered but do nothing.
"""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext

from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo

pytestmark = pytest.mark.integration

PREFIX = "t.cmd"
LEFTOVERS = 5


def _member(name: str) -> MemberInfo:
    return MemberInfo.of(group="g", member=name, incarnation="1")


@pytest.mark.parametrize("lost_resets", [1, 2], ids=["grow-reset-lost", "rewind-retried"])
async def test_a_gainer_whose_reset_did_not_take_still_gets_the_leftovers(
    js: JetStreamContext, stream_name: str, monkeypatch: pytest.MonkeyPatch, lost_resets: int
) -> None:
    cursors: dict[str, int] = {}
    a, b = _member("a"), _member("b")
    a_name = f"{a.id}_g1"  # made by the first apply, at epoch 1

    async def look(step: str) -> None:
        info = await js.consumer_info(stream_name, a_name)
        cursors[step] = info.delivered.stream_seq or 0

    config = GroupConfig(
        stream=stream_name,
        subject_prefix=PREFIX,
        group="g",
        shards=2,
        drain_timeout_s=1.0,
        layout="shards",  # the rewind is the shards layout's step
    )
    engine = Engine(js, config, checkpoint=look)
    await engine.ensure_stream()
    both = {a.id: a, b.id: b}
    await engine.apply({a.id: (0,), b.id: (1,)}, members=both, epoch=1)
    # b never pulls: its shard's messages are the leftovers. a serves shard 0
    # published after them, so its cursor is past them.
    for i in range(LEFTOVERS):
        await js.publish(f"{PREFIX}.1.s.op", f"left-{i}".encode())
    for i in range(3):
        await js.publish(f"{PREFIX}.0.s.op", f"own-{i}".encode())
    own = await js.pull_subscribe_bind(durable=a_name, stream=stream_name)
    for msg in await own.fetch(3, timeout=2):
        await msg.ack_sync()
    await own.unsubscribe()

    real_reset = engine.api.reset_consumer
    sent: list[int] = []

    async def reset_that_may_not_take(stream: str, name: str, *, seq: int) -> None:
        sent.append(seq)
        if len(sent) > lost_resets:
            await real_reset(stream, name, seq=seq)

    monkeypatch.setattr(engine.api, "reset_consumer", reset_that_may_not_take)

    # b dies; a gains shard 1.
    report = await engine.apply({a.id: (0, 1)}, members={a.id: a}, epoch=2)

    assert [f.consumer for f in report.fenced] == [b.id]
    assert report.grown == {a.id: (1,)}
    # The fault took: right after the grow the cursor was past the leftovers.
    assert cursors[f"grown {a.id}"] > LEFTOVERS, cursors
    gainer = await js.pull_subscribe_bind(durable=a_name, stream=stream_name)
    info = await js.consumer_info(stream_name, a_name)
    assert info.num_pending == LEFTOVERS, "the leftovers are stranded behind the cursor"
    got = await gainer.fetch(LEFTOVERS, timeout=2)
    assert [m.data for m in got] == [f"left-{i}".encode() for i in range(LEFTOVERS)]
    for msg in got:
        await msg.ack_sync()
    await gainer.unsubscribe()
    assert len(sent) == lost_resets + 1  # the rewind checked, then sent its reset again
