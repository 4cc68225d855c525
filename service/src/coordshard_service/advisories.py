"""The last resort: a message our consumer gave up on moves into the dead-letter store.

Every consumer has ``max_deliver`` (the engine sets it). A message delivered
that many times without an ack (one that kills or wedges the worker before it
settles, whatever the cause) is never delivered again, but on a work-queue
stream it is not deleted either: it would sit there for ever. The server
announces it on ``$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>``
with its stream sequence. On that advisory the worker reads the raw message
(``$JS.API.STREAM.MSG.GET.<stream>``), keeps it as a dead letter through the
store's own path (the same table, deduplicated by sequence and subject), and
only then deletes it from the stream (``$JS.API.STREAM.MSG.DELETE.<stream>``).
Nothing is parsed but the advisory, so even a message nothing can parse ends
as a dead letter with its bytes.

A worker listens for its own member's consumers only (every generation of
them, ``coordshard_client.naming.generation_of``: the name changes after each
fence), so each message is handled by the member that owned it. Advisories
are core NATS messages: one sent while no worker of that member is connected
is not seen again (docs/service.md).
The NATS permissions these need are in ``coordshard_client.permissions.worker_permissions``.
"""

from __future__ import annotations

import asyncio
import json
import logging

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from coordshard_client.naming import generation_of
from coordshard_service import consumerstate
from coordshard_service.errors import NatsUnavailableError, StoreUnavailableError
from coordshard_service.metrics import Metrics
from coordshard_service.store import DeadLetter, Store

__all__ = [
    "MAX_DELIVERIES_ADVISORY",
    "GiveUps",
    "advisories_subject",
    "advisory_subject",
    "unsubscribe_quietly",
]

logger = logging.getLogger(__name__)


async def unsubscribe_quietly(nc: Client, sub: Subscription | None, *, what: str) -> None:
    """Unsubscribe ``sub`` if there is one, best effort: on a connection lost for good
    the write itself fails (uvloop raises RuntimeError on a closed transport), and that
    must not replace the error the worker exits with."""
    if sub is None or nc.is_closed:
        return
    try:
        await sub.unsubscribe()
    except (nats.errors.Error, OSError, RuntimeError) as e:
        logger.debug("unsubscribing from %s: %r", what, e)


MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
ATTEMPTS = 12
"""Tries to keep and delete one message (~40 s of a store or NATS outage) before it is
left in the stream, logged at ERROR."""


def advisory_subject(*, stream: str, consumer: str) -> str:
    return f"{MAX_DELIVERIES_ADVISORY}.{stream}.{consumer}"


def advisories_subject(stream: str) -> str:
    """The max-deliveries advisories of every consumer of ``stream``."""
    return f"{MAX_DELIVERIES_ADVISORY}.{stream}.*"


class GiveUps:
    """Moves the messages our consumers gave up on from the stream into the dead letters."""

    def __init__(
        self, nc: Client, *, stream: str, member: str, store: Store, metrics: Metrics
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.stream = stream
        self.member = member
        """Our member id; its consumers are ``generation_of`` it."""
        self.store = store
        self.metrics = metrics
        self._sub: Subscription | None = None

    @property
    def subject(self) -> str:
        return advisories_subject(self.stream)

    async def start(self) -> None:
        self._sub = await self.nc.subscribe(self.subject, cb=self._on_advisory)

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        await unsubscribe_quietly(self.nc, sub, what="advisories")

    async def _on_advisory(self, msg: Msg) -> None:
        consumer = msg.subject.rsplit(".", 1)[-1]
        if generation_of(consumer, member=self.member) is None:
            return  # another member's: it moves its own
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries", 0))
        except (ValueError, KeyError, TypeError) as e:
            logger.error("unreadable max-deliveries advisory %r: %r", msg.data[:200], e)
            return
        await self.give_up(seq, deliveries=deliveries, consumer=consumer)

    async def give_up(self, seq: int, *, deliveries: int, consumer: str) -> bool:
        """Keep message ``seq`` as a dead letter and delete it; False if it stays."""
        delay = RETRY_FIRST_S
        for attempt in range(ATTEMPTS):
            try:
                return await self._move(seq, deliveries, consumer)
            except (NatsUnavailableError, StoreUnavailableError) as e:
                logger.warning(
                    "moving given-up message %d of %s (try %d): %s",
                    seq,
                    self.stream,
                    attempt + 1,
                    e,
                )
            await asyncio.sleep(delay)  # backoff, not synchronisation
            delay = min(delay * 2, RETRY_MAX_S)
        logger.error(
            "message %d of %s was given up on by %s and could not be moved: it stays in the stream",
            seq,
            self.stream,
            consumer,
        )
        return False

    async def _move(self, seq: int, deliveries: int, consumer: str) -> bool:
        raw = await consumerstate.stored_message(self.js, stream=self.stream, seq=seq)
        if raw is None:
            return True  # acked late, or moved already
        instance = await consumerstate.stream_instance(self.js, self.stream)
        letter = DeadLetter(
            stream=instance.key,
            stream_seq=seq,
            subject=raw.subject or "",
            reason=f"given up: delivered {deliveries} times to {consumer} without an ack",
            headers={str(k): str(v) for k, v in (raw.headers or {}).items()},
            data=raw.data or b"",
            consumer=consumer,
        )
        await asyncio.to_thread(self._keep, letter)
        await consumerstate.delete_message(self.js, stream=self.stream, seq=seq)
        self.metrics.given_up.inc()
        self.metrics.dead_letters.inc()
        logger.error(
            "dead-lettered stream_seq=%d subject=%r: given up after %d deliveries",
            seq,
            letter.subject,
            deliveries,
        )
        return True

    def _keep(self, letter: DeadLetter) -> None:
        with self.store.transaction(stream=letter.stream) as tx:
            tx.dead_letter(letter)
