"""Pods -> membership: which pods may own shards right now.

Pure; ``now`` is passed in. The rules (issue 5):

* a **member** is Running, Ready and not terminating;
* a pod that *was* Ready and went NotReady keeps its shards for the CR's
  grace period (counted from the Ready condition's lastTransitionTime): it is
  **held**, gets no new shards, and its shards move when the period ends;
* anything else is **lost**: deleted, terminating, Failed/Succeeded, NotReady
  past the grace period, or never Ready yet (it owns nothing either way).

Deleted pods are simply absent from the input. The member id the planner sees
is the consumer name of the pod's incarnation (name + uid), so a pod that
comes back under the same name with a new uid is a new member, while a
container restarted in place (same uid, a higher ``restartCount``) is the
same member: its worker rewinds the consumer it finds with deliveries pending.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from coordshard_client.naming import MemberId, member_id

__all__ = ["Membership", "PodState", "matches", "membership", "pod_state"]

MemberState = Literal["member", "held", "lost"]


@dataclass(frozen=True, slots=True)
class PodState:
    """What the operator needs to know of one pod."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict)
    phase: str = "Pending"
    ready: bool = False
    ready_changed_at: datetime | None = None
    """lastTransitionTime of the Ready condition, if the pod has one."""
    terminating: bool = False
    restarts: int = 0
    """Sum of the containers' ``restartCount``: a container restarted in place keeps
    the pod's uid, so its consumer; the worker rewinds it on bind (see the service)."""

    def member_id(self, group: str) -> MemberId:
        """The consumer name of this incarnation in ``group``."""
        return member_id(group=group, member=self.name, incarnation=self.uid)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def pod_state(body: Mapping[str, Any]) -> PodState:
    """A ``PodState`` from a pod object as the API serves it."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    ready = False
    changed: datetime | None = None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = cond.get("status") == "True"
            changed = _parse_time(cond.get("lastTransitionTime"))
    return PodState(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        labels=dict(meta.get("labels") or {}),
        phase=str(status.get("phase") or "Pending"),
        ready=ready,
        ready_changed_at=changed,
        terminating=bool(meta.get("deletionTimestamp")),
        restarts=sum(
            int(c.get("restartCount") or 0) for c in status.get("containerStatuses") or []
        ),
    )


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """True when every selector label is on the pod with the same value."""
    return all(labels.get(k) == v for k, v in selector.items())


def classify(pod: PodState, *, grace: timedelta, now: datetime) -> MemberState:
    """The member state of one pod at ``now``."""
    if pod.terminating or pod.phase in ("Failed", "Succeeded"):
        return "lost"
    if pod.phase == "Running" and pod.ready:
        return "member"
    was_ready_recently = (
        pod.phase == "Running"
        and pod.ready_changed_at is not None
        and now - pod.ready_changed_at < grace
    )
    return "held" if was_ready_recently else "lost"


@dataclass(frozen=True, slots=True)
class Membership:
    """The pods of one CR, sorted by name, split by member state."""

    members: tuple[PodState, ...]
    held: tuple[PodState, ...]
    lost: tuple[PodState, ...]
    recheck_at: datetime | None
    """When the earliest held pod's grace ends (then its shards move)."""


def membership(
    pods: Iterable[PodState],
    *,
    namespace: str,
    selector: Mapping[str, str],
    grace_seconds: int,
    now: datetime,
) -> Membership:
    """Classify the pods of ``namespace`` that match ``selector``."""
    grace = timedelta(seconds=grace_seconds)
    out: dict[MemberState, list[PodState]] = {"member": [], "held": [], "lost": []}
    recheck: datetime | None = None
    for pod in sorted(pods, key=lambda p: (p.name, p.uid)):
        if pod.namespace != namespace or not matches(pod.labels, selector):
            continue
        state = classify(pod, grace=grace, now=now)
        out[state].append(pod)
        if state == "held" and pod.ready_changed_at is not None:
            due = pod.ready_changed_at + grace
            recheck = due if recheck is None else min(recheck, due)
    return Membership(
        members=tuple(out["member"]),
        held=tuple(out["held"]),
        lost=tuple(out["lost"]),
        recheck_at=recheck,
    )
