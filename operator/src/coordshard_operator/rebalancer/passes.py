"""One pass of the rebalancer, shared by every membership source.

observe (the consumers in NATS, read once) → plan (pure) → apply (the
engine, handed the same reading) → sweep (messages no shard owns, see
``strays``; free once the stream is clean). Apply runs only when something has to change: the
plan moves shards, a dead member still has a consumer, a consumer is still
paused by a pass that died before its end, or one has settings not ours; on a
blocks stream also when a member's lanes are to be merged (``Engine.settled``).
On a blocks stream the plan is over blocks (``plan(blocks=K)``), its answer in
shards as everywhere else. The operator and local mode
differ only in how they decide who is live; the rules on what a live member
may own are here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coordshard_operator.rebalancer.handoff import Engine, MemberInfo, Observed, Report
from coordshard_operator.rebalancer.planning import Plan, plan
from coordshard_operator.rebalancer.strays import Swept

__all__ = ["Pass", "run_pass"]


@dataclass(frozen=True, slots=True)
class Pass:
    """What one pass saw and did."""

    observed: Observed
    """The consumers in force before the pass."""
    members: Mapping[str, MemberInfo]
    """The members the pass planned for (member id → member): the live ones,
    less held members that had no consumer."""
    plan: Plan
    report: Report | None
    """None when nothing had to change (no consumer request was made)."""
    swept: Swept | None = None
    """What the sweep for unowned messages removed; None when none ran."""

    @property
    def changed(self) -> bool:
        return self.report is not None and self.report.changed


async def run_pass(
    engine: Engine,
    *,
    shards: int,
    members: Mapping[str, MemberInfo],
    epoch: int,
    pins: Mapping[int, str] | None = None,
    hold: Iterable[str] = (),
) -> Pass:
    """Converge the group on the live ``members`` (member id → member); see module doc.

    ``hold``: members that are live but not ready (within their grace period): they keep
    the consumer and shards they have and are given nothing new; a held member with no
    consumer is left out (it owns nothing, and nothing is created for it).
    """
    observed = await engine.observe()
    held = {m for m in hold if m in members}
    planned = {
        name: info
        for name, info in members.items()
        if name not in held or name in observed.assignment
    }
    result = plan(
        shards=shards,
        members=sorted(planned),
        previous=observed.assignment,
        pins=pins,
        hold=sorted(held & set(planned)),
        blocks=engine.blocks,
        release_order=engine.release_order(observed),
    )
    report = None
    if not (result.converged and engine.settled(observed, result.balance.assignment)):
        report = await engine.apply(
            result.balance.assignment, members=planned, epoch=epoch, observed=observed
        )
    # After the grants, never before: a stray is a message no consumer can own, so
    # removing it is independent of who owns what, and its listing (one stream info
    # naming every stored subject, 0.2-0.4 s idle at 100k subjects and seconds under
    # load; a full page of them is never proof of a clean stream, so it runs again
    # every pass) must not delay a crash's orphans (docs/benchmarks.md, "Scale").
    swept = await engine.sweep_strays()
    return Pass(observed, planned, result, report, swept)
