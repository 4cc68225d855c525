"""The operator's shared state for one run: pods seen, wake-ups, NATS and engines.

Made once by the startup handler and kept in kopf's ``memo``, never in module
globals. Pods arrive through the pod event handler; every CR's daemon is woken
when a pod of its namespace changes, so a crash is handled within one
debounce interval, not at the next resync. A CR's NATS credentials come from
its Secrets (``natsauth``); connections are keyed by servers and the Secrets'
identity, so a changed Secret opens a new connection and closes the old one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError

from coordshard_operator.kube.errors import InvalidSpecError, NatsAuthError
from coordshard_operator.kube.metrics import OperatorMetrics
from coordshard_operator.kube.natsauth import NO_AUTH, NatsAuth, SecretReader, load
from coordshard_operator.kube.pods import PodState, pod_state
from coordshard_operator.kube.settings import OperatorSettings
from coordshard_operator.kube.spec import Spec
from coordshard_operator.rebalancer.errors import NatsUnavailableError
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

_CONNECT_DEADLINE_S = 5.0
"""How long one reconcile waits for a first NATS connection before reporting why not."""


def _refused_credentials(error: BaseException) -> bool:
    """NATS said no to the credentials (nats-py reports it as a plain Error at connect)."""
    return isinstance(error, AuthorizationError) or "authorization" in str(error).lower()


PodKey = tuple[str, str]
CrKey = tuple[str, str]


@dataclass
class Runtime:
    settings: OperatorSettings
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    pods: dict[PodKey, PodState] = field(default_factory=dict)
    pod_versions: dict[PodKey, int] = field(default_factory=dict)
    """The resourceVersion each cached pod was last seen at (see ``prune_pods``)."""
    wakers: dict[CrKey, asyncio.Event] = field(default_factory=dict)
    connections: dict[tuple[tuple[str, ...], tuple[str, ...]], Client] = field(default_factory=dict)
    """(servers, auth identity) -> client."""
    connecting: dict[tuple[tuple[str, ...], tuple[str, ...]], asyncio.Lock] = field(
        default_factory=dict
    )
    """(servers, auth identity) -> the lock one connect at a time holds (``connection``)."""
    auth_of: dict[CrKey, tuple[str, ...]] = field(default_factory=dict)
    """The auth identity each CR last connected with."""
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
            self.pod_versions.pop(key, None)
        else:
            self.pods[key] = pod
            version = str((body.get("metadata") or {}).get("resourceVersion") or "")
            self.pod_versions[key] = int(version) if version.isdigit() else 0
        self._wake(pod.namespace)

    def _wake(self, namespace: str) -> None:
        for (ns, _), event in self.wakers.items():
            if ns == namespace:
                event.set()

    def prune_pods(self, namespace: str, *, listed: Iterable[str], list_version: str) -> list[str]:
        """Forget the cached pods of ``namespace`` that a list at ``list_version`` no longer
        holds and that were last seen before it; returns their names.

        Why: after its watch is told 410 Gone (an API server restart, a long outage)
        kopf lists again and replays what exists, but never reports what was deleted
        meanwhile; such a pod would stay a member for ever. A pod seen after the list
        (a newer resourceVersion) is kept: the list is older than what we know.
        """
        if not list_version.isdigit():
            return []
        present, at = set(listed), int(list_version)
        ghosts = [
            key
            for key in self.pods
            if key[0] == namespace and key[1] not in present and self.pod_versions.get(key, 0) < at
        ]
        for key in ghosts:
            del self.pods[key]
            self.pod_versions.pop(key, None)
        if ghosts:
            self._wake(namespace)
        return [name for _, name in ghosts]

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

    async def connection(self, servers: tuple[str, ...], auth: NatsAuth = NO_AUTH) -> Client:
        """The one client for ``servers`` under ``auth``, connected now if it is not.

        One connect at a time per key: CRs whose daemons start together (an
        operator starting, or resumed by peering) would otherwise each connect
        and the one stored last would replace the others unclosed; their
        tasks then outlive the cleanup handler and kopf waits 5 s for them at
        exit. A client replaced because it lost its connection is closed (it
        would go on reconnecting for ever).
        """
        servers = servers or tuple(s.strip() for s in self.settings.nats_servers.split(","))
        key = (servers, auth.identity)
        async with self.connecting.setdefault(key, asyncio.Lock()):
            client = self.connections.get(key)
            if client is not None and client.is_connected:
                return client
            fresh = await self._connect(servers, auth)
            self.connections[key] = fresh
            if client is not None and not client.is_closed:
                await client.close()
            return fresh

    async def _connect(self, servers: tuple[str, ...], auth: NatsAuth) -> Client:
        """A new connected client; closed again when it fails or the caller is cancelled."""
        where = ", ".join(servers)
        client = Client()
        last_error: list[Exception] = []
        refused = asyncio.Event()

        async def on_error(e: Exception) -> None:
            # nats-py retries the first connect forever (max_reconnect_attempts=-1):
            # keep the latest failure to say why; refused credentials end the wait.
            last_error[:] = [e]
            if _refused_credentials(e):
                refused.set()
            logger.warning("NATS %s: %s", where, e)

        connecting = asyncio.ensure_future(
            client.connect(
                servers=list(servers),
                connect_timeout=2,
                max_reconnect_attempts=-1,
                error_cb=on_error,
                **auth.options,
            )
        )
        waiting = asyncio.ensure_future(refused.wait())
        try:
            await asyncio.wait(
                (connecting, waiting),
                timeout=_CONNECT_DEADLINE_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            # The daemon is stopping: the connect must not go on (and succeed) unowned.
            connecting.cancel()
            await asyncio.shield(client.close())
            raise
        finally:
            waiting.cancel()
        failure: BaseException | None = None
        if not connecting.done():
            connecting.cancel()
            failure = TimeoutError(f"no connection in {_CONNECT_DEADLINE_S} s")
        elif connecting.cancelled():
            failure = TimeoutError("cancelled")
        else:
            failure = connecting.exception()
        if failure is not None:
            await client.close()
            cause = last_error[0] if last_error else failure
            if _refused_credentials(cause):
                raise NatsAuthError(
                    f"{where} refused the credentials of spec.nats", delay=2
                ) from failure
            if not isinstance(failure, (NatsError, OSError, TimeoutError, ssl.SSLError)):
                raise failure
            raise NatsUnavailableError(f"connecting to {where}: {cause}") from failure
        return client

    async def _switch_auth(self, cr: CrKey, identity: tuple[str, ...]) -> None:
        """Forget (and close) what ``cr`` used under older Secrets no other CR uses."""
        old = self.auth_of.get(cr)
        self.auth_of[cr] = identity
        if old is None or old == identity or old in self.auth_of.values():
            return
        for key in [k for k in self.engines if k[1] == old]:
            del self.engines[key]
        for key in [k for k in self.connections if k[1] == old]:
            client = self.connections.pop(key)
            if not client.is_closed:
                await client.close()

    async def engine(self, spec: Spec, *, secrets: SecretReader | None = None) -> Engine:
        """The engine of ``spec``'s group, its stream ensured (made once per config).

        ``secrets`` reads the Secrets ``spec.nats`` names (needed when it names any).
        """
        if secrets is None:
            auth = NO_AUTH
            if spec.credentials or spec.nkey or spec.tls_secret:
                raise InvalidSpecError("Secret refs need API access", field="nats")
        else:
            auth = await load(spec, secrets)
        await self._switch_auth((spec.namespace, spec.name), auth.identity)
        self.claim_stream(spec)
        config = GroupConfig(
            stream=spec.stream,
            subject_prefix=spec.subject_prefix,
            group=spec.group,
            shards=spec.shards,
            replicas=self.settings.stream_replicas,
            ack_wait_s=float(spec.ack_wait_seconds),
            max_ack_pending=spec.max_ack_pending,
            lane_blocks=spec.lane_blocks,
        )
        key = (spec.nats_servers, auth.identity, config)
        engine = self.engines.get(key)
        if engine is None:
            client = await self.connection(spec.nats_servers, auth)
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
