"""Consumers of the group that claim one shard at once: which claim stands.

Pure, like ``lanes``. A work-queue stream refuses a consumer whose filters
overlap another's, and the engine deletes before it creates, so it never makes
two owners of one shard. The server can hold two all the same: it skips that
check while it recovers a stream (nats-server commit 49faba9, issue #4957), so
after a node restart or a leader change on R3 a consumer the engine deleted, or
one it made on a reading that missed another, can stand beside the one that
replaced it, and both deliver the same messages. A reading taken across a
leader change can also list a consumer already deleted; ``Engine.observe``
reads again (bounded) before it believes an overlap.

The rule: the oldest claim stands. Claims are visited oldest first (generation,
then epoch, then name); one that claims a shard an earlier one kept is
*contested*. The engine retires contested consumers (pause, drain, delete)
before any grant, and the planner never sees them: their shards that no kept
consumer claims are unowned and planned again. Keeping the oldest is what the
server's own check would have done (it refuses the later consumer), and it
needs no plan: whoever should own a shard next, the pass moves it there by the
ordinary hand-off, from a reading in which every shard has one owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Claim", "contested"]


@dataclass(frozen=True, slots=True)
class Claim:
    """One consumer's shards, and what tells its age."""

    name: str
    shards: tuple[int, ...]
    generation: int
    epoch: int


def contested(claims: Iterable[Claim]) -> tuple[str, ...]:
    """The names of the claims to retire (sorted): each claims a shard an older one keeps."""
    owned: set[int] = set()
    losers: list[str] = []
    for claim in sorted(claims, key=lambda c: (c.generation, c.epoch, c.name)):
        if owned.isdisjoint(claim.shards):
            owned.update(claim.shards)
        else:
            losers.append(claim.name)
    return tuple(sorted(losers))
