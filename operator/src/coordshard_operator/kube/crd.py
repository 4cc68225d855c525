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
    "CONDITION_UNOWNED_MESSAGES",
    "FINALIZER",
    "GROUP",
    "KIND",
    "PLURAL",
    "REASON_ALL_ASSIGNED",
    "REASON_CONVERGED",
    "REASON_INVALID_SPEC",
    "REASON_NATS_AUTH_FAILED",
    "REASON_NATS_SERVER_TOO_OLD",
    "REASON_NO_MEMBERS",
    "REASON_NO_UNOWNED",
    "REASON_RECONCILE_FAILED",
    "REASON_SECRET_UNAVAILABLE",
    "REASON_SHARDS_MOVED",
    "REASON_SHARDS_UNASSIGNED",
    "REASON_STREAM_MISMATCH",
    "REASON_UNOWNED_REMOVED",
    "REPORTING_COMPONENT",
    "SECRETS",
    "SECRET_CA",
    "SECRET_TLS_CERT",
    "SECRET_TLS_KEY",
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
CONDITION_UNOWNED_MESSAGES: Final = "UnownedMessages"
"""True once the stream was found holding messages no shard owns (they were removed)."""

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
REASON_SECRET_UNAVAILABLE: Final = "SecretUnavailable"
"""Degraded=True: a Secret named in spec.nats (or a key in it) cannot be read."""

REASON_NATS_AUTH_FAILED: Final = "NatsAuthFailed"
"""Degraded=True: NATS refused the credentials the Secrets hold."""
REASON_NATS_SERVER_TOO_OLD: Final = "NatsServerTooOld"
"""Degraded=True: nats-server is older than the project needs (the message says which
version was found, which is needed, and which feature needs it); nothing is created."""
REASON_STREAM_MISMATCH: Final = "StreamMismatch"
"""Degraded=True: the stream exists but cannot serve this CR (retention, or the shard
count its metadata records differs from spec.shards); it is left unchanged."""
REASON_UNOWNED_REMOVED: Final = "UnownedMessagesRemoved"
"""UnownedMessages=True: messages stored under older stream subjects were removed."""
REASON_NO_UNOWNED: Final = "NoUnownedMessages"
"""UnownedMessages=False."""

SECRETS: Final = "secrets"
"""core/v1 resource read (``get`` only) for spec.nats.*SecretRef."""
SECRET_CA: Final = "ca.crt"
SECRET_TLS_CERT: Final = "tls.crt"
SECRET_TLS_KEY: Final = "tls.key"
"""Keys of the tlsSecretRef Secret (those of a ``kubernetes.io/tls`` Secret)."""

# Event reasons (on the CR).
EVENT_MEMBERS_CHANGED: Final = "MembersChanged"
EVENT_SHARDS_MOVED: Final = REASON_SHARDS_MOVED
EVENT_POD_NOT_READY_PAST_GRACE: Final = "PodNotReadyPastGrace"
EVENT_UNOWNED_REMOVED: Final = REASON_UNOWNED_REMOVED
EVENT_CONSUMERS_LEFT: Final = "ConsumersLeftBehind"
EVENT_RESTARTED_IN_PLACE: Final = "RestartedInPlace"
EVENT_STREAM_RECREATED: Final = "StreamRecreated"
"""Warning: the stream was gone (deleted, or a server that lost its storage) and the
operator created it again; what it held was lost."""
"""Warning: a deleted CR's consumers could not be removed within the release timeout."""

REPORTING_COMPONENT: Final = "coordshard-operator"
"""Who the Events say they come from (``source.component``, ``reportingComponent``;
the "From" column of ``kubectl describe``), instead of kopf's default "kopf"."""

LABEL_WORKER: Final = f"{GROUP}/worker"
"""Present on every worker pod; the operator watches only such pods (server-side)."""
ANNOTATION_PREFIX: Final = GROUP
"""kopf keeps its handler progress in ``coordshard.io/*`` annotations of the CR."""
