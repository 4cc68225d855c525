"""The worker's configuration: flags and ``COORDSHARD_*`` environment variables.

Read once in ``__main__`` and passed down; there is no global settings object.
In Kubernetes the pod name and UID come from the downward API
(``COORDSHARD_POD_NAME``, ``COORDSHARD_POD_UID``); together with the group
they give the member id that the rebalancer's consumers for this pod are named after.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coordshard_client import DEFAULT_PREFIX
from coordshard_client.messages import MAX_PAYLOAD_BYTES
from coordshard_client.naming import DEFAULT_GROUP, DEFAULT_STREAM, member_id
from coordshard_client.subjects import (
    DEFAULT_REPLY_PREFIX,
    DEFAULT_SHARDS,
    MAX_SHARDS,
    InvalidSubjectError,
    validate_prefix,
)

__all__ = ["ServiceSettings", "field_docs"]


class ServiceSettings(BaseSettings):
    """Everything a worker needs to know; each field is also ``--kebab-case`` on the CLI.

    The attribute docstrings are the fields' documentation and ``--help`` text
    (``field_docs``); pydantic is not asked to read them
    (``use_attribute_docstrings``), which parses this module's source at every
    import: ~45 ms of a worker's start (docs/benchmarks.md, spawn → Ready).
    """

    model_config = SettingsConfigDict(env_prefix="COORDSHARD_", frozen=True, extra="ignore")

    nats_url: str = "nats://127.0.0.1:4222"
    """Comma-separated NATS server URLs."""
    nats_creds: str | None = None
    """Path of a NATS ``.creds`` file (user JWT and nkey seed), e.g. a mounted Secret."""
    nats_nkey_seed: str | None = None
    """Path of a file holding an nkey user seed."""
    nats_tls_ca: str | None = None
    """Path of the PEM CA that signed the servers' certificates; turns TLS on."""
    nats_tls_cert: str | None = None
    """Path of a PEM client certificate, for servers that demand one (with nats_tls_key)."""
    nats_tls_key: str | None = None
    """Path of the PEM key of nats_tls_cert."""
    stream: str = DEFAULT_STREAM
    """The WorkQueue stream holding the commands."""
    group: str = DEFAULT_GROUP
    """The consumer group; part of the consumer name."""
    prefix: str = DEFAULT_PREFIX
    """The command subject prefix."""
    reply_prefix: str = DEFAULT_REPLY_PREFIX
    """Outcomes are published only to reply subjects under ``<reply_prefix>.>`` (default
    ``_INBOX``, nats-py's inbox prefix, which the SDK uses); a command whose reply
    header names anything else is dead-lettered, not answered. Set it to the
    ``inbox_prefix`` your gateways' NATS connections use."""
    shards: int = Field(default=DEFAULT_SHARDS, ge=1, le=MAX_SHARDS)
    """The shard count N; must equal the one clients and the rebalancer use."""
    pod_name: str = "worker-0"
    """This member's name (downward API ``metadata.name``)."""
    pod_uid: str = "local"
    """This incarnation's id (downward API ``metadata.uid``); a restart changes it."""
    database_url: str = Field(
        default="sqlite:///coordshard.db",
        pattern=r"^[A-Za-z][A-Za-z0-9+.\-]*://",  # <dialect>[+<driver>]://...
    )
    """SQLAlchemy URL of the store, shared by all workers of a group (SQLite WAL or PostgreSQL)."""
    store_idle_transaction_timeout: float = Field(default=10.0, ge=0)
    """PostgreSQL only: seconds a session may sit idle inside a transaction before the
    server ends it (0 never). Bounds how long a worker frozen mid-transaction keeps its
    shards' rows locked from their new owner."""
    batch_size: int = Field(default=256, ge=1, le=10_000)
    """Messages per fetch."""
    fetch_timeout: float = Field(default=0.05, gt=0)
    """Seconds a fetch waits for messages; default 0.05. A pull already waiting when the
    rebalancer hands this worker new shards is answered only when it expires, so this
    bounds failover latency (0.5 s put the local kill-to-answer p99 at ~520 ms, 0.1 s at
    ~160 ms). It also bounds how fast SIGTERM is noticed. Idle cost: one empty pull per
    period (consumer re-reads on empty pulls are limited to 4 a second)."""
    stall_timeout: float = Field(default=30.0, gt=0)
    """Seconds the serving loop may be stuck (no batch settled while the consumer has
    messages for us, no answer about our consumer, or the loop not coming round) before
    /readyz says 503, so the rebalancer's grace period moves our shards; at twice this
    /healthz says 503 too, so a liveness probe restarts the process. Must exceed the
    longest a healthy batch takes (default 30 s: a batch of 256 on a slow store is well
    under a second; an ack is retried for at most a few seconds)."""
    bind_poll: float = Field(default=5.0, gt=0)
    """Seconds between looks for our consumers while none exists (12 times that while we
    serve lanes, and after each reconnect), besides each consumer-created advisory of the
    stream (the one that tells us at once); default 5. The look on a timer only catches
    an advisory missed while disconnected."""
    max_payload: int = Field(default=MAX_PAYLOAD_BYTES, ge=256)
    """Largest accepted payload in bytes; bigger messages are dead-lettered."""
    cache_size: int = Field(default=200_000, ge=0)
    """Most systems + points held in the per-pod LRU cache (0 disables it)."""
    outcome_retention: float = Field(default=86_400.0, gt=0)
    """Seconds a command's stored outcome is kept for retries and redeliveries (default a day).

    Must exceed the longest a client may retry and the stream's duplicate window."""
    prune_interval: float = Field(default=300.0, gt=0)
    """Seconds between deletions of outcomes older than ``outcome_retention``."""
    http_host: str = "0.0.0.0"
    """Address of the /healthz, /readyz and /metrics server."""
    http_port: int = Field(default=8080, ge=0, le=65535)
    """Port of the HTTP server; 0 picks a free one (logged), -1 is not allowed."""
    http_enabled: bool = True
    """Serve /healthz, /readyz and /metrics."""
    uvloop: bool = True
    """Run on uvloop when it is installed (the service extra installs it): ~8% less worker
    CPU per command than asyncio's own loop (docs/benchmarks.md)."""
    parent_pid: int | None = Field(default=None, ge=1)
    """Stop (as on SIGTERM) once this process is no longer our parent: local mode's
    supervisor sets it, so a worker does not outlive a ``coordshard up`` killed with -9."""
    log_level: str = "INFO"
    """Python logging level name."""
    log_json: bool = False
    """Log one JSON object per line instead of key=value text."""

    @model_validator(mode="after")
    def _reply_prefix(self) -> Self:
        try:
            validate_prefix(self.reply_prefix)
        except InvalidSubjectError as e:
            raise ValueError(f"reply_prefix: {e}") from e
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if bool(self.nats_tls_cert) != bool(self.nats_tls_key):
            raise ValueError("nats_tls_cert and nats_tls_key go together: give both or neither")
        return self

    @property
    def member_id(self) -> str:
        """This incarnation's member id: the stem of the consumers the rebalancer makes for
        it (``<member id>_g<generation>``, a new generation after every fence)."""
        return member_id(group=self.group, member=self.pod_name, incarnation=self.pod_uid)

    @property
    def servers(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]


def field_docs() -> dict[str, str]:
    """Each field's attribute docstring, read from the source (for ``--help``)."""
    import ast
    import inspect
    import textwrap

    (cls,) = ast.parse(textwrap.dedent(inspect.getsource(ServiceSettings))).body
    assert isinstance(cls, ast.ClassDef)
    docs = {}
    for node, after in zip(cls.body, cls.body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs
