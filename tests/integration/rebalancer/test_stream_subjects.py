"""The stream takes only subjects a consumer can own, and sheds what it stored before.

Issue 17 §4: a stream over ``<prefix>.>`` stored messages on shard tokens no
consumer covers (``16`` of 16, ``03``, ``x``, ``-1``, ``+1``, too few tokens);
no consumer ever delivered them and the stream never drained. Now the server
refuses them at publish, an old stream is rewritten in place, and what it
stored before is swept by the next pass.
"""

from __future__ import annotations

import dataclasses

import nats.errors
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig

from coordshard_client.subjects import stream_subjects
from coordshard_operator.rebalancer.errors import StreamMismatchError
from coordshard_operator.rebalancer.handoff import MAX_DELIVER, Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.passes import run_pass
from coordshard_operator.rebalancer.strays import WALK_LIMIT

pytestmark = pytest.mark.integration

PREFIX = "o.cmd"
SHARDS = 16

BAD_SUBJECTS = [
    pytest.param(f"{PREFIX}.16.sys-1.get-point", id="shard-N"),
    pytest.param(f"{PREFIX}.4095.sys-1.get-point", id="shard-4095"),
    pytest.param(f"{PREFIX}.99999999999.sys-1.get-point", id="shard-huge"),
    pytest.param(f"{PREFIX}.03.sys-1.get-point", id="leading-zero"),
    pytest.param(f"{PREFIX}.x.sys-1.get-point", id="not-a-number"),
    pytest.param(f"{PREFIX}.-1.sys-1.get-point", id="negative"),
    pytest.param(f"{PREFIX}.+1.sys-1.get-point", id="plus-sign"),
    pytest.param(f"{PREFIX}.3.sys-1", id="too-few-tokens"),
    pytest.param(f"{PREFIX}.3", id="shard-only"),
    pytest.param(f"{PREFIX}.3.sys-1.get-point.extra", id="too-many-tokens"),
]


def config(stream: str, shards: int = SHARDS) -> GroupConfig:
    return GroupConfig(
        stream=stream, subject_prefix=PREFIX, group="g", shards=shards, layout="shards"
    )


def one_member() -> dict[str, MemberInfo]:
    m = MemberInfo.of(group="g", member="a", incarnation="1")
    return {m.id: m}


async def subjects_present(js: JetStreamContext, stream: str) -> dict[str, int]:
    info = await js.stream_info(stream, subjects_filter=">")
    return dict(info.state.subjects or {})


@pytest.mark.parametrize("subject", BAD_SUBJECTS)
async def test_the_stream_refuses_a_subject_no_consumer_can_own(
    js: JetStreamContext, stream_name: str, subject: str
) -> None:
    await Engine(js, config(stream_name)).ensure_stream()
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await js.publish(subject, b"{}", timeout=2)
    ack = await js.publish(f"{PREFIX}.{SHARDS - 1}.sys-1.get-point", b"{}", timeout=2)
    assert ack.stream == stream_name
    assert (await js.stream_info(stream_name)).state.messages == 1


async def test_an_old_catch_all_stream_is_rewritten_in_place_and_swept(
    js: JetStreamContext, stream_name: str
) -> None:
    await js.add_stream(
        StreamConfig(
            name=stream_name, subjects=[f"{PREFIX}.>"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    bad = [p.values[0] for p in BAD_SUBJECTS]
    for subject in bad:
        await js.publish(subject, b"{}")
    # Literal wildcard tokens are stored as they are: one stray, one owned (shard 3).
    await js.publish(f"{PREFIX}.99.*.get-point", b"{}")
    await js.publish(f"{PREFIX}.3.*.get-point", b"{}")
    good = [f"{PREFIX}.{s}.sys-{s}.get-point" for s in range(SHARDS)]
    for subject in good:
        await js.publish(subject, b"{}")

    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    info = await js.stream_info(stream_name)
    assert info.config.subjects == stream_subjects(SHARDS, prefix=PREFIX)
    assert info.state.messages == len(bad) + 2 + SHARDS  # rewritten, nothing lost yet

    done = await run_pass(engine, shards=SHARDS, members=one_member(), epoch=1)
    assert done.swept is not None
    assert done.swept.messages == len(bad) + 1
    assert set(done.swept.subjects) == {*bad, f"{PREFIX}.99.*.get-point"}
    assert await subjects_present(js, stream_name) == {
        **{s: 1 for s in good},
        f"{PREFIX}.3.*.get-point": 1,
    }
    # Clean now: the next pass neither lists nor removes anything.
    again = await run_pass(engine, shards=SHARDS, members=one_member(), epoch=2)
    assert again.swept is None


async def test_a_stream_recording_no_count_is_adopted_and_sheds_the_lost_shards(
    js: JetStreamContext, stream_name: str
) -> None:
    # Made before the shard count was recorded in the stream's metadata (issue 15 §3):
    # its subjects are a 32-shard group's; an engine of 16 adopts it (and records 16).
    await js.add_stream(
        StreamConfig(
            name=stream_name,
            subjects=stream_subjects(32, prefix=PREFIX),
            retention=RetentionPolicy.WORK_QUEUE,
        )
    )
    for s in (3, 20, 31):
        await js.publish(f"{PREFIX}.{s}.sys.get-point", b"{}")

    smaller = Engine(js, config(stream_name, shards=SHARDS))
    await smaller.ensure_stream()
    assert (await js.stream_info(stream_name)).config.subjects == stream_subjects(
        SHARDS, prefix=PREFIX
    )
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await js.publish(f"{PREFIX}.20.sys.get-point", b"{}", timeout=2)
    done = await run_pass(smaller, shards=SHARDS, members=one_member(), epoch=1)
    assert done.swept is not None and done.swept.messages == 2
    assert await subjects_present(js, stream_name) == {f"{PREFIX}.3.sys.get-point": 1}

    # Recorded now: another count is refused, the stream left as it is.
    with pytest.raises(StreamMismatchError, match=r"records 16 shards"):
        await Engine(js, config(stream_name, shards=64)).ensure_stream()
    assert (await js.stream_info(stream_name)).config.subjects == stream_subjects(
        SHARDS, prefix=PREFIX
    )


async def test_subjects_changed_by_hand_are_put_back_by_the_next_pass(
    js: JetStreamContext, stream_name: str
) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    await run_pass(engine, shards=SHARDS, members=one_member(), epoch=1)
    await js.update_stream(
        StreamConfig(
            name=stream_name, subjects=[f"{PREFIX}.>"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    await js.publish(f"{PREFIX}.x.sys.get-point", b"{}")
    done = await run_pass(engine, shards=SHARDS, members=one_member(), epoch=2)
    assert done.swept is not None and done.swept.messages == 1
    assert (await js.stream_info(stream_name)).config.subjects == stream_subjects(
        SHARDS, prefix=PREFIX
    )


async def test_a_rewrite_the_server_refuses_is_a_clear_error(
    js: JetStreamContext, stream_name: str
) -> None:
    await js.add_stream(
        StreamConfig(
            name=stream_name, subjects=[f"{PREFIX}.x.>"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_stream(StreamConfig(name=f"{stream_name}-other", subjects=[f"{PREFIX}.5.>"]))
    with pytest.raises(StreamMismatchError, match=r"overlap.*by hand"):
        await Engine(js, config(stream_name)).ensure_stream()
    assert (await js.stream_info(stream_name)).config.subjects == [f"{PREFIX}.x.>"]


async def test_consumers_get_max_deliver_and_older_ones_are_brought_up_to_it(
    js: JetStreamContext, stream_name: str
) -> None:
    old = Engine(js, dataclasses.replace(config(stream_name), max_deliver=5))
    await old.ensure_stream()
    await run_pass(old, shards=SHARDS, members=one_member(), epoch=1)
    [info] = await js.consumers_info(stream_name)
    assert info.config.max_deliver == 5

    engine = Engine(js, config(stream_name))
    done = await run_pass(engine, shards=SHARDS, members=one_member(), epoch=2)
    assert done.report is not None and done.report.consumer_updates == 1
    [info] = await js.consumers_info(stream_name)
    assert info.config.max_deliver == MAX_DELIVER == engine.config.max_deliver
    assert len(info.config.filter_subjects or []) == SHARDS
    again = await run_pass(engine, shards=SHARDS, members=one_member(), epoch=3)
    assert again.report is None


@pytest.mark.parametrize("retry_s", [3600.0, 0.0], ids=["within-the-retry", "past-it"])
async def test_a_sweep_that_could_not_finish_is_not_repeated_on_every_pass(
    js: JetStreamContext, stream_name: str, retry_s: float
) -> None:
    """An incomplete sweep (here: a literal-wildcard stray with more messages than one
    pass deletes; in production more distinct subjects than one listing returns) lists
    the whole subject index under the stream's lock. Before, every pass did that again."""
    await js.add_stream(
        StreamConfig(
            name=stream_name, subjects=[f"{PREFIX}.>"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    stray = f"{PREFIX}.99.*.get-point"
    for _ in range(WALK_LIMIT + 200):
        await js.publish(stray, b"{}")
    engine = Engine(js, dataclasses.replace(config(stream_name), sweep_retry_s=retry_s))
    await engine.ensure_stream()

    first = await run_pass(engine, shards=SHARDS, members=one_member(), epoch=1)
    assert first.swept is not None and not first.swept.complete
    assert first.swept.messages == WALK_LIMIT

    listings = 0
    real = engine.api.stream_subjects

    async def counted(*args: object, **kw: object) -> object:
        nonlocal listings
        listings += 1
        return await real(*args, **kw)  # type: ignore[arg-type]

    engine.api.stream_subjects = counted  # type: ignore[method-assign,assignment]
    again = await run_pass(engine, shards=SHARDS, members=one_member(), epoch=2)
    if retry_s:
        assert again.swept is None and listings == 0
        assert (await subjects_present(js, stream_name)) == {stray: 200}
    else:
        assert again.swept is not None and again.swept.complete
        assert again.swept.messages == 200 and listings == 1
        assert await subjects_present(js, stream_name) == {}
