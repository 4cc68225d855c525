"""Lanes: which of a member's consumers to retire and which to create, for blocks.

Pure, like ``planning``. On a stream that stores commands under blocks
(``coordshard_client.subjects.block_transform``) a member owns whole blocks,
on one or more consumers ("lanes") of at most ``LANE_BLOCKS`` filters each,
``<prefix>.b.<block>.>``. A lane is never edited, only replaced, because
growing a live consumer's filter strands the messages already stored on the
new subjects (docs/handoff.md) and every filter update is checked against
every other consumer's on a work queue. So ``plan_lanes`` answers, for the
lanes in force and the blocks each member should own:

1. ``fence``  — every lane of a member that is not live: deleted first, all
   at once (the zombie fence);
2. ``retire`` — a live member's lane that holds a block the member loses (or
   more filters than a lane may have): paused, drained, deleted; its kept
   blocks come back on a new lane. Only that lane pauses; the member's other
   lanes keep serving;
3. ``create`` — new lanes (deliver all: a new consumer starts at the first
   message its filters match, so it needs no reset) for each member's blocks
   that no remaining lane holds: the gained ones and those kept from a retired
   lane, ``LANE_BLOCKS`` at a time.

Every deletion lands before any creation, which is the work queue's
no-overlap rule. When nothing of that is needed (a *quiet* pass), members with
more than ``lane_bound`` lanes get their smallest lanes merged: retired and
re-created packed, so that afterwards every member has at most
``ceil(blocks / LANE_BLOCKS) + 1`` lanes. A converged group plans nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "LANE_BLOCKS",
    "LanePlan",
    "LaneState",
    "NewLane",
    "NewLaneReason",
    "chunked",
    "lane_bound",
    "plan_lanes",
    "release_order",
]

LANE_BLOCKS = 32
"""The most block filters one lane has (F). One consumer update costs ~4 ms at 32
filters and grows faster than linearly past it (docs/handoff.md, "Layouts measured")."""

NewLaneReason = Literal["gain", "keep", "merge"]


@dataclass(frozen=True, slots=True)
class LaneState:
    """One lane in force: its owner's member id and the blocks it filters."""

    member_id: str
    blocks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NewLane:
    """A lane to create for ``member_id`` over ``blocks`` (ascending, at most F)."""

    member_id: str
    blocks: tuple[int, ...]
    reason: NewLaneReason
    """``gain``: it holds a block the member did not own; ``keep``: only blocks kept
    from a retired lane; ``merge``: a quiet pass packing small lanes."""


@dataclass(frozen=True, slots=True)
class LanePlan:
    """The lane changes of one hand-off, in the order the engine applies them."""

    fence: tuple[str, ...] = ()
    """Lanes of members that are not live (deleted first)."""
    retire: tuple[str, ...] = ()
    """Live lanes to pause, drain and delete."""
    create: tuple[NewLane, ...] = ()
    """Lanes to create once every fence and retirement has landed."""
    merge: bool = False
    """Whether this is a quiet pass's merge (nothing else changes)."""

    @property
    def converged(self) -> bool:
        return not (self.fence or self.retire or self.create)


def lane_bound(blocks: int, *, per_lane: int = LANE_BLOCKS) -> int:
    """The most lanes a member owning ``blocks`` blocks has after a quiet pass."""
    return math.ceil(blocks / per_lane) + 1


def chunked(blocks: Iterable[int], *, per_lane: int = LANE_BLOCKS) -> list[tuple[int, ...]]:
    """``blocks`` ascending, ``per_lane`` at a time."""
    ordered = sorted(blocks)
    return [tuple(ordered[i : i + per_lane]) for i in range(0, len(ordered), per_lane)]


def release_order(lanes: Mapping[str, LaneState]) -> dict[str, list[int]]:
    """Member id → its blocks in the order it should give them up: smallest lanes first
    (ties by name), so a member that must release k blocks empties whole lanes, and
    at most one lane is left partly kept (the only one re-created)."""
    by_member: dict[str, list[tuple[int, str]]] = {}
    for name, lane in lanes.items():
        by_member.setdefault(lane.member_id, []).append((len(lane.blocks), name))
    return {
        m: [b for _, name in sorted(owned) for b in sorted(lanes[name].blocks)]
        for m, owned in by_member.items()
    }


def plan_lanes(
    lanes: Mapping[str, LaneState],
    desired: Mapping[str, Iterable[int]],
    *,
    live: Iterable[str],
    per_lane: int = LANE_BLOCKS,
) -> LanePlan:
    """The lane changes from ``lanes`` (name → state) to ``desired`` (member id → blocks).

    ``live``: the members alive now; a lane whose member is not among them is
    fenced. A live member missing from ``desired`` owns nothing. Lanes are
    visited in name order, so the same inputs give the same plan.
    """
    alive = set(live)
    want = {m: frozenset(desired.get(m, ())) for m in alive}
    fence = tuple(sorted(n for n, lane in lanes.items() if lane.member_id not in alive))
    retire: list[str] = []
    kept: dict[str, set[int]] = {m: set() for m in alive}
    held: dict[str, set[int]] = {m: set() for m in alive}
    for name in sorted(lanes):
        lane = lanes[name]
        if lane.member_id not in alive:
            continue
        blocks = set(lane.blocks)
        if blocks <= want[lane.member_id] and len(blocks) <= per_lane:
            held[lane.member_id] |= blocks
        else:
            retire.append(name)
            kept[lane.member_id] |= blocks & want[lane.member_id]
    create: list[NewLane] = []
    for m in sorted(alive):
        missing = want[m] - held[m]
        if not missing:
            continue
        reason: NewLaneReason = "keep" if missing <= kept[m] else "gain"
        create += [NewLane(m, run, reason) for run in chunked(missing, per_lane=per_lane)]
    if fence or retire or create:
        return LanePlan(fence, tuple(retire), tuple(create))
    return _merge(lanes, per_lane=per_lane)


def _merge(lanes: Mapping[str, LaneState], *, per_lane: int) -> LanePlan:
    """Pack the smallest lanes of every member above its bound (a quiet pass).

    For each such member, the fewest smallest lanes whose union, re-chunked,
    brings it within ``lane_bound``: all of its lanes always do (they give
    exactly ``ceil(blocks / per_lane)``), so this always ends within the bound.
    """
    by_member: dict[str, list[tuple[int, str]]] = {}
    for name, lane in lanes.items():
        by_member.setdefault(lane.member_id, []).append((len(lane.blocks), name))
    retire: list[str] = []
    create: list[NewLane] = []
    for m in sorted(by_member):
        owned = sorted(by_member[m])
        total = sum(size for size, _ in owned)
        bound = lane_bound(total, per_lane=per_lane)
        if len(owned) <= bound:
            continue
        for k in range(2, len(owned) + 1):
            picked = owned[:k]
            size = sum(s for s, _ in picked)
            if len(owned) - k + math.ceil(size / per_lane) <= bound:
                break
        names = [name for _, name in picked]
        retire += names
        union = {b for name in names for b in lanes[name].blocks}
        create += [NewLane(m, run, "merge") for run in chunked(union, per_lane=per_lane)]
    if not retire:
        return LanePlan()
    return LanePlan((), tuple(sorted(retire)), tuple(create), merge=True)
