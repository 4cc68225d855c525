"""One level-based reconcile of one CoordinateShards: observe -> plan -> apply -> report.

It reads the state (pods, the group's consumers in NATS), never a single
event, so a pod that crashed while the operator was down is handled the same
way as one whose deletion was watched. Calling it again with nothing changed
applies nothing and returns the same status.

Membership: members are Ready pods; pods NotReady within the grace period
keep the shards they own (they stay in the engine's live set, so they are not
fenced) but are offered none; everything else is gone and its consumer is
fenced by the engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from coordshard_operator.kube import conditions, observe, spec
from coordshard_operator.rebalancer import ranges
from coordshard_operator.rebalancer.handoff import Engine, MemberInfo, Report
from coordshard_operator.rebalancer.passes import rebalance

__all__ = ["Notice", "Outcome", "reconcile"]


@dataclass(frozen=True, slots=True)
class Notice:
    """An Event to post on the CR."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Outcome:
    status: dict[str, Any]
    notices: tuple[Notice, ...] = ()
    recheck_at: datetime | None = None
    report: Report | None = None
    moved: int = 0
    unassigned: int = 0
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class _Owners:
    pod_of: Mapping[str, str] = field(default_factory=dict)
    """Consumer name -> pod name, for consumers in force and members now."""


def _pins(desired: spec.Spec, ids: Mapping[str, observe.PodState]) -> dict[int, str]:
    by_pod = {p.name: mid for mid, p in ids.items()}
    return {s: by_pod[pod] for s, pod in desired.pins.items() if pod in by_pod}


def _moves(
    before: Mapping[str, tuple[int, ...]],
    after: Mapping[str, tuple[int, ...]],
    pod_of: Mapping[str, str],
) -> dict[tuple[str, str], list[int]]:
    """(from pod, to pod) -> shards, for every shard whose owner changed."""
    old = {s: m for m, shards in before.items() for s in shards}
    moves: dict[tuple[str, str], list[int]] = {}
    for m, shards in after.items():
        for s in shards:
            if old.get(s) != m:
                src = pod_of.get(old[s], old[s]) if s in old else "(unassigned)"
                moves.setdefault((src, pod_of.get(m, m)), []).append(s)
    return moves


def _notices(
    moves: Mapping[tuple[str, str], list[int]],
    joined: Iterable[str],
    left: Iterable[str],
    why: str,
) -> list[Notice]:
    out: list[Notice] = []
    joined, left = sorted(joined), sorted(left)
    if joined or left:
        out.append(
            Notice(
                "Normal",
                "MembersChanged",
                f"joined: {', '.join(joined) or '-'}; left: {', '.join(left) or '-'}",
            )
        )
    for (src, dst), shards in sorted(moves.items()):
        out.append(
            Notice(
                "Normal",
                "ShardsMoved",
                f"shards {ranges.format_ranges(shards)} from {src} to {dst} ({why})",
            )
        )
    return out


async def reconcile(
    *,
    desired: spec.Spec,
    pods: Iterable[observe.PodState],
    engine: Engine,
    previous: Mapping[str, Any],
    now: datetime,
) -> Outcome:
    """Make the group match the pods; return the new status and what to announce.

    ``previous`` is the CR's status as last written. Raises InvalidSpecError
    (nothing applied) and the engine's errors.
    """
    spec.check_immutable(previous.get("shards"), desired)
    seen = observe.observe(
        pods,
        namespace=desired.namespace,
        selector=desired.selector,
        grace_seconds=desired.grace_period_seconds,
        now=now,
    )
    group = desired.group
    # Held pods keep a consumer they have; one without gets none (so no new shards).
    holding = (await engine.observe()).consumers
    live = {p.member_id(group): p for p in seen.members}
    live |= {p.member_id(group): p for p in seen.held if p.member_id(group) in holding}
    ready_ids = {p.member_id(group) for p in seen.members}
    epoch = int(previous.get("epoch") or 0)
    started = time.perf_counter()
    done = await rebalance(
        engine,
        shards=desired.shards,
        members={
            mid: MemberInfo(consumer=mid, member=p.name, incarnation=p.uid)
            for mid, p in live.items()
        },
        epoch=epoch + 1,
        pins=_pins(desired, {k: v for k, v in live.items() if k in ready_ids}),
        hold=[mid for mid in live if mid not in ready_ids],
    )
    report = done.report
    if report is not None:
        epoch += 1
    in_force = done.observed
    plan = done.plan
    target: dict[str, tuple[int, ...]] = {str(m): s for m, s in plan.balance.assignment.items()}
    pod_of = {name: c.member for name, c in in_force.consumers.items()}
    pod_of |= {mid: p.name for mid, p in live.items()}
    moves = _moves(in_force.assignment, target, pod_of)
    moved = sum(len(s) for s in moves.values())
    before_pods = {m["pod"] for m in previous.get("members") or []}
    now_pods = {p.name for p in live.values()}
    gone = before_pods - now_pods
    why = "pod lost: " + ", ".join(sorted(gone)) if gone else "rebalance"
    notices = _notices(moves, now_pods - before_pods, gone, why)

    unassigned = len(plan.balance.unassigned)
    summary = conditions.Summary(
        generation=desired.generation,
        shards=desired.shards,
        members=len(seen.members),
        unassigned=unassigned,
        moved=moved,
    )
    status: dict[str, Any] = {
        "observedGeneration": desired.generation,
        "shards": desired.shards,
        "epoch": epoch,
        "memberCount": len(live),
        "members": [
            {
                "pod": p.name,
                "uid": p.uid,
                "ready": p.ready,
                "shards": len(target.get(mid, ())),
            }
            for mid, p in sorted(live.items(), key=lambda kv: kv[1].name)
        ],
        "assignment": {
            live[mid].name: ranges.format_ranges(shards) for mid, shards in target.items() if shards
        },
        "unassignedShards": ranges.format_ranges(plan.balance.unassigned),
        "conditions": conditions.merge_conditions(
            conditions.report(summary),
            previous.get("conditions"),
            generation=desired.generation,
            now=now,
        ),
    }
    if moved:
        status["lastRebalance"] = {
            "reason": why,
            "shardsMoved": moved,
            "durationSeconds": round(
                report.duration_s if report else time.perf_counter() - started, 4
            ),
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    elif "lastRebalance" in previous:
        status["lastRebalance"] = previous["lastRebalance"]
    return Outcome(
        status=status,
        notices=tuple(notices),
        recheck_at=seen.recheck_at,
        report=report,
        moved=moved,
        unassigned=unassigned,
        epoch=epoch,
    )
