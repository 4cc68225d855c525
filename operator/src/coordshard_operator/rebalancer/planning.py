"""Turn "assignment in force → balanced assignment" into ordered handoff steps.

Pure, like ``balancing``. These steps are the one diff of a hand-off: the
engine (``handoff.Engine.apply``) executes exactly ``plan_handoff`` of what it
observed and what it was asked for, and ``coordshard plan`` prints the same
steps, so what the CLI shows is what the engine does.

The order is the safety rule JetStream's work-queue retention enforces
anyway (it refuses two consumers with overlapping filters): every shard is
taken away from its old owner *before* it is given to a new one. So the steps are, in this order:

1. ``fence``  — a member that is gone: its consumer is deleted (the only hard
   fence against a zombie that still runs);
2. ``narrow`` — a live member that loses shards: its filter shrinks (a
   member left with none has its consumer deleted: an empty filter list
   would mean "every subject");
3. ``grow``   — a member that gains shards (a new member included): its
   filter grows, after the rewind that picks up the leftovers.

Within each group members go in name order. A converged system plans no step.

On a stream that stores commands under blocks (``plan(blocks=K)``) members own
whole blocks: the balancer plans over the K blocks, and the answer is expanded
to shards (block b is the shards b, b + K, ...), so every reader of a ``Plan``
(status, ``coordshard plan``, local mode) still sees shards. Balance in blocks
is max - min <= 1. How the engine applies it (lanes) is ``lanes.plan_lanes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from coordshard_client.subjects import block_of, shards_of_block
from coordshard_operator.rebalancer.balancing import (
    AssignmentLike,
    Balance,
    InvalidAssignmentError,
    Move,
    assign_shards,
)

__all__ = ["HandoffStep", "Plan", "StepAction", "blocks_of_assignment", "plan", "plan_handoff"]

StepAction = Literal["fence", "narrow", "grow"]
_ORDER: dict[StepAction, int] = {"fence": 0, "narrow": 1, "grow": 2}


@dataclass(frozen=True, slots=True)
class HandoffStep:
    """One change to one member's consumer."""

    action: StepAction
    member: str
    shards: tuple[int, ...]
    """The member's whole shard set once the step is done (empty for ``fence``)."""
    changed: tuple[int, ...]
    """The shards this step takes away (fence, narrow) or gives (grow)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """The balanced assignment and the ordered steps that reach it."""

    balance: Balance
    steps: tuple[HandoffStep, ...]

    @property
    def converged(self) -> bool:
        """True when nothing has to change."""
        return not self.steps


def plan_handoff(
    previous: AssignmentLike,
    new: AssignmentLike,
    *,
    live: Iterable[str] | None = None,
) -> tuple[HandoffStep, ...]:
    """The steps from ``previous`` to ``new``: all revocations before any grant.

    ``live``: the members alive now (default: the keys of ``new``). A member of
    ``previous`` that is not live is fenced, even when it owned nothing: its
    consumer still has to go. A live member missing from ``new`` owns nothing.
    """
    prev = {m: frozenset(owned) for m, owned in previous.items()}
    alive = set(new) if live is None else set(live)
    steps: list[HandoffStep] = []
    for m, owned in prev.items():
        if m not in alive:
            steps.append(HandoffStep("fence", m, (), tuple(sorted(owned))))
    targets = {m: tuple(new.get(m, ())) for m in alive}
    for m, shards in targets.items():
        before = prev.get(m, frozenset())
        after = frozenset(shards)
        lost = before - after
        gained = after - before
        if lost:
            steps.append(
                HandoffStep("narrow", m, tuple(sorted(before & after)), tuple(sorted(lost)))
            )
        if gained:
            steps.append(HandoffStep("grow", m, tuple(sorted(after)), tuple(sorted(gained))))
    steps.sort(key=lambda st: (_ORDER[st.action], st.member))
    return tuple(steps)


def plan(
    *,
    shards: int,
    members: Iterable[str],
    previous: AssignmentLike | None = None,
    pins: Mapping[int, str] | None = None,
    hold: Iterable[str] = (),
    blocks: int | None = None,
    release_order: Mapping[str, Sequence[int]] | None = None,
) -> Plan:
    """Balance the shards over the live members and order the handoff steps.

    ``hold``: live members that keep what they own and take nothing (see balancing).
    ``blocks``: K when the stream stores under blocks; the balance is then over
    blocks (a member owning any shard of a block is taken to own the block; a
    pin pins its shard's block, the lowest pinned shard of a block winning) and
    expanded to shards. ``release_order``: see ``balancing.assign_shards`` (in
    blocks when ``blocks`` is given).
    """
    previous = previous or {}
    if blocks is None:
        balance = assign_shards(
            shards=shards,
            members=members,
            previous=previous,
            pins=pins,
            hold=hold,
            release_order=release_order,
        )
    else:
        for m, owned in previous.items():
            for s in owned:
                if not 0 <= s < shards:
                    raise InvalidAssignmentError(
                        f"previous assignment gives shard {s} to {m!r}, outside 0..{shards - 1}"
                    )
        balance = _expand(
            assign_shards(
                shards=blocks,
                members=members,
                previous=blocks_of_assignment(previous, blocks=blocks),
                pins=_block_pins(pins or {}, blocks=blocks),
                hold=hold,
                release_order=release_order,
            ),
            shards=shards,
            blocks=blocks,
            pins=pins or {},
        )
    return Plan(balance=balance, steps=plan_handoff(previous, balance.assignment))


def blocks_of_assignment(assignment: AssignmentLike, *, blocks: int) -> dict[str, tuple[int, ...]]:
    """Member id → the blocks its shards lie in, ascending."""
    return {
        m: tuple(sorted({block_of(s, blocks) for s in owned})) for m, owned in assignment.items()
    }


def _block_pins(pins: Mapping[int, str], *, blocks: int) -> dict[int, str]:
    out: dict[int, str] = {}
    for shard in sorted(pins):
        out.setdefault(block_of(shard, blocks), pins[shard])
    return out


def _expand(balance: Balance, *, shards: int, blocks: int, pins: Mapping[int, str]) -> Balance:
    """A balance over blocks as the same balance over their shards."""

    def spread(units: Iterable[int]) -> tuple[int, ...]:
        return tuple(
            sorted(s for b in units for s in shards_of_block(b, shards=shards, blocks=blocks))
        )

    moves = [
        Move(shard=s, source=mv.source, target=mv.target, reason=mv.reason)
        for mv in balance.moves
        for s in shards_of_block(mv.shard, shards=shards, blocks=blocks)
    ]
    return Balance(
        assignment={m: spread(owned) for m, owned in balance.assignment.items()},
        moves=tuple(sorted(moves, key=lambda mv: mv.shard)),
        unassigned=spread(balance.unassigned),
        ignored_pins=tuple(s for s in sorted(pins) if block_of(s, blocks) in balance.ignored_pins),
    )
