"""One pass of the rebalancer, shared by every membership source.

observe (the consumers in NATS) → plan (pure) → apply (the engine), and only
when something has to change: the plan moves shards, a dead member still has
a consumer, or a consumer is still paused by a pass that died before its end.
The operator and local mode differ only in how they decide who is live.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from coordshard_operator.rebalancer.handoff import Engine, MemberInfo, Observed, Report
from coordshard_operator.rebalancer.planning import Plan, plan

__all__ = ["Pass", "rebalance"]


@dataclass(frozen=True, slots=True)
class Pass:
    """What one pass saw and did."""

    observed: Observed
    """The consumers in force before the pass."""
    plan: Plan
    report: Report | None
    """None when nothing had to change (no JetStream request was made)."""

    @property
    def changed(self) -> bool:
        return self.report is not None and self.report.changed


async def rebalance(
    engine: Engine,
    *,
    shards: int,
    members: Mapping[str, MemberInfo],
    epoch: int,
    pins: Mapping[int, str] | None = None,
    hold: Iterable[str] = (),
) -> Pass:
    """Converge the group on the live ``members`` (consumer name → member); see module doc.

    ``hold``: members that are live but not ready (within their grace period): they keep
    their consumer and shards and are given nothing new.
    """
    observed = await engine.observe()
    result = plan(
        shards=shards,
        members=sorted(members),
        previous=observed.assignment,
        pins=pins,
        hold=hold,
    )
    stalled = any(c.paused for c in observed.consumers.values())
    if result.converged and not stalled:
        return Pass(observed, result, None)
    report = await engine.reconcile(result.balance.assignment, members=members, epoch=epoch)
    return Pass(observed, result, report)
