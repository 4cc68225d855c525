"""The operator's shared state for one run: pods seen, wake-ups, NATS and engines.

Made once by the startup handler and kept in kopf's ``memo``, never in module
globals. Pods arrive through the pod event handler; every CR's daemon is woken
when a pod of its namespace changes, so a crash is handled within one
debounce interval, not at the next resync.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from coordshard_operator.errors import InvalidSpecError, NatsUnavailableError
from coordshard_operator.handoff import Engine, GroupConfig
from coordshard_operator.metrics import OperatorMetrics
from coordshard_operator.observe import PodState, pod_state
from coordshard_operator.settings import OperatorSettings
from coordshard_operator.spec import Spec

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

PodKey = tuple[str, str]
CrKey = tuple[str, str]


def _refuse_secrets(spec: Spec) -> None:
    """Secret-based NATS credentials are in the CRD but not read yet: say so, do not
    connect without them (that would fail later with a less useful error)."""
    for field_name, ref in (
        ("nats.credentialsSecretRef", spec.credentials),
        ("nats.nkeySecretRef", spec.nkey),
        ("nats.tlsSecretRef", spec.tls_secret),
    ):
        if ref is not None:
            raise InvalidSpecError(
                "is not supported by this operator version yet", field=field_name
            )


@dataclass
class Runtime:
    settings: OperatorSettings
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    pods: dict[PodKey, PodState] = field(default_factory=dict)
    wakers: dict[CrKey, asyncio.Event] = field(default_factory=dict)
    connections: dict[tuple[str, ...], Client] = field(default_factory=dict)
    engines: dict[tuple[Any, ...], Engine] = field(default_factory=dict)
    streams: dict[tuple[tuple[str, ...], str], CrKey] = field(default_factory=dict)
    """(NATS servers, stream) -> the CR that owns it: a work-queue stream takes one group."""

    # --- pods ----------------------------------------------------------------

    def pod_event(self, kind: str | None, body: dict[str, Any]) -> None:
        """Record a pod watch event and wake the CRs of its namespace."""
        pod = pod_state(body)
        key = (pod.namespace, pod.name)
        if kind == "DELETED":
            self.pods.pop(key, None)
        else:
            self.pods[key] = pod
        for (ns, _), event in self.wakers.items():
            if ns == pod.namespace:
                event.set()

    def pods_in(self, namespace: str) -> Iterable[PodState]:
        return [p for (ns, _), p in self.pods.items() if ns == namespace]

    def waker(self, namespace: str, name: str) -> asyncio.Event:
        return self.wakers.setdefault((namespace, name), asyncio.Event())

    def forget(self, namespace: str, name: str) -> None:
        self.wakers.pop((namespace, name), None)
        for key, owner in list(self.streams.items()):
            if owner == (namespace, name):
                del self.streams[key]

    def claim_stream(self, spec: Spec) -> None:
        """Refuse a second CR on a stream another CR uses (their filters would overlap)."""
        key = (spec.nats_servers, spec.stream)
        owner = self.streams.setdefault(key, (spec.namespace, spec.name))
        if owner != (spec.namespace, spec.name):
            raise InvalidSpecError(
                f"stream {spec.stream} is used by CoordinateShards {owner[0]}/{owner[1]}; "
                "give each CoordinateShards its own stream",
                field="stream",
            )

    # --- NATS ----------------------------------------------------------------

    async def connection(self, servers: tuple[str, ...]) -> Client:
        servers = servers or tuple(s.strip() for s in self.settings.nats_servers.split(","))
        client = self.connections.get(servers)
        if client is not None and client.is_connected:
            return client
        try:
            client = await nats.connect(
                servers=list(servers), connect_timeout=2, max_reconnect_attempts=-1
            )
        except (NatsError, OSError, TimeoutError) as e:
            raise NatsUnavailableError(f"connecting to {', '.join(servers)}: {e}") from e
        self.connections[servers] = client
        return client

    async def engine(self, spec: Spec) -> Engine:
        """The engine of ``spec``'s group, its stream ensured (made once per config)."""
        _refuse_secrets(spec)
        self.claim_stream(spec)
        config = GroupConfig(
            stream=spec.stream,
            subject_prefix=spec.subject_prefix,
            group=spec.group,
            shards=spec.shards,
            replicas=self.settings.stream_replicas,
            ack_wait_s=float(spec.ack_wait_seconds),
            max_ack_pending=spec.max_ack_pending,
        )
        key = (spec.nats_servers, config)
        engine = self.engines.get(key)
        if engine is None:
            client = await self.connection(spec.nats_servers)
            engine = Engine(client.jetstream(), config)
            await engine.ensure_stream()
            self.engines[key] = engine
        return engine

    async def close(self) -> None:
        for client in self.connections.values():
            if not client.is_closed:
                await client.close()
        self.connections.clear()
        self.engines.clear()
