"""NATS credentials from Kubernetes Secrets: spec.nats.*SecretRef -> connect options.

Owns turning the Secrets a CoordinateShards names into nats-py's connect
options: a ``.creds`` file (``user_credentials``), an nkey seed
(``nkeys_seed_str``) and TLS (an ``ssl.SSLContext`` from ``ca.crt``, plus
``tls.crt``/``tls.key`` for mutual TLS). Reading the Secrets is the caller's
(``kubeapi``); this module never logs, and Secret material is kept out of
every ``repr``. The only files are the client certificate and key, which
``ssl`` can load from files only: written 0600 into a private temporary
directory and removed as soon as they are loaded. The chart's root filesystem
is read-only, so it mounts an in-memory ``emptyDir`` at ``TMPDIR``.

``NatsAuth.identity`` names the Secrets and their resourceVersions: when a
Secret changes, the identity changes and the runtime reconnects.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import RawCredentials

from coordshard_operator.kube import crd
from coordshard_operator.kube.errors import SecretUnavailableError
from coordshard_operator.kube.spec import Spec

__all__ = ["NO_AUTH", "NatsAuth", "Secret", "SecretReader", "load"]


@dataclass(frozen=True, slots=True)
class Secret:
    """A core/v1 Secret's decoded ``data``."""

    namespace: str
    name: str
    resource_version: str
    data: Mapping[str, bytes] = field(repr=False)

    def value(self, key: str, *, field: str) -> bytes:
        try:
            return self.data[key]
        except KeyError:
            raise SecretUnavailableError(
                f"Secret {self.namespace}/{self.name} has no key {key!r} (spec.{field})", delay=2
            ) from None


SecretReader = Callable[[str, str], Awaitable[Secret]]
"""(namespace, name) -> the Secret; SecretUnavailableError when it is missing."""


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """Connect options and the identity of the Secrets they came from."""

    identity: tuple[str, ...] = ()
    """Empty without Secrets; else the refs and each Secret's resourceVersion."""
    options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


NO_AUTH = NatsAuth()


async def load(spec: Spec, read: SecretReader) -> NatsAuth:
    """The connect options ``spec``'s Secret refs ask for (NO_AUTH without refs)."""
    names = {ref.name for ref in (spec.credentials, spec.nkey) if ref is not None}
    if spec.tls_secret is not None:
        names.add(spec.tls_secret)
    if not names:
        return NO_AUTH
    secrets = {name: await read(spec.namespace, name) for name in sorted(names)}
    options: dict[str, Any] = {}
    if spec.credentials is not None:
        creds = secrets[spec.credentials.name].value(
            spec.credentials.key, field="nats.credentialsSecretRef"
        )
        options["user_credentials"] = RawCredentials(creds.decode())
    if spec.nkey is not None:
        seed = secrets[spec.nkey.name].value(spec.nkey.key, field="nats.nkeySecretRef")
        options["nkeys_seed_str"] = seed.decode().strip()
    if spec.tls_secret is not None:
        options["tls"] = tls_context(secrets[spec.tls_secret])
    identity = (
        spec.namespace,
        repr((spec.credentials, spec.nkey, spec.tls_secret)),
        *(f"{name}@{s.resource_version}" for name, s in secrets.items()),
    )
    return NatsAuth(identity=identity, options=options)


def tls_context(secret: Secret) -> ssl.SSLContext:
    """Trust ``ca.crt``; present ``tls.crt``/``tls.key`` when both are there."""
    ca = secret.value(crd.SECRET_CA, field="nats.tlsSecretRef")
    where = f"Secret {secret.namespace}/{secret.name}"
    try:
        ctx = ssl.create_default_context(cadata=ca.decode())
    except (ssl.SSLError, ValueError) as e:
        raise SecretUnavailableError(f"{where}: {crd.SECRET_CA} is not a PEM CA", delay=2) from e
    cert, key = secret.data.get(crd.SECRET_TLS_CERT), secret.data.get(crd.SECRET_TLS_KEY)
    if cert is None or key is None:
        return ctx
    with tempfile.TemporaryDirectory(prefix="coordshard-tls-") as private:  # mode 0700
        cert_path, key_path = Path(private) / "tls.crt", Path(private) / "tls.key"
        _write_private(cert_path, cert)
        _write_private(key_path, key)
        try:
            ctx.load_cert_chain(str(cert_path), str(key_path))
        except (ssl.SSLError, ValueError) as e:
            raise SecretUnavailableError(
                f"{where}: {crd.SECRET_TLS_CERT}/{crd.SECRET_TLS_KEY} are not a PEM key pair",
                delay=2,
            ) from e
    return ctx


def _write_private(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
