"""NATS credentials and TLS from files → nats-py ``connect()`` keywords.

One place for what the worker (``--nats-creds``, ``--nats-tls-ca``, ...) and a
gateway's ``CoordinateClient.connect(creds=..., tls_ca=...)`` both need: a
``.creds`` file, an nkey seed file, the CA that signed the servers'
certificates, and a client certificate and key for servers that demand one.
In Kubernetes these are mounted Secrets, so they come as paths. Pure but for
reading those files: a missing or unreadable one is a
``CoordinateCredentialsError`` naming the setting and the path, never the
content. An nkey seed or ``.creds`` file needs the ``nkeys`` package, which
nats-py imports only when connecting (and the SDK alone does not install):
its absence is named here, not left to a ``ModuleNotFoundError`` from inside
nats-py's connect.

``refused`` tells a server's refusal (no retry fixes it) from an outage.
"""

from __future__ import annotations

import importlib
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors

from coordshard_client.errors import CoordinateCredentialsError

__all__ = ["NatsFiles", "connect_options", "refused"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NatsFiles:
    """Paths of the credentials and TLS files (None: not used).

    ``setting_prefix`` is how the caller names its settings in errors: the worker's
    are ``nats_creds``, ..., the SDK's keywords ``creds``, ...
    """

    creds: str | None = None
    """A ``.creds`` file (user JWT and nkey seed), as ``nsc`` writes it."""
    nkey_seed: str | None = None
    """A file holding an nkey user seed."""
    tls_ca: str | None = None
    """The PEM CA that signed the servers' certificates; turns TLS on."""
    tls_cert: str | None = None
    """A PEM client certificate, for servers that demand one (with ``tls_key``)."""
    tls_key: str | None = None
    """The PEM key of ``tls_cert``."""
    setting_prefix: str = ""

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            p = self.setting_prefix
            raise CoordinateCredentialsError(
                f"{p}tls_cert and {p}tls_key go together: give both or neither",
                setting=f"{p}tls_cert",
            )


def connect_options(files: NatsFiles) -> dict[str, Any]:
    """nats-py ``connect()`` keywords for the credentials and TLS ``files`` name.

    Raises:
        CoordinateCredentialsError: a file cannot be read, or is not PEM of its kind.
    """
    options: dict[str, Any] = {}
    if files.creds or files.nkey_seed:
        _require_nkeys(files)
    if files.creds:
        options["user_credentials"] = _readable(files, files.creds, "creds")
    if files.nkey_seed:
        options["nkeys_seed"] = _readable(files, files.nkey_seed, "nkey_seed")
    if files.tls_ca or files.tls_cert:
        options["tls"] = _tls_context(files)
    return options


def refused(e: BaseException) -> bool:
    """A connect error no retry fixes: credentials or a certificate the server refuses
    (it answers ``-ERR 'Authorization Violation'``, which nats-py raises as a plain
    ``Error`` while connecting), or a server certificate we do not trust."""
    if isinstance(e, nats.errors.AuthorizationError | ssl.SSLError):
        return True
    return isinstance(e, nats.errors.Error) and "authorization violation" in str(e).lower()


def _require_nkeys(files: NatsFiles) -> None:
    setting = files.setting_prefix + ("creds" if files.creds else "nkey_seed")
    try:
        importlib.import_module("nkeys")  # nats-py's own import, made when connecting
    except ImportError as e:
        raise CoordinateCredentialsError(
            f"{setting}: signing with an nkey needs the nkeys package: pip install nkeys",
            setting=setting,
        ) from e


def _readable(files: NatsFiles, path: str, name: str) -> str:
    setting = files.setting_prefix + name
    try:
        with Path(path).open("rb"):
            return path
    except OSError as e:
        raise CoordinateCredentialsError(
            f"{setting}: cannot read {path}: {e.strerror}", setting=setting
        ) from e


def _tls_context(files: NatsFiles) -> ssl.SSLContext:
    p = files.setting_prefix
    ca = files.tls_ca
    try:
        ctx = ssl.create_default_context(cafile=_readable(files, ca, "tls_ca") if ca else None)
    except ssl.SSLError as e:
        raise CoordinateCredentialsError(
            f"{p}tls_ca: {ca} is not a PEM CA: {e}", setting=f"{p}tls_ca"
        ) from e
    cert, key = files.tls_cert, files.tls_key
    if cert and key:
        try:
            ctx.load_cert_chain(
                _readable(files, cert, "tls_cert"), _readable(files, key, "tls_key")
            )
        except ssl.SSLError as e:
            raise CoordinateCredentialsError(
                f"{p}tls_cert/{p}tls_key: not a PEM key pair: {e}", setting=f"{p}tls_cert"
            ) from e
    return ctx
