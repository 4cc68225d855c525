"""The operator's own calls to the API server: the CR's status, Secrets, a pod list.

kopf applies handler patches only when a handler returns; the rebalancing
daemon runs for the CR's lifetime, so it writes status itself, with the
credentials kopf logged in with (captured by the login handler). One
merge-patch to ``/status`` per *changed* status; nothing per tick. The same
client reads the Secrets a CR's ``spec.nats`` names (``get`` only, in the
CR's namespace); their data is handed over decoded and never logged. The
worker pods of a namespace are listed now and then (``list_pod_names``) so
that a pod deleted while the watch could not resume is not a member for ever.

The connection is kopf's own reading of those credentials:
``ConnectionInfo.as_ssl_context()`` (CA and client certificate, from paths
or the kubeconfig's base64 ``*-data`` fields) and ``as_http_headers()``
(bearer token or basic auth), so whatever kopf can log in with, this client
can use too; there is no second parser of kubeconfigs here. When kopf logs
in again (it does after a 401), the login handler stores the new
credentials and the next request opens a session with them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import kopf

from coordshard_operator.kube import crd
from coordshard_operator.kube.errors import SecretUnavailableError
from coordshard_operator.kube.natsauth import Secret
from coordshard_operator.rebalancer.errors import TransientError

__all__ = ["KubeApi", "merge_diff"]


def merge_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 merge patch that turns ``old`` into ``new`` (null removes a key)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_diff(before, value)
            if sub:
                patch[key] = sub
        elif value != before or key not in old:
            patch[key] = value
    return patch


def _open(info: kopf.ConnectionInfo) -> aiohttp.ClientSession:
    """A session as kopf's own: its SSL context, its Authorization header, its proxy."""
    return aiohttp.ClientSession(
        headers=info.as_http_headers(),
        connector=aiohttp.TCPConnector(ssl=info.as_ssl_context()),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        timeout=aiohttp.ClientTimeout(total=10),
    )


def _refused(status: int, doing: str) -> TransientError:
    if status == 401:
        return TransientError(
            f"{doing}: 401 Unauthorized (the API server refused the operator's credentials; "
            "kopf logs in again)"
        )
    return TransientError(f"{doing}: {status}")


class KubeApi:
    """Merge-patches ``coordinateshards/{name}/status``; gets ``secrets/{name}``.

    ``credentials`` gives the current login (called per request, it is cheap);
    a different object than last time replaces the session.
    """

    def __init__(self, credentials: Callable[[], kopf.ConnectionInfo]) -> None:
        self._credentials = credentials
        self._current: tuple[kopf.ConnectionInfo, aiohttp.ClientSession] | None = None

    async def _session(self) -> tuple[str, aiohttp.ClientSession]:
        """The server's base URL and a session logged in as kopf currently is."""
        info = self._credentials()
        old = self._current
        if old is not None and old[0] is info:
            return info.server.rstrip("/"), old[1]
        session = _open(info)
        self._current = (info, session)  # swapped before awaiting: concurrent callers share it
        if old is not None:
            await old[1].close()
        return info.server.rstrip("/"), session

    async def close(self) -> None:
        if self._current is not None:
            await self._current[1].close()
            self._current = None

    async def patch_status(
        self,
        *,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        previous: Mapping[str, Any],
    ) -> bool:
        """Turn ``previous`` into ``status``; False when the CR is gone (404).

        Raises TransientError for any other failure.
        """
        base, session = await self._session()
        url = (
            f"{base}/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/"
            f"{crd.PLURAL}/{name}/status"
        )
        try:
            async with session.patch(
                url,
                json={"status": merge_diff(previous, status)},
                headers={"Content-Type": "application/merge-patch+json"},
            ) as r:
                if r.status == 404:
                    return False
                if r.status >= 400:
                    raise _refused(r.status, f"patching status of {namespace}/{name}")
                return True
        except aiohttp.ClientError as e:
            raise TransientError(f"patching status of {namespace}/{name}: {e}") from e

    async def list_pod_names(self, namespace: str) -> tuple[list[str], str]:
        """The worker pods of ``namespace`` (``crd.LABEL_WORKER``) and the list's
        resourceVersion. Raises TransientError on any failure."""
        base, session = await self._session()
        url = f"{base}/api/v1/namespaces/{namespace}/pods"
        try:
            async with session.get(url, params={"labelSelector": crd.LABEL_WORKER}) as r:
                if r.status >= 400:
                    raise _refused(r.status, f"listing pods of {namespace}")
                body = await r.json()
        except aiohttp.ClientError as e:
            raise TransientError(f"listing pods of {namespace}: {e}") from e
        names = [str(p["metadata"]["name"]) for p in body.get("items") or []]
        return names, str((body.get("metadata") or {}).get("resourceVersion") or "")

    async def get_secret(self, namespace: str, name: str) -> Secret:
        """The Secret, decoded; SecretUnavailableError when missing or forbidden."""
        where = f"Secret {namespace}/{name}"
        base, session = await self._session()
        url = f"{base}/api/v1/namespaces/{namespace}/{crd.SECRETS}/{name}"
        try:
            async with session.get(url) as r:
                if r.status in (403, 404):
                    why = "not found" if r.status == 404 else "forbidden (RBAC: get secrets)"
                    raise SecretUnavailableError(f"{where}: {why}", delay=2)
                if r.status >= 400:
                    raise _refused(r.status, f"reading {where}")
                body = await r.json()
        except aiohttp.ClientError as e:
            raise TransientError(f"reading {where}: {e}") from e
        try:
            data = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
        except (binascii.Error, TypeError) as e:
            raise SecretUnavailableError(f"{where}: data is not base64") from e
        rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        return Secret(namespace=namespace, name=name, resource_version=rv, data=data)
