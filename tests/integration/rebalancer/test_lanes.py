"""The blocks layout at N=4096 against a real nats-server: crash, join, zombie, resume.

Members own whole blocks (K = 512 at N = 4096) on lanes of at most 32 filters;
a crash fences the dead member's lanes and grants its blocks on new lanes, so
the survivors' lanes are never touched; a join retires only the lanes holding
the moved blocks. Workers are ``SimWorker``s serving every lane of their member.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping

import nats.errors
import nats.js.errors
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from coordshard_client.subjects import block_transform, blocks_of, parse_subject, shard_of
from coordshard_operator.benchmarks.workload import Ledger, Publisher, SimWorker
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo, Report
from coordshard_operator.rebalancer.jetstream import MAX_CONSUMERS
from coordshard_operator.rebalancer.lanes import LANE_BLOCKS, lane_bound
from coordshard_operator.rebalancer.passes import run_pass

from .conftest import Fleet

pytestmark = pytest.mark.integration

PREFIX = "l.cmd"
SHARDS = 4096
BLOCKS = blocks_of(SHARDS)


def config(stream: str, **overrides: object) -> GroupConfig:
    base: dict[str, object] = {
        "stream": stream,
        "subject_prefix": PREFIX,
        "group": "g",
        "shards": SHARDS,
        "drain_timeout_s": 1.0,
    }
    base.update(overrides)
    return GroupConfig(**base)  # type: ignore[arg-type]


def member(name: str, incarnation: int = 1) -> MemberInfo:
    return MemberInfo.of(group="g", member=name, incarnation=str(incarnation))


async def wait_for(condition: Callable[[], bool], *, timeout: float = 20.0, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # polling the ledger, with a deadline


class Group:
    """Live members, their workers and the engine, driven as a membership source does."""

    def __init__(self, js: JetStreamContext, engine: Engine, fleet: Fleet) -> None:
        self.js, self.engine, self.fleet = js, engine, fleet
        self.ledger = Ledger()
        self.live: dict[str, MemberInfo] = {}
        self.workers: dict[str, SimWorker] = {}
        self.epoch = 0
        self.paused: list[str] = []
        real = engine.api.pause_consumer

        async def pause(stream: str, name: str, *, for_s: float) -> None:
            self.paused.append(name)
            await real(stream, name, for_s=for_s)

        engine.api.pause_consumer = pause  # type: ignore[method-assign]

    def join(self, info: MemberInfo) -> None:
        self.live[info.id] = info
        stream = self.engine.config.stream
        worker = SimWorker(self.js, stream=stream, consumer=info.id, ledger=self.ledger,
                           fetch_timeout_s=0.5)  # fmt: skip
        self.workers[info.id] = self.fleet.add(worker.start())

    async def crash(self, member_id: str) -> None:
        await self.workers.pop(member_id).crash()
        del self.live[member_id]

    async def converge(self) -> Report | None:
        self.epoch += 1
        done = await run_pass(self.engine, shards=SHARDS, members=self.live, epoch=self.epoch)
        return done.report

    async def lanes(self) -> dict[str, tuple[int, ...]]:
        """Lane name → blocks, as NATS holds them."""
        observed = await self.engine.observe()
        return {n: c.blocks for n, c in observed.consumers.items()}

    async def finish(self, publisher: Publisher) -> None:
        await publisher.stop()
        await wait_for(lambda: not self.ledger.missing(), what="every message processed")


def check_layout(lanes: Mapping[str, tuple[int, ...]], owners: Mapping[str, str]) -> None:
    """Every block in exactly one lane, every lane within F, lanes per member bounded."""
    assert sorted(b for blocks in lanes.values() for b in blocks) == list(range(BLOCKS))
    assert all(len(blocks) <= LANE_BLOCKS for blocks in lanes.values())
    per: dict[str, list[int]] = {}
    for name, blocks in lanes.items():
        per.setdefault(owners[name], []).extend(blocks)
    for m, blocks in per.items():
        count = sum(1 for n in lanes if owners[n] == m)
        assert count <= lane_bound(len(blocks)), (m, count, len(blocks))


def owners_of(lanes: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    return {n: n.rsplit("_g", 1)[0] for n in lanes}


async def test_a_new_stream_stores_under_blocks_with_room_for_every_lane(
    js: JetStreamContext, stream_name: str
) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    info = await js.stream_info(stream_name)
    src, dest = block_transform(BLOCKS, prefix=PREFIX)
    assert info.config.subject_transform is not None
    assert (info.config.subject_transform.src, info.config.subject_transform.dest) == (src, dest)
    assert info.config.max_consumers == MAX_CONSUMERS
    assert engine.blocks == BLOCKS
    await js.publish(f"{PREFIX}.{shard_of('sys-x', SHARDS)}.sys-x.op", b"x")
    stored = await js.get_msg(stream_name, seq=1)
    assert stored.subject is not None
    parsed = parse_subject(stored.subject, prefix=PREFIX)
    assert parsed.block == parsed.shard % BLOCKS


@pytest.mark.parametrize("members", [3, 64])
async def test_a_crash_hands_off_on_new_lanes_and_leaves_the_survivors_alone(
    js: JetStreamContext, stream_name: str, fleet: Fleet, members: int
) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    group = Group(js, engine, fleet)
    for i in range(members):
        group.join(member(f"m{i}"))
    await group.converge()
    before = await group.lanes()
    check_layout(before, owners_of(before))
    publisher = fleet.add(Publisher(js, prefix=PREFIX, shards=SHARDS, ledger=group.ledger,
                                    keys=4000, burst=50).start())  # fmt: skip
    await wait_for(lambda: len(group.ledger.processed) > 300, what="traffic")

    victim = member(f"m{members // 2}").id
    await group.crash(victim)
    report = await group.converge()

    assert report is not None
    dead = {n for n in before if n.startswith(victim + "_g")}
    assert {f.name for f in report.fenced} == dead
    assert report.retired == () and group.paused == []  # no survivor lane paused
    after = await group.lanes()
    survivors = {n: b for n, b in before.items() if n not in dead}
    assert {n: after[n] for n in survivors} == survivors  # same names, same blocks
    new = set(after) - set(before)
    assert new == set(report.created_names)
    assert sorted(b for n in new for b in after[n]) == sorted(b for n in dead for b in before[n])
    check_layout(after, owners_of(after))
    # A request per dead lane and per new lane: not per shard, not per member.
    assert report.consumer_updates == len(dead) + len(new)
    seen = len(group.ledger.processed)
    await wait_for(lambda: len(group.ledger.processed) > seen + 300, what="traffic after")
    await group.finish(publisher)
    ledger = group.ledger
    assert not ledger.out_of_order()
    assert ledger.duplicates() <= ledger.crashed_unacked + sum(f.in_flight for f in report.fenced)


async def test_a_join_moves_blocks_retiring_only_the_lanes_that_held_them(
    js: JetStreamContext, stream_name: str, fleet: Fleet
) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    group = Group(js, engine, fleet)
    for i in range(64):
        group.join(member(f"m{i}"))
    await group.converge()
    before = await group.lanes()
    publisher = fleet.add(Publisher(js, prefix=PREFIX, shards=SHARDS, ledger=group.ledger,
                                    keys=4000, burst=50).start())  # fmt: skip
    await wait_for(lambda: len(group.ledger.processed) > 300, what="traffic")

    joiner = member("new")
    group.join(joiner)
    report = await group.converge()

    assert report is not None and not report.fenced
    after = await group.lanes()
    moved = {b for n, blocks in after.items() if n.startswith(joiner.id) for b in blocks}
    assert len(moved) == BLOCKS // 65
    assert set(group.paused) == set(report.retired)
    assert all(set(before[n]) & moved for n in report.retired)  # only the lanes that held them
    untouched = set(before) - set(report.retired)
    assert len(untouched) >= len(before) - len(moved)
    assert {n: after[n] for n in untouched} == {n: before[n] for n in untouched}
    check_layout(after, owners_of(after))
    assert await group.converge() is None or not (await group.lanes()).keys() - after.keys()
    await group.finish(publisher)
    assert not group.ledger.out_of_order()
    bound = sum(u.num_ack_pending for u in report.undrained)
    assert group.ledger.duplicates() <= group.ledger.crashed_unacked + bound


async def test_a_fenced_zombie_can_neither_fetch_nor_ack_on_any_lane(
    js: JetStreamContext, stream_name: str
) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    a, b = member("a"), member("b")
    await run_pass(engine, shards=SHARDS, members={a.id: a}, epoch=1)
    lanes = await Group(js, engine, Fleet()).lanes()
    assert len(lanes) == BLOCKS // LANE_BLOCKS
    await js.publish(f"{PREFIX}.7.sys.op", b"held")  # any shard: a owns all of them
    zombies = [await js.pull_subscribe_bind(durable=n, stream=stream_name) for n in lanes]
    held = [m for got in await asyncio.gather(*(fetch(z, 0.5) for z in zombies)) for m in got]
    assert len(held) == 1

    done = await run_pass(engine, shards=SHARDS, members={b.id: b}, epoch=2)

    assert done.report is not None
    assert {f.name for f in done.report.fenced} == set(lanes)
    with pytest.raises(nats.errors.Error):
        await held[0].ack_sync(timeout=1)
    refused = await asyncio.gather(*(z.fetch(1, timeout=0.5) for z in zombies),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, nats.js.errors.ServiceUnavailableError | nats.js.errors.NotFoundError)
               for r in refused), refused  # fmt: skip
    new = await Group(js, engine, Fleet()).lanes()
    subs = [await js.pull_subscribe_bind(durable=n, stream=stream_name) for n in new]
    got = [m for msgs in await asyncio.gather(*(fetch(s, 1.0) for s in subs)) for m in msgs]
    assert [m.data for m in got] == [b"held"]  # the zombie's ack did not count


async def fetch(sub: JetStreamContext.PullSubscription, timeout: float) -> list[Msg]:
    """One pull of at most one message; [] when none came."""
    try:
        return await sub.fetch(1, timeout=timeout)
    except nats.errors.TimeoutError:
        return []


async def test_the_first_sweep_leaves_commands_stored_under_blocks_alone(
    js: JetStreamContext, stream_name: str
) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    for i in range(20):
        key = f"sys-{i}"
        await js.publish(f"{PREFIX}.{shard_of(key, SHARDS)}.{key}.op", b"x")
    a = member("a")
    done = await run_pass(engine, shards=SHARDS, members={a.id: a}, epoch=1)
    assert done.swept is not None and done.swept.messages == 0
    assert (await js.stream_info(stream_name)).state.messages == 20


async def test_an_existing_stream_without_the_transform_keeps_the_shards_layout(
    js: JetStreamContext, stream_name: str
) -> None:
    old = Engine(js, config(stream_name, shards=64, layout="shards"))
    await old.ensure_stream()
    key = "sys-1"
    await js.publish(f"{PREFIX}.{shard_of(key, 64)}.{key}.op", b"kept")
    engine = Engine(js, config(stream_name, shards=64))  # asks for blocks
    await engine.ensure_stream()
    info = await js.stream_info(stream_name)
    assert info.config.subject_transform is None  # never added to a stream with messages
    assert engine.layout == "shards" and engine.blocks is None
    a = member("a")
    await run_pass(engine, shards=64, members={a.id: a}, epoch=1)
    [lane] = await js.consumers_info(stream_name)
    assert len(lane.config.filter_subjects or []) == 64  # one consumer, a filter per shard
    sub = await js.pull_subscribe_bind(durable=lane.name, stream=stream_name)
    assert [m.data for m in await fetch(sub, 2.0)] == [b"kept"]


class Crash(Exception):
    """Stands for the engine's process dying between two protocol steps."""


async def test_a_pass_that_died_after_any_step_is_finished_by_the_next(
    js: JetStreamContext, stream_name: str, fleet: Fleet
) -> None:
    """c crashes while d and e join: a fence, pauses, retirements and creates in one pass."""
    crashed_at: list[str] = []
    k = 0
    while True:
        stream = f"{stream_name}k{k}"
        setup = Engine(js, config(stream))
        await setup.ensure_stream()
        group = Group(js, setup, fleet)
        a, b, c, d, e = (member(x) for x in "abcde")
        for m in (a, b, c):
            group.join(m)
        await group.converge()
        publisher = fleet.add(Publisher(js, prefix=PREFIX, shards=SHARDS, ledger=group.ledger,
                                        keys=2000).start())  # fmt: skip
        await wait_for(lambda: len(group.ledger.processed) > 100, what="traffic")  # noqa: B023
        await group.crash(c.id)
        group.join(d)
        group.join(e)
        steps: list[str] = []

        async def die_after(step: str, steps: list[str] = steps, k: int = k) -> None:
            steps.append(step)
            if len(steps) > k:
                raise Crash(step)

        doomed = Engine(js, config(stream), checkpoint=die_after)
        try:
            await run_pass(doomed, shards=SHARDS, members=group.live, epoch=2)
            finished = True
        except Crash as crash:
            crashed_at.append(str(crash))
            finished = False
            left = await group.lanes()
            blocks = [b for bs in left.values() for b in bs]
            assert len(blocks) == len(set(blocks)), "a block on two lanes"

        fresh = Engine(js, config(stream))
        await run_pass(fresh, shards=SHARDS, members=group.live, epoch=3)
        await run_pass(fresh, shards=SHARDS, members=group.live, epoch=4)  # a merge at most
        lanes = await group.lanes()
        check_layout(lanes, owners_of(lanes))
        assert not any(c.paused for c in (await fresh.observe()).consumers.values())
        again = await run_pass(fresh, shards=SHARDS, members=group.live, epoch=5)
        assert again.report is None
        await group.finish(publisher)
        for w in group.workers.values():
            await w.stop()
        assert not group.ledger.out_of_order()
        await js.delete_stream(stream)
        if finished:
            break
        k += 1
    assert {"fenced", "paused", "retired", "created"} <= set(crashed_at), crashed_at


async def test_a_quiet_pass_merges_the_lanes_that_crashes_left(
    js: JetStreamContext, stream_name: str
) -> None:
    engine = Engine(js, config(stream_name))
    await engine.ensure_stream()
    live = {m.id: m for m in (member(f"m{i}") for i in range(16))}
    await run_pass(engine, shards=SHARDS, members=live, epoch=1)
    merged: Report | None = None
    epoch = 1
    for victim in sorted(live)[:6]:  # each crash adds a lane to some survivors
        del live[victim]
        epoch += 1
        await run_pass(engine, shards=SHARDS, members=live, epoch=epoch)
        epoch += 1
        quiet = await run_pass(engine, shards=SHARDS, members=live, epoch=epoch)
        if quiet.report is not None:
            merged = quiet.report
            break
    assert merged is not None, "no quiet pass merged anything"
    assert merged.retired and not merged.fenced and not merged.moved_shards
    lanes = await Group(js, engine, Fleet()).lanes()
    check_layout(lanes, owners_of(lanes))
    assert (await run_pass(engine, shards=SHARDS, members=live, epoch=epoch + 1)).report is None


async def test_lanes_hold_up_to_the_groups_lane_blocks_and_stay_so(
    js: JetStreamContext, stream_name: str
) -> None:
    engine = Engine(js, config(stream_name, lane_blocks=64))
    await engine.ensure_stream()
    members = {m.id: m for m in (member("a"), member("b"), member("c"))}
    await run_pass(engine, shards=SHARDS, members=members, epoch=1)
    lanes = await Group(js, engine, Fleet()).lanes()
    # 512 blocks over 3 members: 171, 171, 170, on lanes of 64, 64 and the rest.
    assert sorted(len(b) for b in lanes.values()) == [42, 43, 43, *[64] * 6]
    assert sorted(Counter(owners_of(lanes).values()).values()) == [3, 3, 3]
    again = await run_pass(engine, shards=SHARDS, members=members, epoch=2)
    assert again.report is None  # converged at this F: nothing retired as too long
    assert await Group(js, engine, Fleet()).lanes() == lanes
    # The spec's lane size changed back to the default: the next pass splits them.
    default = Engine(js, config(stream_name))
    await run_pass(default, shards=SHARDS, members=members, epoch=3)
    split = await Group(js, default, Fleet()).lanes()
    check_layout(split, owners_of(split))
    assert max(len(b) for b in split.values()) == LANE_BLOCKS
