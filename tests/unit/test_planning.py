"""Handoff steps: every revocation before any grant, and a converged system plans nothing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coordshard_operator.rebalancer.planning import HandoffStep, plan, plan_handoff


def apply_steps(
    previous: dict[str, list[int]], steps: tuple[HandoffStep, ...]
) -> dict[str, set[int]]:
    """Run the steps one at a time; fail if a shard ever has two owners."""
    state = {m: set(s) for m, s in previous.items()}
    for step in steps:
        if step.action == "fence":
            state.pop(step.member)
        else:
            state[step.member] = set(step.shards)
        seen: dict[int, str] = {}
        for m, owned in state.items():
            for s in owned:
                assert s not in seen, f"shard {s} on {seen[s]} and {m} after {step}"
                seen[s] = m
    return state


@given(
    shards=st.integers(1, 128),
    before=st.lists(st.sampled_from("abcdefg"), unique=True, max_size=7),
    after=st.lists(st.sampled_from("abcdefg"), unique=True, max_size=7),
)
def test_steps_never_give_a_shard_before_taking_it_away(
    shards: int, before: list[str], after: list[str]
) -> None:
    first = plan(shards=shards, members=before).balance.assignment
    previous = {m: list(s) for m, s in first.items()}
    result = plan(shards=shards, members=after, previous=previous)
    state = apply_steps(previous, result.steps)
    expected = {m: set(s) for m, s in result.balance.assignment.items() if s}
    assert {m: s for m, s in state.items() if s} == expected
    grants = [i for i, st_ in enumerate(result.steps) if st_.action == "grow"]
    revokes = [i for i, st_ in enumerate(result.steps) if st_.action != "grow"]
    assert not grants or not revokes or max(revokes) < min(grants)
    # Converged: planning again from the result plans no step.
    assert plan(shards=shards, members=after, previous=result.balance.assignment).converged


def test_crash_plan_fences_the_dead_member_then_grows_the_gainers() -> None:
    previous = {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    result = plan(shards=6, members=["a", "b"], previous=previous)
    actions = [(st.action, st.member) for st in result.steps]
    assert actions[0] == ("fence", "c")
    assert {a for a, _ in actions[1:]} == {"grow"}
    assert sorted(s for st in result.steps[1:] for s in st.changed) == [4, 5]


def test_dead_member_without_shards_is_still_fenced() -> None:
    steps = plan_handoff({"a": [0, 1], "idle": []}, {"a": (0, 1)})
    assert [(s.action, s.member) for s in steps] == [("fence", "idle")]


def test_join_narrows_the_donors_before_growing_the_newcomer() -> None:
    previous = {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7]}
    result = plan(shards=8, members=["a", "b", "c"], previous=previous)
    kinds = [st.action for st in result.steps]
    assert kinds == sorted(kinds, key=["fence", "narrow", "grow"].index)
    grow = [st for st in result.steps if st.action == "grow"]
    assert [st.member for st in grow] == ["c"]
    assert len(grow[0].shards) == 2


def test_a_live_member_missing_from_the_target_is_narrowed_and_a_dead_one_fenced() -> None:
    steps = plan_handoff({"a": [0, 1], "b": [2], "gone": [3]}, {"b": (2, 3)}, live=["a", "b"])
    assert [(st.action, st.member, st.shards, st.changed) for st in steps] == [
        ("fence", "gone", (), (3,)),
        ("narrow", "a", (), (0, 1)),
        ("grow", "b", (2, 3), (3,)),
    ]
