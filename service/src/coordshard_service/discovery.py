"""How a worker finds its consumers ("lanes"), whose names it cannot compute.

The rebalancer names each consumer it makes for a member ``<member id>_g<generation>``
and picks a new generation every time (``coordshard_client.naming``): a member
fenced while frozen must not get its old name back, or its own late acks would
count on the new consumer. The worker knows its member id, not the generation.

So it listens to JetStream's consumer-created advisories for the stream
(``$JS.EVENT.ADVISORY.CONSUMER.CREATED.<stream>.<consumer>``, the consumer's
name in the last token) and looks up the stream's consumer names at start
(``$JS.API.CONSUMER.NAMES.<stream>``): the subscription is in place before the
look-up, so a consumer made in between is heard of either way. A consumer made
for us is then bound at once, instead of on the next poll. Advisories are core
NATS messages, lost while we are disconnected, so the worker looks up again
after a reconnect and on a slow timer (``ServiceSettings.bind_poll``), which is
the only polling left.

A member may own several consumers at once ("lanes": a crash hand-off gives
a gainer its new shards on a new consumer, beside the ones it serves), so
every consumer of ours is served, whatever its generation; ``find`` returns
them all. The consumer-deleted advisories
(``$JS.EVENT.ADVISORY.CONSUMER.DELETED.<stream>.<consumer>``) say at once that
a lane is gone, so its loop can stop without waiting for a failed fetch or ack
(which still tell it, advisory or not).

A worker can wait for ever without anything being broken on its side: the
rebalancer (the operator, or ``coordshard up``) makes consumers only for Ready
pods its CoordinateShards selects. ``waiting_hint`` says what to check, told
apart by what the stream lists: no consumer of the group at all (is the
rebalancer running, for this group and stream?) or other members' only (is
this pod one of the selected ones?).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from coordshard_client.naming import generation_of
from coordshard_service import consumerstate
from coordshard_service.advisories import unsubscribe_quietly
from coordshard_service.errors import NatsUnavailableError

__all__ = [
    "CREATED_ADVISORY",
    "DELETED_ADVISORY",
    "Discovery",
    "created_subject",
    "deleted_subject",
    "waiting_hint",
]

logger = logging.getLogger(__name__)

CREATED_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.CREATED"
DELETED_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.DELETED"


def created_subject(stream: str) -> str:
    """The consumer-created advisories of every consumer of ``stream``."""
    return f"{CREATED_ADVISORY}.{stream}.*"


def deleted_subject(stream: str) -> str:
    """The consumer-deleted advisories of every consumer of ``stream``."""
    return f"{DELETED_ADVISORY}.{stream}.*"


def waiting_hint(*, group: str, stream: str, pod: str, listed: Iterable[str]) -> str:
    """What to check when none of ``stream``'s consumers (``listed``) is ours."""
    others = sum(1 for name in listed if name.startswith(f"{group}_"))
    if not others:
        return (
            f"no member of group {group} has a consumer on stream {stream}: check that the "
            f"operator (or `coordshard up`) is running and that its CoordinateShards is named "
            f"{group} (COORDSHARD_GROUP) with spec.stream {stream} (COORDSHARD_STREAM)"
        )
    return (
        f"{others} consumer(s) of group {group}'s other members exist, none for this pod: "
        f"check that pod {pod}'s labels match the CoordinateShards' spec.selector.matchLabels, "
        "that it is Ready (only Ready pods get shards), and that COORDSHARD_POD_NAME and "
        "COORDSHARD_POD_UID come from the downward API (metadata.name, metadata.uid)"
    )


class Discovery:
    """Finds the consumers of one member; wakes its waiter when one is made or deleted."""

    def __init__(
        self,
        nc: Client,
        *,
        stream: str,
        member: str,
        on_deleted: Callable[[str], None] = lambda _name: None,
    ) -> None:
        self.nc = nc
        self.stream = stream
        self.member = member
        self._on_deleted_cb = on_deleted
        self._heard: set[str] = set()
        """Names of consumers of ours made since the last ``find``."""
        self._created = asyncio.Event()
        self._subs: list[Subscription] = []
        self.listed: list[str] = []
        """The stream's consumer names at the last look-up (for ``waiting_hint``)."""

    def ours(self, names: Iterable[str]) -> set[str]:
        """Of ``names``, the member's consumers (any generation)."""
        return {n for n in names if generation_of(n, member=self.member) is not None}

    async def start(self) -> None:
        """Subscribe to the stream's consumer-created and consumer-deleted advisories."""
        self._subs = [
            await self.nc.subscribe(created_subject(self.stream), cb=self._on_created),
            await self.nc.subscribe(deleted_subject(self.stream), cb=self._on_deleted),
        ]

    async def stop(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await unsubscribe_quietly(self.nc, sub, what="consumer advisories")

    async def _on_created(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        if self.ours([name]):
            logger.info("consumer %s was made for us", name)
            self._heard.add(name)
            self._created.set()

    async def _on_deleted(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        if self.ours([name]):
            logger.info("consumer %s of ours was deleted", name)
            self._heard.discard(name)
            self._on_deleted_cb(name)

    async def find(self, *, look_up: bool) -> set[str]:
        """The names of our consumers that advisories named since the last call, and with
        ``look_up`` every one the stream lists (advisories are lost while disconnected).

        Raises:
            NatsUnavailableError: the stream's consumers could not be listed.
        """
        self._created.clear()
        heard, self._heard = self._heard, set()
        if not look_up:
            return heard
        try:
            self.listed = await consumerstate.consumer_names(self.nc, self.stream)
        except NatsUnavailableError:
            self._heard |= heard  # not lost: the next call returns them
            raise
        return heard | self.ours(self.listed)

    async def wait(self, wake: Iterable[asyncio.Future[Any]], timeout: float) -> None:
        """Until a consumer of ours is made, one of ``wake`` is done, or ``timeout`` passes."""
        if self._created.is_set():
            return
        created = asyncio.ensure_future(self._created.wait())
        try:
            await asyncio.wait({created, *wake}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            created.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await created
