"""A small synchronous client of a real kube-apiserver, for the harness and its tests.

Owns ``KubeRest`` (one identity, one server: JSON in, ``(status, body)`` out)
and ``write_kubeconfig``/``read_kubeconfig`` (credentials inline, as
``*-data`` fields, so a kubeconfig is one self-contained file). Why not the
``kubernetes`` package: the harness plays the kubelet and the scheduler with a
handful of verbs, and a test must see the server's answer (status code and
``Status`` body) unchanged, not an exception type the client chose. The
operator itself never uses this: it logs in through kopf.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import tempfile
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from coordshard_operator.testing.certs import Issued

__all__ = ["KubeRest", "KubeRestError", "read_kubeconfig", "write_kubeconfig"]

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class KubeRestError(Exception):
    """A request the API server answered with an error (``status`` is the HTTP code)."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path}: {status} {message}")
        self.status, self.body = status, body


def _context(ca: bytes, cert: Issued | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca.decode())
    if cert is not None:
        with tempfile.TemporaryDirectory() as tmp:  # ssl loads a key pair from files only
            crt, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            crt.write_bytes(cert.cert)
            key.write_bytes(cert.key)
            ctx.load_cert_chain(crt, key)
    return ctx


class KubeRest:
    """Requests to ``server`` as one identity: a client certificate or a bearer token."""

    def __init__(
        self,
        server: str,
        *,
        ca: bytes,
        cert: Issued | None = None,
        token: str | None = None,
        timeout: float = 10,
    ) -> None:
        url = urllib.parse.urlsplit(server)
        if url.scheme != "https" or url.hostname is None or url.port is None:
            raise ValueError(f"need https://host:port, not {server!r}")
        self.server, self.ca, self.cert, self.token = server, ca, cert, token
        self._host, self._port, self._timeout = url.hostname, url.port, timeout
        self._ssl = _context(ca, cert)
        self._resources: dict[tuple[str, str], tuple[str, bool]] = {}

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeRest:
        server, ca, cert, token = read_kubeconfig(path)
        return cls(server, ca=ca, cert=cert, token=token)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One request; the status code and the decoded JSON body (text if not JSON)."""
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        target = path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        conn = http.client.HTTPSConnection(
            self._host, self._port, context=self._ssl, timeout=self._timeout
        )
        try:
            conn.request(method, target, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return response.status, raw.decode(errors="replace")

    def call(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """``request``, raising KubeRestError for any status of 400 and above."""
        status, answer = self.request(method, path, body, **kw)
        if status >= 400:
            raise KubeRestError(method, path, status, answer)
        return answer

    def get(self, path: str) -> Obj:
        obj: Obj = self.call("GET", path)
        return obj

    def create(self, path: str, body: Obj) -> Obj:
        obj: Obj = self.call("POST", path, body)
        return obj

    def patch(self, path: str, patch: Obj) -> Obj:
        obj: Obj = self.call("PATCH", path, patch, content_type=MERGE_PATCH)
        return obj

    def delete(self, path: str, **options: Any) -> Any:
        """DELETE with ``options`` as the DeleteOptions body (e.g. gracePeriodSeconds=0)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **options} if options else None
        return self.call("DELETE", path, body)

    def path_of(self, obj: Mapping[str, Any], *, name: bool = True) -> str:
        """The URL path of ``obj`` (its collection with ``name=False``), found through
        discovery as kubectl does: kind -> plural, and whether it is namespaced."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        if (api_version, kind) not in self._resources:
            listing = self.get(
                f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            )
            for r in listing["resources"]:
                if "/" not in r["name"]:
                    self._resources[(api_version, r["kind"])] = (r["name"], r["namespaced"])
        plural, namespaced = self._resources[(api_version, kind)]
        base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        meta = obj.get("metadata") or {}
        if namespaced:
            base += f"/namespaces/{meta.get('namespace') or 'default'}"
        return f"{base}/{plural}/{meta['name']}" if name else f"{base}/{plural}"

    def apply(self, obj: Obj) -> Obj:
        """Create ``obj``, or replace it when it exists (a test may re-apply a chart)."""
        status, created = self.request("POST", self.path_of(obj, name=False), obj)
        if status == 409:
            current = self.get(self.path_of(obj))
            replacement = {
                **obj,
                "metadata": {
                    **obj["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                },
            }
            replaced: Obj = self.call("PUT", self.path_of(obj), replacement)
            return replaced
        if status >= 400:
            raise KubeRestError("POST", self.path_of(obj, name=False), status, created)
        return dict(created)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: bytes,
    user: str,
    cert: Issued | None = None,
    token: str | None = None,
) -> Path:
    """A kubeconfig with one cluster, one user and one current context, all inline."""
    credentials: Obj = {}
    if cert is not None:
        credentials["client-certificate-data"] = _b64(cert.cert)
        credentials["client-key-data"] = _b64(cert.key)
    if token is not None:
        credentials["token"] = token
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": server, "certificate-authority-data": _b64(ca)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "test", "user": user}}],
        "current-context": user,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def read_kubeconfig(path: Path) -> tuple[str, bytes, Issued | None, str | None]:
    """(server, CA, client certificate, token) of a kubeconfig ``write_kubeconfig`` wrote."""
    config = yaml.safe_load(path.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == current["context"]["cluster"])
    user = next(u for u in config["users"] if u["name"] == current["context"]["user"])["user"]
    cert = None
    if "client-certificate-data" in user:
        cert = Issued(
            cert=base64.b64decode(user["client-certificate-data"]),
            key=base64.b64decode(user["client-key-data"]),
        )
    ca = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    return cluster["cluster"]["server"], ca, cert, user.get("token")
