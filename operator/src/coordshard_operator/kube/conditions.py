"""The CR's status report: conditions Ready/Progressing/Degraded and their reasons.

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

__all__ = ["Condition", "Summary", "merge_conditions", "report"]

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
