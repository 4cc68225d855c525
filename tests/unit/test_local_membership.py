"""Local mode's membership rules: the same as the operator's rules for pods."""

from __future__ import annotations

import pytest

from coordshard_operator.local.membership import WorkerState, members, next_change

READY = WorkerState("w1", ready=True, was_ready=True)


@pytest.mark.parametrize(
    ("state", "grace", "now", "member"),
    [
        pytest.param(READY, 0, 10.0, True, id="ready"),
        pytest.param(WorkerState("w1"), 5, 10.0, False, id="never-ready"),
        pytest.param(
            WorkerState("w1", exited_at=9.0, was_ready=True), 0, 10.0, False, id="exited-no-grace"
        ),
        pytest.param(
            WorkerState("w1", exited_at=9.0, was_ready=True),
            5,
            10.0,
            True,
            id="exited-within-grace",
        ),
        pytest.param(
            WorkerState("w1", exited_at=4.0, was_ready=True), 5, 10.0, False, id="exited-past-grace"
        ),
        pytest.param(
            WorkerState("w1", was_ready=True, not_ready_since=8.0),
            5,
            10.0,
            True,
            id="not-ready-within-grace",
        ),
        pytest.param(
            WorkerState("w1", was_ready=True, not_ready_since=1.0),
            5,
            10.0,
            False,
            id="not-ready-past-grace",
        ),
        pytest.param(
            WorkerState("w1", was_ready=True, not_ready_since=9.9),
            0,
            10.0,
            False,
            id="not-ready-no-grace",
        ),
    ],
)
def test_membership_rules(state: WorkerState, grace: float, now: float, member: bool) -> None:
    assert members([state], now=now, grace=grace) == (["w1"] if member else [])


def test_next_change_is_when_the_earliest_grace_runs_out() -> None:
    states = [
        READY,
        WorkerState("w2", exited_at=8.0, was_ready=True),
        WorkerState("w3", was_ready=True, not_ready_since=7.0),
    ]
    assert next_change(states, now=10.0, grace=5) == 12.0
    assert next_change([READY], now=10.0, grace=5) is None


def test_members_within_grace_but_not_ready_are_held() -> None:
    from coordshard_operator.local.membership import held

    states = [
        READY,
        WorkerState("w2", exited_at=8.0, was_ready=True),
        WorkerState("w3", was_ready=True, not_ready_since=7.0),
        WorkerState("w4", was_ready=True, not_ready_since=1.0),
    ]
    assert held(states, now=10.0, grace=5) == ["w2", "w3"]
    assert held(states, now=10.0, grace=0) == []
