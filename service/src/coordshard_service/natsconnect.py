"""The worker's NATS connect options: credentials and TLS from mounted files.

In Kubernetes the worker's Secrets are mounted as files; these settings name
them. Pure but for reading those files: a missing or unreadable one is a
``ConfigError`` naming the setting and the path, never the content.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from coordshard_service.errors import ConfigError
from coordshard_service.settings import ServiceSettings

__all__ = ["connect_options"]


def connect_options(settings: ServiceSettings) -> dict[str, Any]:
    """nats-py ``connect()`` keywords for the credentials and TLS ``settings`` name."""
    options: dict[str, Any] = {}
    if settings.nats_creds:
        options["user_credentials"] = _readable(settings.nats_creds, "nats_creds")
    if settings.nats_nkey_seed:
        options["nkeys_seed"] = _readable(settings.nats_nkey_seed, "nats_nkey_seed")
    if settings.nats_tls_ca or settings.nats_tls_cert:
        options["tls"] = _tls_context(settings)
    return options


def _readable(path: str, setting: str) -> str:
    try:
        with Path(path).open("rb"):
            return path
    except OSError as e:
        raise ConfigError(f"{setting}: cannot read {path}: {e.strerror}") from e


def _tls_context(settings: ServiceSettings) -> ssl.SSLContext:
    ca = settings.nats_tls_ca
    try:
        ctx = ssl.create_default_context(cafile=_readable(ca, "nats_tls_ca") if ca else None)
    except ssl.SSLError as e:
        raise ConfigError(f"nats_tls_ca: {ca} is not a PEM CA: {e}") from e
    cert, key = settings.nats_tls_cert, settings.nats_tls_key
    if cert and key:
        try:
            ctx.load_cert_chain(_readable(cert, "nats_tls_cert"), _readable(key, "nats_tls_key"))
        except ssl.SSLError as e:
            raise ConfigError(f"nats_tls_cert/nats_tls_key: not a PEM key pair: {e}") from e
    return ctx
