"""The CR's status: its one author, for a pass that converged and one that failed.

``converged`` writes the whole stanza after a pass (members, assignment,
epoch, lastRebalance, unownedMessagesRemoved, conditions); ``failed`` keeps
the last stanza and only says in the conditions why nothing was applied.
Conditions are Ready/Progressing/Degraded with their reasons, and
UnownedMessages (True once messages no shard owns were removed from the stream).

Pure; ``now`` is passed in. As in controller-runtime and NACK, the reasons are
constants (``crd.REASON_*``) and ``lastTransitionTime`` changes only when a
condition's status flips, so `kubectl get` shows how long a state has held,
not when the operator last looked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from coordshard_operator.kube import crd
from coordshard_operator.rebalancer import ranges

__all__ = [
    "Condition",
    "Member",
    "Summary",
    "converged",
    "failed",
    "merge_conditions",
    "report",
    "unowned",
]

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True, slots=True)
class Summary:
    """What one reconcile found and did, as far as conditions care."""

    generation: int
    shards: int
    members: int
    unassigned: int
    moved: int = 0
    error: str | None = None
    """A reconcile failure (NATS down...): Ready=False, Degraded=True."""
    error_reason: str = crd.REASON_RECONCILE_FAILED
    """The reason of the conditions ``error`` sets."""
    invalid: str | None = None
    """An invalid spec: nothing was applied."""
    unowned_removed: int = 0
    """Messages on subjects no shard owns that this pass removed from the stream."""


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str


def report(summary: Summary) -> tuple[Condition, Condition, Condition]:
    """The three conditions for ``summary`` (without times)."""
    s = summary
    if s.invalid is not None:
        return (
            Condition(crd.CONDITION_READY, "False", crd.REASON_INVALID_SPEC, s.invalid),
            Condition(crd.CONDITION_PROGRESSING, "False", crd.REASON_INVALID_SPEC, s.invalid),
            Condition(crd.CONDITION_DEGRADED, "True", crd.REASON_INVALID_SPEC, s.invalid),
        )
    if s.error is not None:
        ready = Condition(crd.CONDITION_READY, "False", s.error_reason, s.error)
        degraded = Condition(crd.CONDITION_DEGRADED, "True", s.error_reason, s.error)
    elif s.members == 0:
        msg = f"no Ready pod matches the selector; {s.unassigned} of {s.shards} shards unassigned"
        ready = Condition(crd.CONDITION_READY, "False", crd.REASON_NO_MEMBERS, msg)
        degraded = Condition(crd.CONDITION_DEGRADED, "True", crd.REASON_NO_MEMBERS, msg)
    elif s.unassigned:
        msg = f"{s.unassigned} of {s.shards} shards unassigned"
        ready = Condition(crd.CONDITION_READY, "False", crd.REASON_SHARDS_UNASSIGNED, msg)
        degraded = Condition(crd.CONDITION_DEGRADED, "True", crd.REASON_SHARDS_UNASSIGNED, msg)
    else:
        msg = f"{s.shards} shards over {s.members} members"
        ready = Condition(crd.CONDITION_READY, "True", crd.REASON_CONVERGED, msg)
        degraded = Condition(crd.CONDITION_DEGRADED, "False", crd.REASON_ALL_ASSIGNED, msg)
    if s.moved:
        progressing = Condition(
            crd.CONDITION_PROGRESSING, "True", crd.REASON_SHARDS_MOVED, f"{s.moved} shards moved"
        )
    else:
        progressing = Condition(
            crd.CONDITION_PROGRESSING, "False", crd.REASON_CONVERGED, "no hand-off in flight"
        )
    return ready, progressing, degraded


def unowned(total: int) -> Condition:
    """The UnownedMessages condition for ``total`` messages removed so far."""
    if total:
        return Condition(
            crd.CONDITION_UNOWNED_MESSAGES,
            "True",
            crd.REASON_UNOWNED_REMOVED,
            f"{total} messages on subjects no shard owns were removed from the stream "
            "(stored under its older subjects; see the operator log for each subject)",
        )
    return Condition(
        crd.CONDITION_UNOWNED_MESSAGES,
        "False",
        crd.REASON_NO_UNOWNED,
        "every message in the stream has an owner",
    )


def merge_conditions(
    new: Sequence[Condition],
    previous: Sequence[Mapping[str, Any]] | None,
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """Conditions as status dicts, keeping ``lastTransitionTime`` unless the status flipped."""
    before = {c.get("type"): c for c in previous or []}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    out: list[dict[str, Any]] = []
    for c in new:
        old = before.get(c.type)
        kept = old.get("lastTransitionTime") if old and old.get("status") == c.status else None
        out.append(
            {
                "type": c.type,
                "status": c.status,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": kept or stamp,
                "observedGeneration": generation,
            }
        )
    return out


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Member:
    """One pod of the group as the status lists it."""

    pod: str
    uid: str
    ready: bool
    shards: tuple[int, ...]
    restarts: int = 0
    """Container restarts in place (the pod's containerStatuses restartCount)."""


def converged(
    previous: Mapping[str, Any],
    *,
    summary: Summary,
    epoch: int,
    members: Sequence[Member],
    unassigned: Sequence[int],
    rebalance: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The status after a pass that applied (or found nothing to apply).

    ``rebalance``: what moved (``reason``, ``shardsMoved``, ``durationSeconds``), or
    None to keep the last ``lastRebalance``.
    """
    removed = int(previous.get("unownedMessagesRemoved") or 0) + summary.unowned_removed
    status: dict[str, Any] = {
        "observedGeneration": summary.generation,
        "shards": summary.shards,
        "epoch": epoch,
        "memberCount": len(members),
        "members": [
            {
                "pod": m.pod,
                "uid": m.uid,
                "ready": m.ready,
                "shards": len(m.shards),
                "restarts": m.restarts,
            }
            for m in sorted(members, key=lambda m: m.pod)
        ],
        "assignment": {m.pod: ranges.format_ranges(m.shards) for m in members if m.shards},
        "unassignedShards": ranges.format_ranges(unassigned),
        "unownedMessagesRemoved": removed,
        "conditions": merge_conditions(
            (*report(summary), unowned(removed)),
            previous.get("conditions"),
            generation=summary.generation,
            now=now,
        ),
    }
    if rebalance is not None:
        status["lastRebalance"] = {**rebalance, "time": _stamp(now)}
    elif "lastRebalance" in previous:
        status["lastRebalance"] = previous["lastRebalance"]
    return status


def failed(
    previous: Mapping[str, Any],
    *,
    generation: int,
    now: datetime,
    invalid: str | None = None,
    error: str | None = None,
    reason: str = crd.REASON_RECONCILE_FAILED,
) -> dict[str, Any]:
    """``previous`` with conditions saying why nothing was applied."""
    summary = Summary(
        generation=generation,
        shards=int(previous.get("shards") or 0),
        members=int(previous.get("memberCount") or 0),
        unassigned=0,
        invalid=invalid,
        error=error,
        error_reason=reason,
    )
    return {
        **previous,
        "conditions": merge_conditions(
            (*report(summary), unowned(int(previous.get("unownedMessagesRemoved") or 0))),
            previous.get("conditions"),
            generation=generation,
            now=now,
        ),
    }
