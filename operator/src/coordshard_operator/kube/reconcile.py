"""One level-based reconcile of one CoordinateShards: parse -> membership -> pass -> status.

It reads the state (the CR, pods, the group's consumers in NATS), never a
single event, so a pod that crashed while the operator was down is handled
the same way as one whose deletion was watched. Calling it again with nothing
changed applies nothing and returns the same status.

Membership: members are Ready pods; pods NotReady within the grace period
are *held* (``rebalancer.passes``: they keep the consumer and shards they
have, are offered none, and are not fenced); everything else is gone and its
consumer is fenced by the engine.

``reconcile`` never raises the package's errors: a failure is a result too,
with the failure status and the Events to post, so the daemon that calls it
is parse → reconcile → patch → sleep.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordshard_operator.kube import crd, spec, status
from coordshard_operator.kube.errors import InvalidSpecError, NatsAuthError, SecretUnavailableError
from coordshard_operator.kube.pods import PodState, membership
from coordshard_operator.rebalancer import ranges
from coordshard_operator.rebalancer.balancing import Move
from coordshard_operator.rebalancer.errors import (
    CoordshardError,
    NatsServerTooOldError,
    StreamMismatchError,
)
from coordshard_operator.rebalancer.handoff import Engine, MemberInfo, Report
from coordshard_operator.rebalancer.passes import run_pass

__all__ = ["EngineFor", "Notice", "ReconcileResult", "reconcile"]

EngineFor = Callable[[spec.Spec], Awaitable[Engine]]
"""The engine of a parsed spec (connects to its NATS with its Secrets)."""


@dataclass(frozen=True, slots=True)
class Notice:
    """An Event to post on the CR."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What one reconcile wrote and what the daemon does with it."""

    status: dict[str, Any]
    notices: tuple[Notice, ...] = ()
    recheck_at: datetime | None = None
    """When a held pod's grace period ends (its shards move then)."""
    report: Report | None = None
    """The engine's report when it applied something."""
    moved: int = 0
    unassigned: int = 0
    epoch: int = 0
    unowned_removed: int = 0
    """Messages on subjects no shard owns that the pass removed from the stream."""
    pending: int = 0
    """Messages not yet delivered, summed over the group's consumers (as the pass read them)."""
    ack_pending: int = 0
    """Messages delivered and not yet acked, summed over the group's consumers."""
    error: CoordshardError | None = None
    """Why nothing was applied; None when the pass ran."""

    def next_pass_in(self, resync_s: float, *, now: datetime) -> float:
        """Seconds until the daemon should look again (a wake-up can come sooner)."""
        delay = resync_s
        if self.error is not None and not isinstance(self.error, InvalidSpecError):
            delay = min(delay, self.error.delay)
        if self.report is not None and self.moved:
            delay = 0.0  # look again at once: confirms convergence, clears Progressing
        if self.recheck_at is not None:
            delay = min(delay, max(0.0, (self.recheck_at - now).total_seconds()))
        return delay


_REASONS: dict[type[Exception], str] = {
    SecretUnavailableError: crd.REASON_SECRET_UNAVAILABLE,
    NatsAuthError: crd.REASON_NATS_AUTH_FAILED,
    NatsServerTooOldError: crd.REASON_NATS_SERVER_TOO_OLD,
    StreamMismatchError: crd.REASON_STREAM_MISMATCH,
}
"""Errors with their own condition reason (and a Warning Event); others: ReconcileFailed."""


async def reconcile(
    *,
    body: Mapping[str, Any],
    pods: Iterable[PodState],
    engine_for: EngineFor,
    previous: Mapping[str, Any],
    now: datetime,
) -> ReconcileResult:
    """Make the group match the pods; the new status, what to announce, or why not.

    ``previous`` is the CR's status as last written.
    """
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    try:
        desired = spec.parse(body)
        spec.check_immutable(previous.get("shards"), desired)
        return await _converge(desired, pods, await engine_for(desired), previous, now)
    except InvalidSpecError as e:
        failed = status.failed(previous, generation=generation, now=now, invalid=str(e))
        warn = () if failed == previous else (Notice("Warning", crd.REASON_INVALID_SPEC, str(e)),)
        return ReconcileResult(status=failed, notices=warn, error=e)
    except CoordshardError as e:
        reason = _REASONS.get(type(e), crd.REASON_RECONCILE_FAILED)
        failed = status.failed(
            previous, generation=generation, now=now, error=str(e), reason=reason
        )
        own_reason = reason != crd.REASON_RECONCILE_FAILED
        warn = (Notice("Warning", reason, str(e)),) if own_reason and failed != previous else ()
        return ReconcileResult(status=failed, notices=warn, error=e)


async def _converge(
    desired: spec.Spec,
    pods: Iterable[PodState],
    engine: Engine,
    previous: Mapping[str, Any],
    now: datetime,
) -> ReconcileResult:
    seen = membership(
        pods,
        namespace=desired.namespace,
        selector=desired.selector,
        grace_seconds=desired.grace_period_seconds,
        now=now,
    )
    group = desired.group
    live: dict[str, PodState] = {p.member_id(group): p for p in (*seen.members, *seen.held)}
    ready_ids = {p.member_id(group) for p in seen.members}
    epoch = int(previous.get("epoch") or 0)
    started = time.perf_counter()
    done = await run_pass(
        engine,
        shards=desired.shards,
        members={
            mid: MemberInfo.of(group=group, member=p.name, incarnation=p.uid)
            for mid, p in live.items()
        },
        epoch=epoch + 1,
        pins=_pins(desired, {k: v for k, v in live.items() if k in ready_ids}),
        hold=[mid for mid in live if mid not in ready_ids],
    )
    report = done.report
    if report is not None:
        epoch += 1
    removed = done.swept.messages if done.swept else 0
    balance = done.plan.balance
    planned = {mid: live[mid] for mid in done.members}
    pod_of = done.observed.pods
    pod_of |= {mid: p.name for mid, p in planned.items()}
    moved = len(balance.moves)
    before_pods = {m["pod"] for m in previous.get("members") or []}
    now_pods = {p.name for p in planned.values()}
    gone = before_pods - now_pods
    why = "pod lost: " + ", ".join(sorted(gone)) if gone else "rebalance"
    notices = [
        *_recreated(desired.stream, done.observed.recreated),
        *_past_grace(seen.lost, before_pods, desired.grace_period_seconds),
        *_membership(now_pods - before_pods, gone),
        *_shard_moves(balance.moves, pod_of, why),
        *_restarts(planned.values(), previous.get("members") or []),
        *_unowned(done.swept.subjects if done.swept else (), removed),
    ]
    members = [
        status.Member(
            pod=p.name,
            uid=p.uid,
            ready=p.ready,
            shards=tuple(balance.assignment.get(mid, ())),
            restarts=p.restarts,
        )
        for mid, p in planned.items()
    ]
    summary = status.Summary(
        generation=desired.generation,
        shards=desired.shards,
        members=len(seen.members),
        unassigned=len(balance.unassigned),
        moved=moved,
        unowned_removed=removed,
    )
    duration = report.duration_s if report else time.perf_counter() - started
    new_status = status.converged(
        previous,
        summary=summary,
        epoch=epoch,
        members=members,
        unassigned=balance.unassigned,
        rebalance=(
            {"reason": why, "shardsMoved": moved, "durationSeconds": round(duration, 4)}
            if moved
            else None
        ),
        now=now,
    )
    return ReconcileResult(
        status=new_status,
        notices=tuple(notices),
        recheck_at=seen.recheck_at,
        report=report,
        moved=moved,
        unassigned=len(balance.unassigned),
        epoch=epoch,
        unowned_removed=removed,
        pending=sum(c.num_pending for c in done.observed.consumers.values()),
        ack_pending=sum(c.num_ack_pending for c in done.observed.consumers.values()),
    )


def _pins(desired: spec.Spec, ids: Mapping[str, PodState]) -> dict[int, str]:
    by_pod = {p.name: mid for mid, p in ids.items()}
    return {s: by_pod[pod] for s, pod in desired.pins.items() if pod in by_pod}


def _past_grace(lost: Iterable[PodState], members_before: set[str], grace_s: int) -> list[Notice]:
    """A Warning for each member that stayed NotReady past its grace period (once:
    the next status no longer lists it)."""
    return [
        Notice(
            "Warning",
            crd.EVENT_POD_NOT_READY_PAST_GRACE,
            f"pod {p.name} NotReady for more than {grace_s} s: its shards move",
        )
        for p in lost
        if p.name in members_before and p.phase == "Running" and not p.terminating
    ]


def _restarts(pods: Iterable[PodState], before: Iterable[Mapping[str, Any]]) -> list[Notice]:
    """A Warning for each member whose container restarted in place since the last status:
    it keeps its consumer and shards (nothing moves within the grace period)."""
    seen = {(m.get("pod"), m.get("uid")): int(m.get("restarts") or 0) for m in before}
    notices = []
    for p in sorted(pods, key=lambda p: p.name):
        last = seen.get((p.name, p.uid))
        if last is not None and p.restarts > last:
            notices.append(
                Notice(
                    "Warning",
                    crd.EVENT_RESTARTED_IN_PLACE,
                    f"pod {p.name} restarted in place ({p.restarts} restarts): it keeps its "
                    "consumer and shards; its worker redelivers what the old process held, "
                    "in stream order",
                )
            )
    return notices


def _recreated(stream: str, recreated: bool) -> list[Notice]:
    if not recreated:
        return []
    message = (
        f"stream {stream} was gone (deleted, or NATS lost its storage); created it again. "
        "Commands it held were lost; every shard was assigned afresh"
    )
    return [Notice("Warning", crd.EVENT_STREAM_RECREATED, message)]


def _unowned(subjects: Iterable[str], removed: int) -> list[Notice]:
    """A Warning when the pass removed messages no shard owns (it happens once)."""
    listed = sorted(subjects)
    if not removed:
        return []
    more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
    message = f"removed {removed} messages on subjects no shard owns: {', '.join(listed[:5])}{more}"
    return [Notice("Warning", crd.EVENT_UNOWNED_REMOVED, message)]


def _membership(joined: Iterable[str], left: Iterable[str]) -> list[Notice]:
    joined, left = sorted(joined), sorted(left)
    if not (joined or left):
        return []
    message = f"joined: {', '.join(joined) or '-'}; left: {', '.join(left) or '-'}"
    return [Notice("Normal", crd.EVENT_MEMBERS_CHANGED, message)]


def _shard_moves(moves: Iterable[Move], pod_of: Mapping[str, str], why: str) -> list[Notice]:
    """One Event per (from pod, to pod), from the planner's moves."""
    by_route: dict[tuple[str, str], list[int]] = {}
    for mv in moves:
        src = pod_of.get(mv.source, mv.source) if mv.source else "(unassigned)"
        by_route.setdefault((src, pod_of.get(mv.target, mv.target)), []).append(mv.shard)
    return [
        Notice(
            "Normal",
            crd.EVENT_SHARDS_MOVED,
            f"shards {ranges.format_ranges(shards)} from {src} to {dst} ({why})",
        )
        for (src, dst), shards in sorted(by_route.items())
    ]
