"""Lane planning (pure): the bounds the blocks layout promises, over random histories."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordshard_client.subjects import blocks_of
from coordshard_operator.rebalancer.errors import ConfigError
from coordshard_operator.rebalancer.lanes import (
    LANE_BLOCKS,
    LanePlan,
    LaneState,
    NewLane,
    lane_bound,
    plan_lanes,
    release_order,
)
from coordshard_operator.rebalancer.planning import blocks_of_assignment, plan
from coordshard_operator.rebalancer.state import GroupConfig

SHARDS = 4096
BLOCKS = blocks_of(SHARDS)


class Group:
    """The lanes in force, changed the way the engine changes them."""

    def __init__(self) -> None:
        self.lanes: dict[str, LaneState] = {}
        self.generation = 0

    def apply(self, p: LanePlan) -> None:
        for name in (*p.fence, *p.retire):
            del self.lanes[name]
        for new in p.create:
            self.generation += 1
            self.lanes[f"{new.member_id}_g{self.generation}"] = LaneState(new.member_id, new.blocks)

    def step(self, live: list[str]) -> LanePlan:
        previous = blocks_of_assignment(self.owned(), blocks=BLOCKS)
        order = release_order(self.lanes)
        balance = plan(shards=BLOCKS, members=live, previous=previous, release_order=order).balance
        p = plan_lanes(self.lanes, balance.assignment, live=live)
        self.apply(p)
        return p

    def owned(self) -> dict[str, tuple[int, ...]]:
        owned: dict[str, set[int]] = {}
        for lane in self.lanes.values():
            owned.setdefault(lane.member_id, set()).update(lane.blocks)
        return {m: tuple(sorted(b)) for m, b in owned.items()}


def check_lanes(group: Group, live: list[str]) -> None:
    blocks = [b for lane in group.lanes.values() for b in lane.blocks]
    assert all(len(lane.blocks) <= LANE_BLOCKS for lane in group.lanes.values())
    assert all(lane.member_id in live for lane in group.lanes.values())
    assert sorted(blocks) == (list(range(BLOCKS)) if live else [])


def check_bounds(group: Group) -> None:
    for m, owned in group.owned().items():
        count = sum(1 for lane in group.lanes.values() if lane.member_id == m)
        assert count <= lane_bound(len(owned)), (m, count, len(owned))


history = st.lists(
    st.tuples(st.sampled_from(["join", "crash"]), st.integers(0, 10**6), st.integers(1, 64)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(start=st.integers(1, 512), events=history)
def test_random_joins_and_crashes_keep_every_lane_within_its_bounds(
    start: int, events: list[tuple[str, int, int]]
) -> None:
    group = Group()
    names = iter(f"m{i}" for i in range(10**6))
    live = [next(names) for _ in range(start)]
    group.step(live)
    for action, pick, count in events:
        if action == "join":
            live += [next(names) for _ in range(min(count, 512 - len(live)))]
        else:
            for _ in range(min(count, len(live) - 1)):
                live.pop(pick % len(live))
        group.step(live)
        check_lanes(group, live)
        quiet = group.step(live)  # nothing else changes: a merge at most
        assert not quiet.fence and all(n.reason == "merge" for n in quiet.create)
        check_lanes(group, live)
        check_bounds(group)
        assert group.step(live).converged


def test_a_crash_grants_on_new_lanes_and_leaves_every_survivor_lane_alone() -> None:
    group = Group()
    live = [f"m{i}" for i in range(64)]
    group.step(live)
    before = dict(group.lanes)
    victim = live.pop(17)
    p = group.step(live)
    assert p.fence == tuple(sorted(n for n, lane in before.items() if lane.member_id == victim))
    assert not p.retire  # survivors' lanes untouched
    assert {n.reason for n in p.create} == {"gain"}
    gained = sorted(b for n in p.create for b in n.blocks)
    assert gained == sorted(b for lane in before.values() if lane.member_id == victim
                            for b in lane.blocks)  # fmt: skip


def test_a_join_retires_only_the_lanes_that_lose_blocks() -> None:
    group = Group()
    live = [f"m{i}" for i in range(3)]
    group.step(live)
    before = dict(group.lanes)
    live.append("m3")
    p = group.step(live)
    assert not p.fence
    moved = {b for n in p.create if n.member_id == "m3" for b in n.blocks}
    assert len(moved) == BLOCKS // 4
    for name in p.retire:
        assert set(before[name].blocks) & moved
    assert len(p.retire) <= 2 * 3  # per loser: its smallest lanes, at most one partly kept
    kept = [n for n in p.create if n.member_id != "m3"]
    assert all(n.reason == "keep" for n in kept)
    untouched = set(before) - set(p.retire)
    assert untouched and all(group.lanes[n] == before[n] for n in untouched)


def test_merge_packs_small_lanes_when_quiet() -> None:
    lanes = {f"a_g{i}": LaneState("a", (i,)) for i in range(5)}
    p = plan_lanes(lanes, {"a": range(5)}, live=["a"])
    assert p.merge and len(p.retire) == 4 - 0 and p.create == (NewLane("a", (0, 1, 2, 3), "merge"),)
    assert 5 - len(p.retire) + len(p.create) == lane_bound(5) == math.ceil(5 / 32) + 1


def test_a_lane_over_the_filter_bound_is_replaced() -> None:
    lanes = {"a_g1": LaneState("a", tuple(range(40)))}
    p = plan_lanes(lanes, {"a": range(40)}, live=["a"])
    assert p.retire == ("a_g1",)
    assert [len(n.blocks) for n in p.create] == [32, 8]


def test_a_shard_count_without_a_block_count_is_refused_for_the_blocks_layout() -> None:
    with pytest.raises(ConfigError, match="no divisor from 256 to 512"):
        GroupConfig(shards=521)
    assert GroupConfig(shards=521, layout="shards").shards == 521
    assert GroupConfig(shards=4096).blocks == 512
