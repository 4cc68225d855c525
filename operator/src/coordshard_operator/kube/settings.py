"""The operator's settings, read once from ``COORDSHARD_*`` environment variables.

Read in the kopf startup handler and passed down (in ``memo``); there is no
global settings object.
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["OperatorSettings"]


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COORDSHARD_", frozen=True)

    nats_servers: str = "nats://nats:4222"
    """Comma-separated NATS URLs for CRs that name none; default ``nats://nats:4222``."""
    stream_replicas: int = 1
    """Replicas of a stream the operator creates (1, 3 or 5); default 1."""
    kube_server: str = ""
    """API server URL without credentials (``kubectl proxy``, tests); default: in-cluster
    service account, else kubeconfig."""
    resync_seconds: float = 30.0
    """Periodic level-based reconcile of every CR, seconds; default 30."""
    debounce_seconds: float = 0.02
    """How long a reconcile waits after a pod change to collect a burst, seconds; default 0.02."""
    watch_server_timeout: int = 60
    """Server-side watch timeout (integer seconds, kopf sends it as text); default 60."""
    watch_client_timeout: int = 90
    """Client-side watch timeout (integer seconds); default 90."""
    peering_lifetime: int = 60
    """Seconds a silent peer counts as alive (kopf peering; a standby takes over after it,
    integer); default 60."""
    release_timeout_seconds: float = 300.0
    """How long deleting a CR retries removing its consumers while NATS or its Secret
    cannot be reached; after that the CR goes and the consumers stay, with a Warning
    Event (-1: retry for ever); default 300."""
    metrics_port: int = 0
    """Port of the Prometheus /metrics endpoint; 0 = none; default 0."""
