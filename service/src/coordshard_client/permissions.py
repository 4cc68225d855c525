"""The NATS subjects each role of a group may publish and subscribe to: the one list.

Three roles touch a group's subjects. The **worker** pulls from its consumer,
reads it, acks and answers; the **operator** (or local mode's engine) owns the
stream and the consumers; a **gateway** (an SDK caller) publishes commands and
reads the answers. Each gets exactly what it needs here, and nothing else: a
worker cannot publish commands or touch another group's stream, and a gateway
cannot ack, read or rewrite consumers.

``server_config`` renders the three as a nats-server ``authorization`` block
(one nkey user per role); docs/service.md shows it for the default group, and
a test keeps that copy equal to what this module gives. A test also runs a
worker, the engine's calls and a gateway under exactly these permissions.
Adding a JetStream call to a role means adding its subject here.

Replies: the worker answers on ``<reply_prefix>.>`` and gateways read there.
Every client's own requests (JetStream API calls, pulls, ``ack_sync``) are
answered on nats-py's inbox, ``_INBOX.>``, which each role subscribes to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from coordshard_client.naming import DEFAULT_STREAM
from coordshard_client.subjects import DEFAULT_PREFIX, DEFAULT_REPLY_PREFIX

__all__ = [
    "Permissions",
    "gateway_permissions",
    "operator_permissions",
    "server_config",
    "worker_permissions",
]

JS_API = "$JS.API"
INBOX = "_INBOX.>"
"""Where nats-py's requests are answered (its default ``inbox_prefix``)."""


@dataclass(frozen=True, slots=True)
class Permissions:
    """Subjects a NATS user may publish to and subscribe to (``allow`` lists)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def config(self, indent: str = "") -> str:
        """The user's ``permissions`` block in nats-server's config syntax."""
        return "\n".join(
            [
                f"{indent}permissions: {{",
                *_allow("publish", self.publish, indent + "  "),
                *_allow("subscribe", self.subscribe, indent + "  "),
                f"{indent}}}",
            ]
        )


def _allow(kind: str, subjects: tuple[str, ...], indent: str) -> list[str]:
    items = [f"{indent}    {json.dumps(s)}" for s in subjects]
    return [f"{indent}{kind}: {{ allow: [", *items, f"{indent}] }}"]


def worker_permissions(
    *, stream: str = DEFAULT_STREAM, reply_prefix: str = DEFAULT_REPLY_PREFIX
) -> Permissions:
    """A worker: find its consumers (list the stream's consumer names, hear the
    consumer-created advisories: the names change with every incarnation, lane and
    fence; hear the consumer-deleted ones, which end a lane at once), read and pull
    them, ack their deliveries, answer on the reply prefix;
    read the stream and rewind its consumer on bind (a container restarted in place);
    hear its consumers' max-deliveries advisories and move the message they name into
    its dead letters (read it, delete it)."""
    return Permissions(
        publish=(
            f"{JS_API}.CONSUMER.NAMES.{stream}",
            f"{JS_API}.CONSUMER.INFO.{stream}.*",
            f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.*",
            f"{JS_API}.CONSUMER.RESET.{stream}.*",
            f"{JS_API}.STREAM.INFO.{stream}",
            f"{JS_API}.STREAM.MSG.GET.{stream}",
            f"{JS_API}.STREAM.MSG.DELETE.{stream}",
            f"$JS.ACK.{stream}.>",
            f"{reply_prefix}.>",
        ),
        subscribe=(
            INBOX,
            f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{stream}.*",
            f"$JS.EVENT.ADVISORY.CONSUMER.DELETED.{stream}.*",
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*",
        ),
    )


def operator_permissions(*, streams: tuple[str, ...] = (DEFAULT_STREAM,)) -> Permissions:
    """The operator: create and read its groups' streams; create (by name, as servers
    since 2.9 take it), list, read, pause, reset and delete their consumers (the hand-off)."""
    publish: list[str] = []
    for stream in streams:
        publish += [
            f"{JS_API}.STREAM.CREATE.{stream}",
            f"{JS_API}.STREAM.UPDATE.{stream}",
            f"{JS_API}.STREAM.INFO.{stream}",
            f"{JS_API}.STREAM.PURGE.{stream}",
            f"{JS_API}.STREAM.MSG.DELETE.{stream}",
            f"{JS_API}.CONSUMER.CREATE.{stream}.>",
            f"{JS_API}.CONSUMER.LIST.{stream}",
            f"{JS_API}.CONSUMER.INFO.{stream}.*",
            f"{JS_API}.CONSUMER.PAUSE.{stream}.*",
            f"{JS_API}.CONSUMER.RESET.{stream}.*",
            f"{JS_API}.CONSUMER.DELETE.{stream}.*",
        ]
    return Permissions(publish=tuple(publish), subscribe=(INBOX,))


def gateway_permissions(
    *,
    prefix: str = DEFAULT_PREFIX,
    stream: str = DEFAULT_STREAM,
    reply_prefix: str = DEFAULT_REPLY_PREFIX,
) -> Permissions:
    """A gateway: read the stream's info at start (that it exists, and the shard count
    it records), publish commands (the stream acks them on its inbox) and read the
    outcomes on the reply prefix."""
    subscribe = (INBOX,) if reply_prefix == DEFAULT_REPLY_PREFIX else (INBOX, f"{reply_prefix}.>")
    return Permissions(
        publish=(f"{JS_API}.STREAM.INFO.{stream}", f"{prefix}.>"), subscribe=subscribe
    )


def server_config(users: Mapping[str, Permissions]) -> str:
    """A nats-server ``authorization`` block: one nkey user (public key ``U...``) each."""
    lines = ["authorization {", "  users = ["]
    for nkey, permissions in users.items():
        lines += ["    {", f'      nkey: "{nkey}"', permissions.config("      "), "    }"]
    return "\n".join([*lines, "  ]", "}"]) + "\n"
