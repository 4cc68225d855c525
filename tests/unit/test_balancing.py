"""Properties of the shard planner over random histories of joins, crashes, restarts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from coordshard_operator.rebalancer.balancing import InvalidAssignmentError, assign_shards


def owners(assignment: dict[str, tuple[int, ...]]) -> dict[int, str]:
    return {s: m for m, shards in assignment.items() for s in shards}


def check_cover_and_balance(shards: int, members: list[str], result_assignment: dict) -> None:
    if not members:
        assert result_assignment == {}
        return
    assert sorted(result_assignment) == sorted(members)
    flat = [s for owned in result_assignment.values() for s in owned]
    assert sorted(flat) == list(range(shards)), "every shard exactly once"
    loads = [len(owned) for owned in result_assignment.values()]
    assert max(loads) - min(loads) <= 1, f"unbalanced: {loads}"


class PlannerHistory(RuleBasedStateMachine):
    """A cluster whose members join, crash and restart; the planner runs after each event."""

    def __init__(self) -> None:
        super().__init__()
        self.shards = 1
        self.live: list[str] = []
        self.assignment: dict[str, tuple[int, ...]] = {}
        self.incarnation = 0

    @initialize(shards=st.integers(1, 64), start=st.integers(0, 6))
    def start(self, shards: int, start: int) -> None:
        self.shards = shards
        for _ in range(start):
            self.live.append(self._new_name())
        self._replan()

    def _new_name(self, base: str | None = None) -> str:
        self.incarnation += 1
        return f"{base or 'pod'}-{self.incarnation}"

    def _replan(self) -> tuple:
        result = assign_shards(shards=self.shards, members=self.live, previous=self.assignment)
        # Determinism: any input order gives the same answer.
        shuffled_members = list(self.live)
        random.Random(len(self.live)).shuffle(shuffled_members)
        shuffled_prev = dict(reversed(list(self.assignment.items())))
        again = assign_shards(shards=self.shards, members=shuffled_members, previous=shuffled_prev)
        assert again == result
        before = self.assignment
        self.assignment = dict(result.assignment)
        # Idempotence: planning from the result moves nothing.
        settled = assign_shards(shards=self.shards, members=self.live, previous=self.assignment)
        assert settled.moves == ()
        assert settled.assignment == result.assignment
        return before, result

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        if not self.live:
            return
        victim = data.draw(st.sampled_from(self.live))
        self.live.remove(victim)
        lost = set(self.assignment.get(victim, ()))
        _, result = self._replan()
        moved = {mv.shard for mv in result.moves}
        assert moved == (lost if self.live else set()), "exactly the lost member's shards move"
        assert all(mv.source == victim and mv.reason == "member-lost" for mv in result.moves)
        if not self.live:
            assert result.unassigned == tuple(range(self.shards))

    @rule()
    def join(self) -> None:
        newcomer = self._new_name()
        n = len(self.live)
        old_load = {m: len(s) for m, s in self.assignment.items()}
        self.live.append(newcomer)
        _, result = self._replan()
        gained = result.assignment[newcomer]
        if n == 0:
            assert len(gained) == self.shards
            return
        assert len(gained) in (self.shards // (n + 1), -(-self.shards // (n + 1)))
        # Everything that moved went to the newcomer...
        assert all(mv.target == newcomer for mv in result.moves)
        assert {mv.shard for mv in result.moves} == set(gained)
        # ...and came from the most loaded members.
        losers = {mv.source for mv in result.moves}
        keepers = set(old_load) - losers
        if losers and keepers:
            assert min(old_load[m] for m in losers) >= max(old_load[m] for m in keepers)

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        """A pod comes back as a new incarnation: a crash then a join."""
        if not self.live:
            return
        victim = data.draw(st.sampled_from(self.live))
        self.live.remove(victim)
        self._replan()
        self.live.append(self._new_name(victim.rsplit("-", 1)[0]))
        self._replan()

    @invariant()
    def covered_and_balanced(self) -> None:
        check_cover_and_balance(self.shards, self.live, self.assignment)


TestPlannerHistory = PlannerHistory.TestCase
TestPlannerHistory.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)


@given(
    shards=st.integers(1, 300),
    members=st.lists(st.text("abcdefgh", min_size=1, max_size=4), unique=True, max_size=12),
    data=st.data(),
)
def test_any_previous_assignment_ends_covered_balanced_and_idempotent(
    shards: int, members: list[str], data: st.DataObject
) -> None:
    # An arbitrary previous state: each shard with a random owner, live or gone, or none.
    candidates = [*members, "gone-1", "gone-2", None]
    previous: dict[str, list[int]] = {}
    for s in range(shards):
        owner = data.draw(st.sampled_from(candidates))
        if owner is not None:
            previous.setdefault(owner, []).append(s)
    result = assign_shards(shards=shards, members=members, previous=previous)
    check_cover_and_balance(shards, members, result.assignment)
    again = assign_shards(shards=shards, members=members, previous=result.assignment)
    assert again.moves == ()
    # A live member never loses a shard unless it held more than its fair ceiling.
    ceiling = -(-shards // len(members)) if members else 0
    for mv in result.moves:
        if mv.source in members:
            assert len(previous[mv.source]) >= ceiling


def test_no_members_leaves_every_shard_unassigned_without_error() -> None:
    result = assign_shards(shards=8, members=[], previous={"a": [0, 1]})
    assert result.assignment == {}
    assert result.unassigned == tuple(range(8))
    assert result.moves == ()


def test_crashed_pod_shards_move_to_least_loaded_survivors() -> None:
    previous = {"a": [0, 1, 2], "b": [3, 4, 5], "c": [6, 7], "d": [8, 9]}
    result = assign_shards(shards=10, members=["a", "b", "c"], previous=previous)
    assert {mv.shard for mv in result.moves} == {8, 9}
    # a and b already hold 3 (the ceiling of 10/3 is 4, and only one may hold 4).
    loads = {m: len(s) for m, s in result.assignment.items()}
    assert sorted(loads.values()) == [3, 3, 4]
    assert loads["c"] >= 3


def test_pins_override_balance_and_move_with_reason() -> None:
    previous = {"a": [0, 1], "b": [2, 3]}
    result = assign_shards(shards=4, members=["a", "b"], previous=previous, pins={0: "b"})
    assert 0 in result.assignment["b"]
    pinned = [mv for mv in result.moves if mv.shard == 0]
    assert pinned[0].reason == "pinned" and pinned[0].source == "a"
    assert sorted(len(s) for s in result.assignment.values()) == [2, 2]


def test_pins_that_force_imbalance_are_honoured() -> None:
    result = assign_shards(shards=6, members=["a", "b", "c"], pins={0: "a", 1: "a", 2: "a", 3: "a"})
    assert set(result.assignment["a"]) == {0, 1, 2, 3}
    assert sorted(len(result.assignment[m]) for m in "bc") == [1, 1]


def test_pin_to_a_member_that_is_not_live_is_ignored_and_reported() -> None:
    result = assign_shards(shards=4, members=["a"], pins={2: "zz"})
    assert result.assignment == {"a": (0, 1, 2, 3)}
    assert result.ignored_pins == (2,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"shards": 0, "members": ["a"]}, "shard count", id="no-shards"),
        pytest.param({"shards": 4, "members": ["a", "a"]}, "listed twice", id="duplicate-member"),
        pytest.param(
            {"shards": 4, "members": ["a"], "previous": {"a": [4]}},
            "outside",
            id="shard-out-of-range",
        ),
        pytest.param(
            {"shards": 4, "members": ["a"], "previous": {"a": [1], "b": [1]}},
            "both",
            id="shard-twice",
        ),
        pytest.param({"shards": 4, "members": ["a"], "pins": {9: "a"}}, "pin", id="bad-pin"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidAssignmentError, match=message):
        assign_shards(**kwargs)


@given(
    shards=st.integers(1, 200),
    members=st.lists(st.sampled_from("abcdefgh"), unique=True, min_size=1, max_size=8),
    data=st.data(),
)
def test_held_members_keep_exactly_what_they_own_and_take_nothing(
    shards: int, members: list[str], data: st.DataObject
) -> None:
    # Start balanced over everyone plus two members that then vanish.
    previous = assign_shards(shards=shards, members=[*members, "gone-1", "gone-2"]).assignment
    held = data.draw(st.lists(st.sampled_from(members), unique=True))
    free = [m for m in members if m not in held]
    result = assign_shards(shards=shards, members=members, previous=previous, hold=held)
    for m in held:
        assert result.assignment[m] == previous[m]
    assert all(mv.target not in held for mv in result.moves)
    owned = sorted(s for owned in result.assignment.values() for s in owned)
    if free:
        assert owned == list(range(shards)) and result.unassigned == ()
        loads = [len(result.assignment[m]) for m in free]
        assert max(loads) - min(loads) <= 1
    else:
        # Nobody can take the vanished members' shards: they wait, reported.
        lost = sorted(s for m in ("gone-1", "gone-2") for s in previous[m])
        assert list(result.unassigned) == lost
        assert sorted([*owned, *result.unassigned]) == list(range(shards))
    # Once nobody is held any more, it rebalances like any plan (and is idempotent).
    after = assign_shards(shards=shards, members=members, previous=result.assignment)
    check_cover_and_balance(shards, members, after.assignment)


def test_a_held_member_is_not_given_a_dead_members_shards() -> None:
    previous = {"a": [0, 1, 2], "b": [3, 4, 5], "c": [6, 7, 8]}
    result = assign_shards(shards=9, members=["a", "b"], previous=previous, hold=["b"])
    assert result.assignment == {"a": (0, 1, 2, 6, 7, 8), "b": (3, 4, 5)}
