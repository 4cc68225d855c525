"""Which worker processes count as members: pure, with ``now`` passed in.

The rules mirror the operator's for pods, so local mode rehearses what a
cluster does: a member is a running, ready process; it is lost when it exits
(at once when the grace period is 0, else once the grace has passed) or when
it stays not ready (a stopped or wedged process) longer than the grace period.
A process that is up but has never been ready is not a member yet.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["WorkerState", "held", "members", "next_change"]


@dataclass(frozen=True, slots=True)
class WorkerState:
    """What the supervisor last saw of one worker incarnation."""

    member_id: str
    """This incarnation's member id (``naming.member_id``): the planner's id for it and
    the stem of the names of the consumers the rebalancer makes for it."""
    exited_at: float | None = None
    """Monotonic time the process exited, None while it runs."""
    ready: bool = False
    """The last readiness probe answered ready."""
    was_ready: bool = False
    """It has been ready at least once (a member until lost)."""
    not_ready_since: float | None = None
    """Monotonic time readiness was first lost, None while ready."""


def is_member(state: WorkerState, *, now: float, grace: float) -> bool:
    """True while ``state`` counts as a member at ``now``."""
    if not state.was_ready:
        return False
    if state.exited_at is not None:
        return grace > 0 and now - state.exited_at < grace
    if state.ready:
        return True
    since = state.not_ready_since if state.not_ready_since is not None else now
    return grace > 0 and now - since < grace


def members(states: Iterable[WorkerState], *, now: float, grace: float) -> list[str]:
    """The member ids among ``states`` at ``now``, sorted."""
    return sorted(s.member_id for s in states if is_member(s, now=now, grace=grace))


def held(states: Iterable[WorkerState], *, now: float, grace: float) -> list[str]:
    """Members that are not ready now (exited or unready, within grace): they keep their
    shards and are given no new ones."""
    return sorted(
        s.member_id
        for s in states
        if is_member(s, now=now, grace=grace) and (s.exited_at is not None or not s.ready)
    )


def next_change(states: Iterable[WorkerState], *, now: float, grace: float) -> float | None:
    """When a member will next drop out by grace alone (to wake up then), or None."""
    times = []
    for s in states:
        if not is_member(s, now=now, grace=grace):
            continue
        start = s.exited_at if s.exited_at is not None else s.not_ready_since
        if start is not None:
            times.append(start + grace)
    return min(times, default=None)
