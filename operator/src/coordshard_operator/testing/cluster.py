"""A pretend cluster around the API-server double: the kubelet's part, and the operator process.

``Cluster`` creates pods and CoordinateShards in the double and flips pods
Ready or NotReady, as a kubelet would; ``OperatorProcess`` runs the real
``coordshard operator`` against the double as a subprocess (stopped by its
PID). Shared by the tests and by ``coordshard bench operator``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.js.api import ConsumerInfo

from coordshard_client.naming import member_id
from coordshard_operator.kube import crd
from coordshard_operator.rebalancer.handoff import META_GROUP, META_INCARNATION, META_MEMBER
from coordshard_operator.testing.apiserver import ApiServer, ResourceType
from coordshard_operator.testing.clusterview import ClusterView

__all__ = ["NODE", "Cluster", "OperatorProcess", "member_of", "wait_until"]

NODE = "node-0"
"""The node every pod of a ``Cluster`` is bound to (the double has no scheduler)."""


def member_of(info: ConsumerInfo) -> str:
    """The member id a consumer of the engine's was made for (from its metadata)."""
    meta = info.config.metadata or {}
    return member_id(
        group=meta[META_GROUP], member=meta[META_MEMBER], incarnation=meta[META_INCARNATION]
    )


async def wait_until(check: Callable[[], Any], *, timeout: float = 15, what: str = "") -> Any:
    """Poll ``check`` (sync or async) until it is truthy; AssertionError past ``timeout``.

    A deadline on a condition, not a sleep standing in for synchronisation.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.02)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _container(ready: bool, restarts: int) -> dict[str, Any]:
    """A worker container's status as a kubelet reports it."""
    return {
        "name": "worker",
        "ready": ready,
        "restartCount": restarts,
        "containerID": f"containerd://{uuid.uuid4().hex}",
        "state": {"running": {"startedAt": _now()}},
    }


class Cluster(ClusterView):
    """Pods and CRs of one namespace in the double."""

    def __init__(self, api: ApiServer, *, namespace: str = "ns") -> None:
        self.api = api
        self.namespace = namespace
        self.pods: ResourceType = api.find_type("", "pods")
        self.crs: ResourceType = api.find_type(crd.GROUP, crd.PLURAL)
        api.add_namespace(namespace)

    def add_pod(self, name: str, *, app: str = "w", ready: bool = True) -> dict[str, Any]:
        """A pod already scheduled onto ``NODE`` and started, as a kubelet reports it."""
        body = {
            "metadata": {"name": name, "labels": {"app": app, crd.LABEL_WORKER: "true"}},
            "spec": {"nodeName": NODE},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": str(ready), "lastTransitionTime": _now()}
                ],
                "containerStatuses": [_container(ready=ready, restarts=0)],
            },
        }
        return self.api.create(self.pods, self.namespace, body)

    def restart_container(self, name: str, *, ready: bool = True) -> None:
        """What a kubelet does when the worker container crashes and is restarted in the
        same pod: same uid, ``restartCount`` + 1, a new container ID, Ready again."""
        pod = self.api.get(self.pods, self.namespace, name)
        statuses = pod.get("status", {}).get("containerStatuses") or [_container(True, 0)]
        restarts = int(statuses[0].get("restartCount") or 0) + 1
        cond = {"type": "Ready", "status": str(ready), "lastTransitionTime": _now()}
        patch = {
            "status": {
                "conditions": [cond],
                "containerStatuses": [_container(ready=ready, restarts=restarts)],
            }
        }
        self.api.patch(self.pods, self.namespace, name, patch, status=True)

    def set_ready(self, name: str, ready: bool) -> None:
        cond = {"type": "Ready", "status": str(ready), "lastTransitionTime": _now()}
        self.api.patch(
            self.pods, self.namespace, name, {"status": {"conditions": [cond]}}, status=True
        )

    def pod(self, name: str) -> dict[str, Any]:
        return self.api.get(self.pods, self.namespace, name)

    def terminate_pod(self, name: str) -> None:
        """Delete the pod and leave it Terminating (its kubelet never confirms)."""
        self.api.delete(self.pods, self.namespace, name)

    def delete_pod(self, name: str) -> None:
        """Delete the pod, its kubelet confirming at once (grace 0): it is gone."""
        self.api.delete(self.pods, self.namespace, name, grace_period=0)

    def put_secret(self, name: str, data: Mapping[str, bytes]) -> None:
        """Create the Secret, or replace its data (a new resourceVersion)."""
        secrets = self.api.find_type("", "secrets")
        encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
        if any(o["metadata"]["name"] == name for o in self.api.list(secrets, self.namespace)):
            self.api.patch(secrets, self.namespace, name, {"data": encoded})
        else:
            self.api.create(secrets, self.namespace, {"metadata": {"name": name}, "data": encoded})

    def delete_secret(self, name: str) -> None:
        self.api.delete(self.api.find_type("", "secrets"), self.namespace, name)

    def add_cr(
        self, name: str = "orders", *, shards: int = 8, grace: int = 0, app: str = "w", **spec: Any
    ) -> dict[str, Any]:
        body = {
            "metadata": {"name": name},
            "spec": {
                "shards": shards,
                "selector": {"matchLabels": {"app": app}},
                "failover": {"gracePeriodSeconds": grace},
                **spec,
            },
        }
        return self.api.create(self.crs, self.namespace, body)

    def cr(self, name: str = "orders") -> dict[str, Any]:
        return self.api.get(self.crs, self.namespace, name)

    def patch_cr(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of the CR, as ``kubectl patch --type=merge`` sends it."""
        return self.api.patch(self.crs, self.namespace, name, patch)

    def delete_cr(self, name: str = "orders") -> None:
        """Delete the CR (the operator's finalizer holds it until its consumers are gone)."""
        self.api.delete(self.crs, self.namespace, name)

    def has_cr(self, name: str = "orders") -> bool:
        return any(o["metadata"]["name"] == name for o in self.api.list(self.crs, self.namespace))

    def all_events(self) -> list[dict[str, Any]]:
        return self.api.list(self.api.find_type("", "events"), self.namespace)


class OperatorProcess:
    """``coordshard operator`` against the double, as a subprocess."""

    def __init__(
        self,
        *,
        api_url: str,
        nats_url: str,
        log: Path,
        namespaces: tuple[str, ...] = ("ns",),
        args: tuple[str, ...] = ("--standalone",),
        env: Mapping[str, str] | None = None,
    ) -> None:
        full_env = {
            **os.environ,
            "COORDSHARD_KUBE_SERVER": api_url,
            "COORDSHARD_NATS_SERVERS": nats_url,
            "COORDSHARD_RESYNC_SECONDS": "5",
            **(env or {}),
        }
        ns_args = [f"--namespace={ns}" for ns in namespaces]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "coordshard_operator", "operator", *args, *ns_args],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, *, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL past ``timeout``."""
        if not self.running():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def rss_bytes(self) -> int:
        """Resident set size now (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")
