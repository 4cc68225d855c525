"""Assign shards to live members: balanced, with the fewest moves, deterministic.

Pure: no I/O, no clock, no randomness. Every input is sorted or ranked before
use, so the same inputs in any order give the same output.

The rules, in the order they are applied:

1. A live member keeps every shard it already owns (minimal movement).
2. A pin (shard → live member) wins over rule 1; pins naming a member that is
   not live are ignored and reported.
3. Targets: every member should own ``N // n`` or ``N // n + 1`` shards (more
   only where pins force it). The ``+1`` slots go to the members that already
   own the most, so a join or a leave never shuffles the survivors.
4. A member above its target releases its lowest-ranked unpinned shards (or, given
   ``release_order``, its shards in that order: the blocks layout passes each
   member's smallest lanes first, so a join retires as few lanes as it can).
5. Shards with no live owner (the departed members', released ones, never
   assigned ones) go to members below target, in shard order, round-robin over
   those members in rank order.

*Held* members (``hold=``: e.g. pods NotReady but still within their grace
period) keep exactly what they own and take nothing: their shards are pinned
to them and their target is that count. Balance is then among the others; if
every live member is held, ownerless shards stay unassigned until one is not.

A member's *rank* is a stable hash of its name; a shard's rank within a member
is a rendezvous hash of (shard, member). Neither depends on input order.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Assignment",
    "AssignmentLike",
    "Balance",
    "InvalidAssignmentError",
    "Move",
    "MoveReason",
    "assign_shards",
]

Assignment = dict[str, tuple[int, ...]]
"""Member id → its shards, ascending. Plain types on purpose: dict keys are invariant, and
every caller (engine, operator, local mode) passes assignments around."""
AssignmentLike = Mapping[str, Iterable[int]]
"""What callers may pass as a previous assignment."""

MoveReason = Literal["member-lost", "unassigned", "rebalance", "pinned"]


class InvalidAssignmentError(ValueError):
    """The planner's inputs contradict themselves (bad shard count, shard out of range, ...)."""


@dataclass(frozen=True, slots=True)
class Move:
    """One shard changing owner. ``source`` is None when nobody owned it."""

    shard: int
    source: str | None
    target: str
    reason: MoveReason


@dataclass(frozen=True, slots=True)
class Balance:
    """The planner's answer."""

    assignment: Assignment
    """Every live member, with its shards in ascending order (possibly empty)."""
    moves: tuple[Move, ...]
    """Shards whose owner changes, in shard order."""
    unassigned: tuple[int, ...] = ()
    """Shards without a live owner: all of them when no member is live; when every live
    member is held, the ones nobody owned; else none."""
    ignored_pins: tuple[int, ...] = field(default=())
    """Pinned shards whose pinned member is not live."""


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _member_rank(member: str) -> int:
    return _digest(member)


def _shard_rank(shard: int, member: str) -> int:
    return _digest(f"{shard}\x00{member}")


def _validate(
    shards: int, members: list[str], previous: Assignment, pins: Mapping[int, str]
) -> None:
    if shards < 1:
        raise InvalidAssignmentError(f"shard count must be >= 1, got {shards}")
    seen: set[str] = set()
    for m in members:
        if not m:
            raise InvalidAssignmentError("member names must be non-empty")
        if m in seen:
            raise InvalidAssignmentError(f"member {m!r} is listed twice")
        seen.add(m)
    owner: dict[int, str] = {}
    for m, owned in previous.items():
        for s in owned:
            if not 0 <= s < shards:
                raise InvalidAssignmentError(
                    f"previous assignment gives shard {s} to {m!r}, outside 0..{shards - 1}"
                )
            if s in owner:
                raise InvalidAssignmentError(
                    f"previous assignment gives shard {s} to both {owner[s]!r} and {m!r}"
                )
            owner[s] = m
    for s in pins:
        if not 0 <= s < shards:
            raise InvalidAssignmentError(f"pin for shard {s} is outside 0..{shards - 1}")


def _targets(
    shards: int,
    members: list[str],
    load: Mapping[str, int],
    pinned: Mapping[str, int],
    held: frozenset[str] = frozenset(),
) -> dict[str, int]:
    """Water-fill ``shards`` over ``members``: each gets at least its pinned count.

    Held members get exactly their pinned count; the rest is filled over the others.
    """
    fixed = {m: pinned[m] for m in members if m in held}
    members = [m for m in members if m not in held]
    shards -= sum(fixed.values())
    if not members:
        return fixed
    n = len(members)
    level = shards // n
    while level > 0 and sum(max(pinned[m], level) for m in members) > shards:
        level -= 1
    target = {m: max(pinned[m], level) for m in members}
    extra = shards - sum(target.values())
    # The +1 slots go to those who own the most now, so nobody has to give one up.
    candidates = sorted(
        (m for m in members if pinned[m] <= level),
        key=lambda m: (-load[m], _member_rank(m), m),
    )
    for m in candidates[:extra]:
        target[m] += 1
    return {**target, **fixed}


def assign_shards(
    *,
    shards: int,
    members: Iterable[str],
    previous: AssignmentLike | None = None,
    pins: Mapping[int, str] | None = None,
    hold: Iterable[str] = (),
    release_order: Mapping[str, Sequence[int]] | None = None,
) -> Balance:
    """Assign ``shards`` shards (0..N-1) to the live ``members``.

    Args:
        shards: the shard count N (>= 1).
        members: the live members; order does not matter; no duplicates.
        previous: the assignment in force (member → shards); may name members
            that are gone. Empty or None on the first run.
        pins: optional shard → member placements that override balance.
        hold: live members that keep exactly what they own and take nothing.
        release_order: optional member → its shards in the order it should give
            them up when above target (shards not listed go last, by rank).

    Returns:
        The new assignment (every live member, each with sorted shards), the
        moves in shard order, and the shards left unassigned.

    Raises:
        InvalidAssignmentError: N < 1, duplicate members, or a previous
            assignment or pin outside 0..N-1 or giving one shard twice.
    """
    live = sorted(m for m in members)
    prev: dict[str, tuple[int, ...]] = {
        m: tuple(sorted(s for s in owned)) for m, owned in (previous or {}).items()
    }
    pin_map = {s: m for s, m in (pins or {}).items()}
    _validate(shards, live, prev, pin_map)

    old_owner: dict[int, str] = {s: m for m, owned in prev.items() for s in owned}
    live_set = set(live)
    if not live:
        return Balance(
            assignment={},
            moves=(),
            unassigned=tuple(s for s in range(shards)),
            ignored_pins=tuple(sorted(pin_map)),
        )

    ignored = tuple(sorted(s for s, m in pin_map.items() if m not in live_set))
    active_pins = {s: m for s, m in pin_map.items() if m in live_set}
    held = frozenset(hold) & live_set
    for m in sorted(held):
        for s in prev.get(m, ()):
            active_pins.setdefault(s, m)

    # Rules 1 and 2: what each live member holds before balancing.
    holding: dict[str, set[int]] = {m: set() for m in live}
    for s, m in old_owner.items():
        if m in live_set and s not in active_pins:
            holding[m].add(s)
    for s, m in active_pins.items():
        holding[m].add(s)

    pinned_count = dict.fromkeys(live, 0)
    for m in active_pins.values():
        pinned_count[m] += 1
    load = {m: len(owned) for m, owned in holding.items()}
    target = _targets(shards, live, load, pinned_count, held)

    # Rule 4: over-target members release their lowest-ranked unpinned shards.
    order = release_order or {}
    for m in live:
        excess = len(holding[m]) - target[m]
        if excess > 0:
            first = {s: i for i, s in enumerate(order.get(m, ()))}
            releasable = sorted(
                (first.get(s, len(first)), _shard_rank(s, m), s)
                for s in holding[m]
                if s not in active_pins
            )
            holding[m].difference_update(s for _, _, s in releasable[:excess])

    # Rule 5: hand every ownerless shard to an under-target member.
    owned_now = {s for owned in holding.values() for s in owned}
    orphans = [s for s in range(shards) if s not in owned_now]
    takers = deque(
        sorted(
            (m for m in live if len(holding[m]) < target[m]),
            key=lambda m: (_member_rank(m), m),
        )
    )
    unassigned: list[int] = []
    for s in orphans:
        if not takers:  # only when every live member is held
            unassigned.append(s)
            continue
        m = takers.popleft()
        holding[m].add(s)
        if len(holding[m]) < target[m]:
            takers.append(m)

    assignment: Assignment = {m: tuple(sorted(holding[m])) for m in live}
    moves = []
    for m, owned in assignment.items():
        for s in owned:
            source = old_owner.get(s)
            if source == m:
                continue
            reason: MoveReason
            if s in active_pins and source in live_set and source not in held:
                reason = "pinned"
            elif source is None:
                reason = "unassigned"
            elif source not in live_set:
                reason = "member-lost"
            else:
                reason = "rebalance"
            moves.append(Move(shard=s, source=source, target=m, reason=reason))
    moves.sort(key=lambda mv: mv.shard)
    return Balance(
        assignment=assignment,
        moves=tuple(moves),
        unassigned=tuple(unassigned),
        ignored_pins=ignored,
    )
