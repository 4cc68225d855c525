"""The worker's NATS client and connect options: credentials and TLS from mounted files.

In Kubernetes the worker's Secrets are mounted as files; these settings name
them. ``coordshard_client.credentials`` turns them into connect keywords (the
SDK's ``connect()`` shares it); a missing or unreadable file is a
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

from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from coordshard_client import credentials
from coordshard_client.errors import CoordinateCredentialsError
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
    """nats-py ``connect()`` keywords for the credentials and TLS ``settings`` name
    (``coordshard_client.credentials``, which the SDK's ``connect()`` uses too)."""
    files = credentials.NatsFiles(
        creds=settings.nats_creds,
        nkey_seed=settings.nats_nkey_seed,
        tls_ca=settings.nats_tls_ca,
        tls_cert=settings.nats_tls_cert,
        tls_key=settings.nats_tls_key,
        setting_prefix="nats_",
    )
    try:
        return credentials.connect_options(files)
    except CoordinateCredentialsError as e:
        raise ConfigError(str(e)) from e
