"""The engine against a real nats-server: stream setup, idempotence, fencing, safety.

Workers are simulated in-process (``benchmarks.workload.SimWorker``): they pull,
record ``(consumer, shard, stream seq)`` and ack with ``ack_sync``. The engine
plays the operator: observe -> plan -> reconcile after every membership change.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig

from coordshard_client.subjects import stream_subjects
from coordshard_operator.benchmarks.workload import Ledger, Publisher, SimWorker
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.rebalancer.errors import (
    ConfigError,
    StreamMismatchError,
    StreamMissingError,
    TransientError,
)
from coordshard_operator.rebalancer.handoff import (
    Engine,
    GroupConfig,
    Layout,
    MemberInfo,
    Report,
)
from coordshard_operator.rebalancer.jetstream import RetryPolicy
from coordshard_operator.rebalancer.planning import plan

from .conftest import Fleet

pytestmark = pytest.mark.integration

PREFIX = "t.cmd"
SHARDS = 32


LAYOUTS = pytest.mark.parametrize("layout", ["blocks", "shards"])
"""For the behaviour both layouts must keep (churn, crash, zombie, resume)."""


def config(stream: str, **overrides: object) -> GroupConfig:
    base: dict[str, object] = {
        "stream": stream,
        "subject_prefix": PREFIX,
        "group": "g",
        "shards": SHARDS,
        "drain_timeout_s": 1.0,
        "layout": "shards",
    }
    base.update(overrides)
    return GroupConfig(**base)  # type: ignore[arg-type]


def member(name: str, incarnation: int = 1) -> MemberInfo:
    return MemberInfo.of(group="g", member=name, incarnation=str(incarnation))


async def converge(engine: Engine, live: Mapping[str, MemberInfo], epoch: int) -> Report:
    """What a membership source does: observe, plan over the live members, reconcile."""
    observed = await engine.observe()
    p = plan(
        shards=engine.config.shards,
        members=list(live),
        previous=observed.assignment,
        blocks=engine.blocks,
        release_order=engine.release_order(observed),
    )
    return await engine.apply(p.balance.assignment, members=live, epoch=epoch, observed=observed)


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 20.0, what: str = ""
) -> None:
    """Poll a condition until it holds or the deadline passes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


def assert_safe(ledger: Ledger, duplicate_bound: int) -> None:
    assert not ledger.missing(), f"lost {sorted(ledger.missing())[:20]}"
    assert not ledger.out_of_order()
    assert ledger.duplicates() <= duplicate_bound


async def test_ensure_stream_creates_a_work_queue_and_accepts_it_again(
    js: JetStreamContext, stream_name: str
) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    await engine.ensure_stream()
    info = await js.stream_info(stream_name)
    assert info.config.retention == RetentionPolicy.WORK_QUEUE
    assert info.config.subjects == stream_subjects(SHARDS, prefix=PREFIX)


async def test_incompatible_stream_is_reported_and_left_alone(
    js: JetStreamContext, stream_name: str
) -> None:
    await js.add_stream(StreamConfig(name=stream_name, subjects=[f"{PREFIX}.>"]))
    with pytest.raises(StreamMismatchError, match="retention"):
        await Engine(js, config(stream_name)).ensure_stream()
    info = await js.stream_info(stream_name)
    assert info.config.retention == RetentionPolicy.LIMITS


async def test_missing_stream_is_a_clear_error(js: JetStreamContext, stream_name: str) -> None:
    with pytest.raises(StreamMissingError):
        await Engine(js, config(stream_name)).observe()


async def test_desired_assignment_is_validated(js: JetStreamContext, stream_name: str) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    a, b = member("a"), member("b")
    live = {a.id: a, b.id: b}
    with pytest.raises(ConfigError, match="both"):
        await engine.apply({a.id: (1,), b.id: (1,)}, members=live, epoch=1)
    with pytest.raises(ConfigError, match="not a live member"):
        await engine.apply({"ghost": (1,)}, members=live, epoch=1)


@LAYOUTS
async def test_second_reconcile_changes_nothing(
    js: JetStreamContext, stream_name: str, layout: Layout
) -> None:
    engine = Engine(js, config(stream_name, layout=layout))
    await engine.ensure_stream()
    live = {m.id: m for m in (member("a"), member("b"), member("c"))}
    first = await converge(engine, live, epoch=1)
    assert set(first.created) == set(live)
    before = {
        c.name: (c.created, c.config.filter_subjects) for c in await js.consumers_info(stream_name)
    }

    again = await converge(engine, live, epoch=2)

    assert again.consumer_updates == 0
    assert not again.changed
    after = {
        c.name: (c.created, c.config.filter_subjects) for c in await js.consumers_info(stream_name)
    }
    assert after == before
    observed = await engine.observe()
    assert sorted(s for shards in observed.assignment.values() for s in shards) == list(
        range(SHARDS)
    )
    assert {c.epoch for c in observed.consumers.values()} == {1}
    assert {c.member for c in observed.consumers.values()} == {"a", "b", "c"}


@LAYOUTS
async def test_member_without_shards_has_no_consumer(
    js: JetStreamContext, stream_name: str, layout: Layout
) -> None:
    engine = Engine(js, config(stream_name, layout=layout, shards=2))
    await engine.ensure_stream()
    live = {m.id: m for m in (member("a"), member("b"), member("c"))}
    await converge(engine, live, epoch=1)
    observed = await engine.observe()
    assert len(observed.consumers) == 2
    for state in observed.consumers.values():
        assert state.shards  # never an empty filter list, which would mean "everything"


@LAYOUTS
async def test_remove_group_keeps_the_messages(
    js: JetStreamContext, stream_name: str, layout: Layout
) -> None:
    engine = Engine(js, config(stream_name, layout=layout))
    await engine.ensure_stream()
    await converge(engine, {member("a").id: member("a")}, epoch=1)
    await js.publish(f"{PREFIX}.3.sys.op", b"x")
    await engine.remove_group()
    assert (await engine.observe()).consumers == {}
    assert (await js.stream_info(stream_name)).state.messages == 1


@LAYOUTS
async def test_fenced_zombie_can_neither_fetch_nor_ack(
    js: JetStreamContext, stream_name: str, layout: Layout
) -> None:
    engine = Engine(js, config(stream_name, layout=layout, shards=4))
    await engine.ensure_stream()
    a, b = member("a"), member("b")
    await engine.apply({a.id: (0, 1, 2, 3)}, members={a.id: a}, epoch=1)
    await js.publish(f"{PREFIX}.2.sys.op", b"held")
    await js.publish(f"{PREFIX}.2.sys.op", b"later")
    zombie = await js.pull_subscribe_bind(durable=f"{a.id}_g1", stream=stream_name)
    [held] = await zombie.fetch(1, timeout=2)

    # a is declared dead while its process still runs; b takes its shards.
    report = await engine.apply({b.id: (0, 1, 2, 3)}, members={b.id: b}, epoch=2)

    assert [f.consumer for f in report.fenced] == [a.id]
    assert report.fenced[0].duplicate_range == (1, 1)
    with pytest.raises(nats.errors.Error):
        await held.ack_sync(timeout=1)
    # The pull finds no consumer to answer it (not a timeout: "later" is waiting
    # on the stream, so a pull that still counted would have got it).
    with pytest.raises((nats.js.errors.ServiceUnavailableError, nats.js.errors.NotFoundError)):
        await zombie.fetch(1, timeout=0.5)
    gainer = await js.pull_subscribe_bind(durable=report.created_names[0], stream=stream_name)
    got = await gainer.fetch(2, timeout=2)
    assert [m.data for m in got] == [b"held", b"later"]  # the zombie's ack did not count
    assert [m.metadata.sequence.stream for m in got] == [1, 2]


@LAYOUTS
async def test_crash_moves_orphan_shards_with_nothing_lost(
    js: JetStreamContext, stream_name: str, fleet: Fleet, layout: Layout
) -> None:
    engine = Engine(js, config(stream_name, layout=layout))
    await engine.ensure_stream()
    ledger = Ledger()
    live = {m.id: m for m in (member("a"), member("b"), member("c"))}
    workers = {
        n: fleet.add(SimWorker(js, stream=stream_name, consumer=n, ledger=ledger).start())
        for n in live
    }
    await converge(engine, live, epoch=1)
    publisher = fleet.add(Publisher(js, prefix=PREFIX, shards=SHARDS, ledger=ledger).start())
    await wait_for(lambda: len(ledger.processed) > 300, what="traffic")

    victim = member("b").id
    await workers.pop(victim).crash()
    del live[victim]
    report = await converge(engine, live, epoch=2)

    await wait_for(lambda: len(ledger.processed) > 600, what="traffic after the handoff")
    await publisher.stop()
    await wait_for(lambda: not ledger.missing(), what="every message processed")
    for w in workers.values():
        await w.stop()
    assert [f.consumer for f in report.fenced] == [victim]
    assert set(report.moved_shards) == set(report.fenced[0].shards)
    assert_safe(ledger, sum(f.in_flight for f in report.fenced))
    assert ledger.by_consumer()[victim] <= set(report.fenced[0].shards)


async def run_scenario(
    js: JetStreamContext,
    engine: Engine,
    fleet: Fleet,
    *,
    seed: int,
    rounds: int,
    during_handoff: Callable[[int], Awaitable[None]] | None = None,
) -> Ledger:
    """Members crash, join and restart at random under continuous publishing."""
    rng = random.Random(seed)
    stream = engine.config.stream
    ledger = Ledger()
    names = iter(f"m{i}" for i in range(1000))
    generation = 0
    live: dict[str, MemberInfo] = {}
    workers: dict[str, SimWorker] = {}

    def join(name: str) -> None:
        nonlocal generation
        generation += 1
        info = member(name, generation)
        live[info.id] = info
        workers[info.id] = fleet.add(
            SimWorker(js, stream=stream, consumer=info.id, ledger=ledger).start()
        )

    async def crash(consumer: str) -> str:
        await workers.pop(consumer).crash()
        return live.pop(consumer).name

    for _ in range(3):
        join(next(names))
    await converge(engine, live, epoch=0)
    publisher = fleet.add(
        Publisher(js, prefix=PREFIX, shards=engine.config.shards, ledger=ledger).start()
    )
    in_flight_bound = 0
    for epoch in range(1, rounds + 1):
        seen = len(ledger.processed)
        await wait_for(lambda: len(ledger.processed) > seen + 100, what="traffic")  # noqa: B023
        action = rng.choice(["crash", "join", "restart"])
        if action == "crash" and len(live) > 1:
            await crash(rng.choice(sorted(live)))
        elif action == "restart":
            join(await crash(rng.choice(sorted(live))))
        elif len(live) < 6:
            join(next(names))
        if during_handoff is not None:
            await during_handoff(epoch)
        report = await converge(engine, live, epoch=epoch)
        in_flight_bound += sum(f.in_flight for f in report.fenced)
        in_flight_bound += sum(u.num_ack_pending for u in report.undrained)
        observed = await engine.observe()
        assert set(observed.assignment) <= set(live)
        owned = [s for shards in observed.assignment.values() for s in shards]
        assert sorted(owned) == list(range(engine.config.shards))
    await publisher.stop()
    await wait_for(lambda: not ledger.missing(), what="every message processed")
    for w in workers.values():
        await w.stop()
    assert_safe(ledger, in_flight_bound)
    assert ledger.duplicates() <= ledger.crashed_unacked + ledger.failed_acks + in_flight_bound
    return ledger


@LAYOUTS
async def test_random_crashes_joins_and_restarts_lose_nothing(
    js: JetStreamContext, stream_name: str, fleet: Fleet, layout: Layout
) -> None:
    engine = Engine(js, config(stream_name, layout=layout))
    await engine.ensure_stream()
    ledger = await run_scenario(js, engine, fleet, seed=7, rounds=12)
    assert len(ledger.published) > 1000


class Crash(Exception):
    """Stands for the engine's process dying between two protocol steps."""


@LAYOUTS
async def test_reconcile_resumes_after_a_crash_between_any_two_steps(
    js: JetStreamContext, stream_name: str, fleet: Fleet, layout: Layout
) -> None:
    """Kill the engine after step k, for every k; a fresh engine then converges safely."""
    crashed_at: list[str] = []
    k = 0
    while True:
        stream = f"{stream_name}k{k}"
        setup = Engine(js, config(stream, shards=12, layout=layout))
        await setup.ensure_stream()
        ledger = Ledger()
        live = {m.id: m for m in (member("a"), member("b"), member("c"))}
        workers = {
            n: fleet.add(SimWorker(js, stream=stream, consumer=n, ledger=ledger).start())
            for n in live
        }
        a, b, c, d = (member(x) for x in "abcd")
        start = {a.id: (0, 1, 2, 3), b.id: (4, 5, 6, 7), c.id: (8, 9, 10, 11)}
        await setup.apply(start, members=live, epoch=1)
        publisher = fleet.add(Publisher(js, prefix=PREFIX, shards=12, ledger=ledger).start())
        await wait_for(lambda: len(ledger.processed) > 100, what="traffic")  # noqa: B023
        # c crashes and d joins; a loses 3 to b and gains 8, 9; d gets 10, 11:
        # a fence, a narrow, resets, grows and a create in one reconcile.
        await workers.pop(c.id).crash()
        del live[c.id]
        live[d.id] = d
        workers[d.id] = fleet.add(
            SimWorker(js, stream=stream, consumer=d.id, ledger=ledger).start()
        )
        target = {a.id: (0, 1, 2, 8, 9), b.id: (3, 4, 5, 6, 7), d.id: (10, 11)}
        steps: list[str] = []

        async def die_after(step: str, steps: list[str] = steps, k: int = k) -> None:
            steps.append(step)
            if len(steps) > k:
                raise Crash(step)

        doomed = Engine(js, config(stream, shards=12, layout=layout), checkpoint=die_after)
        try:
            await doomed.apply(target, members=live, epoch=2)
            finished = True
        except Crash as e:
            crashed_at.append(str(e))
            finished = False
            left = await setup.observe()
            owned = [s for shards in left.assignment.values() for s in shards]
            assert len(owned) == len(set(owned)), "a shard on two consumers"

        report = await Engine(js, config(stream, shards=12, layout=layout)).apply(
            target, members=live, epoch=2
        )
        assert (await setup.observe()).assignment == {n: s for n, s in target.items() if s}
        again = await setup.apply(target, members=live, epoch=2)
        assert again.consumer_updates == 0
        await publisher.stop()
        await wait_for(lambda: not ledger.missing(), what="every message processed")  # noqa: B023
        for w in workers.values():
            await w.stop()
        bound = ledger.crashed_unacked + sum(f.in_flight for f in report.fenced)
        assert_safe(ledger, bound)
        await js.delete_stream(stream)
        if finished:
            break
        k += 1
    kinds = {step.split()[0] for step in crashed_at}
    if layout == "shards":
        assert {"fenced", "paused", "narrowed", "reset", "grown", "rewound"} <= kinds, crashed_at
    else:
        assert {"fenced", "paused", "retired", "created"} <= kinds, crashed_at


async def test_unreachable_nats_is_a_transient_error_after_retries(
    nats_server: NatsServer, stream_name: str
) -> None:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=0, allow_reconnect=False)
    engine = Engine(
        js=client.jetstream(timeout=0.5), config=config(stream_name, retry=RetryPolicy(0.3))
    )
    await engine.ensure_stream()
    nats_server.kill()
    with pytest.raises(TransientError):
        await engine.observe()
    await client.close()


async def test_a_worker_holding_deliveries_across_a_reset_gets_them_again_in_order(
    js: JetStreamContext, stream_name: str, fleet: Fleet
) -> None:
    # An ack for a delivery made before a reset gets no answer. A worker that
    # retried it while its consumer exists would wait forever; it must drop
    # what it holds and pull again: the reset redelivers it in stream order.
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    m = member("a")
    await engine.apply({m.id: range(SHARDS)}, members={m.id: m}, epoch=0)
    ledger = Ledger()
    publisher = Publisher(js, prefix=PREFIX, shards=SHARDS, ledger=ledger)
    for _ in range(50):
        await publisher.publish_one()
    first_seq = (await js.stream_info(stream_name)).state.first_seq
    resets: list[int] = []

    async def reset_once(consumer: str, seq: int) -> None:
        if not resets:
            await js.reset_consumer(stream_name, consumer, seq=first_seq)
            resets.append(seq)

    worker = fleet.add(
        SimWorker(
            js, stream=stream_name, consumer=m.id, ledger=ledger, on_processed=reset_once
        ).start()
    )
    await wait_for(lambda: not ledger.missing(), timeout=15)
    await worker.stop()
    assert resets and ledger.failed_acks >= 1
    assert not ledger.out_of_order()
