"""Parse a CoordinateShards body into a frozen ``Spec``.

Pure: no kopf, no clients. The API server already validates the CR against
the CRD schema, but the operator re-checks what it relies on (and applies
the schema defaults itself), because a CR written before a schema change, or
served by a server that skips validation, must be refused here rather than
half-applied to NATS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from coordshard_client.naming import DEFAULT_STREAM, validate_name
from coordshard_client.subjects import (
    DEFAULT_PREFIX,
    DEFAULT_REPLY_PREFIX,
    MAX_BLOCKS,
    MAX_SHARDS,
    InvalidSubjectError,
    blocks_of,
    validate_prefix,
)
from coordshard_operator.kube.errors import InvalidSpecError
from coordshard_operator.rebalancer.lanes import LANE_BLOCKS

__all__ = ["SecretRef", "Spec", "check_immutable", "parse"]

DEFAULT_GRACE_SECONDS = 10
DEFAULT_ACK_WAIT_SECONDS = 30
DEFAULT_MAX_ACK_PENDING = 1000


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A key in a Secret of the CR's namespace."""

    name: str
    key: str


@dataclass(frozen=True, slots=True)
class Spec:
    """What one CoordinateShards asks for."""

    name: str
    """The CR's name; also the consumer group name."""
    namespace: str
    generation: int
    shards: int
    stream: str = DEFAULT_STREAM
    subject_prefix: str = DEFAULT_PREFIX
    reply_prefix: str = DEFAULT_REPLY_PREFIX
    """Replies go under ``<reply_prefix>.>``; the workers' ``COORDSHARD_REPLY_PREFIX``."""
    selector: Mapping[str, str] = field(default_factory=dict)
    nats_servers: tuple[str, ...] = ()
    """Empty: the operator's own default servers."""
    credentials: SecretRef | None = None
    nkey: SecretRef | None = None
    tls_secret: str | None = None
    grace_period_seconds: int = DEFAULT_GRACE_SECONDS
    ack_wait_seconds: int = DEFAULT_ACK_WAIT_SECONDS
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING
    lane_blocks: int = LANE_BLOCKS
    """The most block filters on one lane (``GroupConfig.lane_blocks``)."""
    pins: Mapping[int, str] = field(default_factory=dict)
    """Shard -> pod name."""

    @property
    def group(self) -> str:
        return self.name

    @property
    def label_selector(self) -> str:
        """The selector in the API's ``labelSelector`` query syntax."""
        return ",".join(f"{k}={v}" for k, v in sorted(self.selector.items()))


def _int(value: Any, *, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpecError(f"must be an integer, got {value!r}", field=field)
    if not lo <= value <= hi:
        raise InvalidSpecError(f"must be in {lo}..{hi}, got {value}", field=field)
    return value


def _obj(value: Any, *, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidSpecError(f"must be an object, got {value!r}", field=field)
    return value


def _secret(value: Any, *, field: str, default_key: str) -> SecretRef | None:
    if value is None:
        return None
    ref = _obj(value, field=field)
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidSpecError("needs a name", field=f"{field}.name")
    return SecretRef(name=name, key=str(ref.get("key") or default_key))


def _selector(value: Any) -> dict[str, str]:
    labels = _obj(_obj(value, field="selector").get("matchLabels"), field="selector.matchLabels")
    if not labels:
        raise InvalidSpecError("must name at least one label", field="selector.matchLabels")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise InvalidSpecError("labels map strings to strings", field="selector.matchLabels")
    return dict(labels)


def _pins(value: Any, *, shards: int) -> dict[int, str]:
    pins: dict[int, str] = {}
    for key, pod in _obj(value, field="pins").items():
        if not str(key).isdigit() or not isinstance(pod, str) or not pod:
            raise InvalidSpecError(f"{key!r}: {pod!r} is not shard -> pod", field="pins")
        shard = int(key)
        if shard >= shards:
            raise InvalidSpecError(f"shard {shard} is out of 0..{shards - 1}", field="pins")
        pins[shard] = pod
    return pins


def parse(body: Mapping[str, Any]) -> Spec:
    """The ``Spec`` of a CR body; raises ``InvalidSpecError`` naming the bad field."""
    meta = _obj(body.get("metadata"), field="metadata")
    name = str(meta.get("name") or "")
    try:
        validate_name(name, what="CR name")
    except ValueError as e:
        raise InvalidSpecError(str(e), field="metadata.name") from e
    raw = _obj(body.get("spec"), field="")
    if "shards" not in raw:
        raise InvalidSpecError("is required", field="shards")
    shards = _int(raw["shards"], field="shards", lo=1, hi=MAX_SHARDS)
    try:
        blocks_of(shards)  # the blocks layout's rule: K blocks, K dividing N, 256 <= K <= 512
    except ValueError as e:
        raise InvalidSpecError(str(e), field="shards") from e
    stream = str(raw.get("stream") or DEFAULT_STREAM)
    try:
        validate_name(stream, what="stream")
    except ValueError as e:
        raise InvalidSpecError(str(e), field="stream") from e
    prefix = str(raw.get("subjectPrefix") or DEFAULT_PREFIX)
    try:
        validate_prefix(prefix)
    except InvalidSubjectError as e:
        raise InvalidSpecError(str(e), field="subjectPrefix") from e
    reply_prefix = str(raw.get("replyPrefix") or DEFAULT_REPLY_PREFIX)
    try:
        validate_prefix(reply_prefix)
    except InvalidSubjectError as e:
        raise InvalidSpecError(str(e), field="replyPrefix") from e
    nats = _obj(raw.get("nats"), field="nats")
    servers = nats.get("servers") or []
    if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
        raise InvalidSpecError("must be a list of URLs", field="nats.servers")
    failover = _obj(raw.get("failover"), field="failover")
    consumer = _obj(raw.get("consumer"), field="consumer")
    tls = _obj(nats.get("tlsSecretRef"), field="nats.tlsSecretRef")
    return Spec(
        name=name,
        namespace=str(meta.get("namespace") or "default"),
        generation=int(meta.get("generation") or 0),
        shards=shards,
        stream=stream,
        subject_prefix=prefix,
        reply_prefix=reply_prefix,
        selector=_selector(raw.get("selector")),
        nats_servers=tuple(servers),
        credentials=_secret(
            nats.get("credentialsSecretRef"),
            field="nats.credentialsSecretRef",
            default_key="nats.creds",
        ),
        nkey=_secret(
            nats.get("nkeySecretRef"), field="nats.nkeySecretRef", default_key="nkey.seed"
        ),
        tls_secret=str(tls["name"]) if tls.get("name") else None,
        grace_period_seconds=_int(
            failover.get("gracePeriodSeconds", DEFAULT_GRACE_SECONDS),
            field="failover.gracePeriodSeconds",
            lo=0,
            hi=3600,
        ),
        ack_wait_seconds=_int(
            consumer.get("ackWaitSeconds", DEFAULT_ACK_WAIT_SECONDS),
            field="consumer.ackWaitSeconds",
            lo=1,
            hi=3600,
        ),
        max_ack_pending=_int(
            consumer.get("maxAckPending", DEFAULT_MAX_ACK_PENDING),
            field="consumer.maxAckPending",
            lo=1,
            hi=100_000,
        ),
        lane_blocks=_int(
            consumer.get("laneBlocks", LANE_BLOCKS),
            field="consumer.laneBlocks",
            lo=1,
            hi=MAX_BLOCKS,
        ),
        pins=_pins(raw.get("pins"), shards=shards),
    )


def check_immutable(applied_shards: int | None, new: Spec) -> None:
    """Refuse a change of ``spec.shards`` against the count in force (``status.shards``).

    The CRD's CEL rule refuses it at the API server already; this is the same
    rule for servers that do not evaluate CEL.
    """
    if applied_shards is not None and applied_shards != new.shards:
        raise InvalidSpecError(
            f"is immutable (in force: {applied_shards}, asked: {new.shards})", field="shards"
        )
