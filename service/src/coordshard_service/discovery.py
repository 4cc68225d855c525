"""How a worker finds its consumer, whose name it cannot compute.

The rebalancer names each consumer it makes for a member ``<member id>_g<generation>``
and picks a new generation every time (``coordshard_client.naming``): a member
fenced while frozen must not get its old name back, or its own late acks would
count on the new consumer. The worker knows its member id, not the generation.

So it listens to JetStream's consumer-created advisories for the stream
(``$JS.EVENT.ADVISORY.CONSUMER.CREATED.<stream>.<consumer>``, the consumer's
name in the last token) and looks up the stream's consumer names once per bind
(``$JS.API.CONSUMER.NAMES.<stream>``): the subscription is in place before the
look-up, so a consumer made in between is heard of either way. A consumer made
for us is then bound at once, instead of on the next poll. Advisories are core
NATS messages, lost while we are disconnected, so the look-up is also repeated
on a slow timer (``ServiceSettings.bind_poll``), which is the only polling left.

Of several consumers of ours (an old generation not deleted yet), the highest
generation is ours.

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
from collections.abc import Iterable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from coordshard_client.naming import generation_of
from coordshard_service import consumerstate
from coordshard_service.advisories import unsubscribe_quietly

__all__ = ["CREATED_ADVISORY", "Discovery", "created_subject", "waiting_hint"]

logger = logging.getLogger(__name__)

CREATED_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.CREATED"


def created_subject(stream: str) -> str:
    """The consumer-created advisories of every consumer of ``stream``."""
    return f"{CREATED_ADVISORY}.{stream}.*"


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
    """Finds the newest consumer of one member; wakes its waiter when one is made."""

    def __init__(self, nc: Client, *, stream: str, member: str) -> None:
        self.nc = nc
        self.stream = stream
        self.member = member
        self._heard: set[str] = set()
        """Names of consumers of ours made since the last ``find``."""
        self._created = asyncio.Event()
        self._sub: Subscription | None = None
        self.listed: list[str] = []
        """The stream's consumer names at the last look-up (for ``waiting_hint``)."""

    def newest(self, names: Iterable[str]) -> str | None:
        """Of ``names``, the member's consumer of the highest generation, if any."""
        ours = [(g, n) for n in names if (g := generation_of(n, member=self.member)) is not None]
        return max(ours)[1] if ours else None

    async def start(self) -> None:
        """Subscribe to the stream's consumer-created advisories."""
        self._sub = await self.nc.subscribe(created_subject(self.stream), cb=self._on_created)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        await unsubscribe_quietly(self.nc, sub, what="consumer advisories")

    async def _on_created(self, msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[-1]
        if generation_of(name, member=self.member) is not None:
            logger.info("consumer %s was made for us", name)
            self._heard.add(name)
            self._created.set()

    async def find(self) -> str | None:
        """The name of our newest consumer: one an advisory named since the last call,
        else the newest the stream lists; None if it has none of ours.

        Raises:
            NatsUnavailableError: the stream's consumers could not be listed.
        """
        self._created.clear()
        heard, self._heard = self._heard, set()
        if heard:
            return self.newest(heard)
        self.listed = await consumerstate.consumer_names(self.nc, self.stream)
        return self.newest(self.listed)

    async def wait(self, stop: asyncio.Event, timeout: float) -> None:
        """Until a consumer of ours is made, ``stop`` is set, or ``timeout`` seconds pass."""
        if self._created.is_set():
            return
        created = asyncio.ensure_future(self._created.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({created, stopped}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            for f in (created, stopped):
                f.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await f
