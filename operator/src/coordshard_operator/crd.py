"""Every Kubernetes string the operator uses: API group, plural, keys, reasons.

One module owns them so that the CRD YAML, the handlers, the chart's RBAC
and the tests cannot drift apart silently; a test compares ``crds/`` with
these names.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "API_VERSION",
    "CONDITION_DEGRADED",
    "CONDITION_PROGRESSING",
    "CONDITION_READY",
    "FINALIZER",
    "GROUP",
    "KIND",
    "PLURAL",
    "REASON_ALL_ASSIGNED",
    "REASON_CONVERGED",
    "REASON_INVALID_SPEC",
    "REASON_NO_MEMBERS",
    "REASON_RECONCILE_FAILED",
    "REASON_SHARDS_MOVED",
    "REASON_SHARDS_UNASSIGNED",
    "SHORT_NAME",
    "SINGULAR",
    "VERSION",
]

GROUP: Final = "coordshard.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "CoordinateShards"
PLURAL: Final = "coordinateshards"
SINGULAR: Final = "coordinateshards"
SHORT_NAME: Final = "cshards"

FINALIZER: Final = f"{GROUP}/consumers"
"""Held on every CR until its consumers are deleted."""

CONDITION_READY: Final = "Ready"
CONDITION_PROGRESSING: Final = "Progressing"
CONDITION_DEGRADED: Final = "Degraded"

# Condition reasons: constant CamelCase, one per situation an admin acts on.
REASON_CONVERGED: Final = "Converged"
"""Ready=True: every shard has exactly one live owner."""
REASON_ALL_ASSIGNED: Final = "AllShardsAssigned"
"""Degraded=False."""
REASON_SHARDS_MOVED: Final = "ShardsMoved"
"""Progressing=True: the last reconcile moved shards."""
REASON_SHARDS_UNASSIGNED: Final = "ShardsUnassigned"
"""Degraded=True / Ready=False: some shards have no owner."""
REASON_NO_MEMBERS: Final = "NoReadyMembers"
"""Degraded=True: no pod matching the selector is a member."""
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_RECONCILE_FAILED: Final = "ReconcileFailed"

# Event reasons (on the CR).
EVENT_MEMBERS_CHANGED: Final = "MembersChanged"
EVENT_SHARDS_MOVED: Final = REASON_SHARDS_MOVED
EVENT_POD_NOT_READY_PAST_GRACE: Final = "PodNotReadyPastGrace"

LABEL_WORKER: Final = f"{GROUP}/worker"
"""Present on every worker pod; the operator watches only such pods (server-side)."""
ANNOTATION_PREFIX: Final = GROUP
"""kopf keeps its handler progress in ``coordshard.io/*`` annotations of the CR."""
