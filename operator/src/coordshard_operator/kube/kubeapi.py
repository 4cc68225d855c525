"""The operator's own calls to the API server: the CR's status, and Secrets.

kopf applies handler patches only when a handler returns; the rebalancing
daemon runs for the CR's lifetime, so it writes status itself, with the
credentials kopf logged in with (captured by the login handler). One
merge-patch to ``/status`` per *changed* status; nothing per tick. The same
client reads the Secrets a CR's ``spec.nats`` names (``get`` only, in the
CR's namespace); their data is handed over decoded and never logged.
"""

from __future__ import annotations

import base64
import binascii
import ssl
from collections.abc import Mapping
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


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    if not (info.ca_path or info.ca_data or info.certificate_path):
        return True
    ctx = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data,
    )
    if info.certificate_path and info.private_key_path:
        ctx.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    return ctx


class KubeApi:
    """Merge-patches ``coordinateshards/{name}/status``; gets ``secrets/{name}``."""

    def __init__(self, info: kopf.ConnectionInfo) -> None:
        headers: dict[str, str] = {}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        self._base = info.server.rstrip("/")
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info)),
            timeout=aiohttp.ClientTimeout(total=10),
        )

    async def close(self) -> None:
        await self._session.close()

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
        url = (
            f"{self._base}/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/"
            f"{crd.PLURAL}/{name}/status"
        )
        try:
            async with self._session.patch(
                url,
                json={"status": merge_diff(previous, status)},
                headers={"Content-Type": "application/merge-patch+json"},
            ) as r:
                if r.status == 404:
                    return False
                if r.status >= 400:
                    raise TransientError(f"patching status of {namespace}/{name}: {r.status}")
                return True
        except aiohttp.ClientError as e:
            raise TransientError(f"patching status of {namespace}/{name}: {e}") from e

    async def get_secret(self, namespace: str, name: str) -> Secret:
        """The Secret, decoded; SecretUnavailableError when missing or forbidden."""
        where = f"Secret {namespace}/{name}"
        url = f"{self._base}/api/v1/namespaces/{namespace}/{crd.SECRETS}/{name}"
        try:
            async with self._session.get(url) as r:
                if r.status in (403, 404):
                    why = "not found" if r.status == 404 else "forbidden (RBAC: get secrets)"
                    raise SecretUnavailableError(f"{where}: {why}", delay=2)
                if r.status >= 400:
                    raise TransientError(f"reading {where}: {r.status}")
                body = await r.json()
        except aiohttp.ClientError as e:
            raise TransientError(f"reading {where}: {e}") from e
        try:
            data = {k: base64.b64decode(v) for k, v in (body.get("data") or {}).items()}
        except (binascii.Error, TypeError) as e:
            raise SecretUnavailableError(f"{where}: data is not base64") from e
        rv = str((body.get("metadata") or {}).get("resourceVersion") or "")
        return Secret(namespace=namespace, name=name, resource_version=rv, data=data)
