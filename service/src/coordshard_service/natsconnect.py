"""The worker's NATS client and connect options: credentials and TLS from mounted files.

In Kubernetes the worker's Secrets are mounted as files; these settings name
them. Pure but for reading those files: a missing or unreadable one is a
``ConfigError`` naming the setting and the path, never the content.

``WorkerClient`` is nats-py's client with one change: a delivered subject that
is not UTF-8 does not kill it. nats-server stores a message whose subject
tokens hold any bytes; nats-py decodes each delivered subject strictly, and the
``UnicodeDecodeError`` ends its reader task: the worker stays bound and
"ready" but hears nothing more. Decoded with ``surrogateescape`` instead, the
subject keeps its raw bytes (``subject.encode("utf-8", "surrogateescape")``)
and ``consuming.decode`` dead-letters the message.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from coordshard_service.errors import ConfigError
from coordshard_service.settings import ServiceSettings

__all__ = ["WorkerClient", "connect_options"]

RAW = "surrogateescape"
"""How the worker decodes delivered subjects: undecodable bytes become lone
surrogates, which ``str.encode("utf-8", RAW)`` turns back into the same bytes."""


class WorkerClient(Client):
    """nats-py's ``Client``, but an undecodable subject is kept, not fatal (see above)."""

    def _build_message(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: dict[str, str] | None
    ) -> Msg:
        return self.msg_class(
            subject=subject.decode("utf-8", RAW),
            reply=reply.decode("utf-8", RAW),
            data=data,
            headers=headers,
            _client=self,
            _sid=sid,
        )


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
