"""A message on its last delivery is dead-lettered before anything else is done with it.

A consumer delivers a message at most ``max_deliver`` times (the engine sets
it); then it gives up, and on a work-queue stream the message stays, owned by
no one. The server's max-deliveries advisory (``advisories``) is how a worker
hears of that, but it is a core NATS message: sent while no worker of the
consumer is connected (one that died on the message, one reconnecting), it is
lost, and the stream never drains. So the worker does not count on it: a
delivery whose ``num_delivered`` has reached its consumer's ``max_deliver`` is
the last one, and ``LastDeliveries.take`` keeps it as a dead letter (raw
subject, headers and bytes; reason "given up after N deliveries") and
terminates it, confirmed, first thing in the batch path: before it is decoded
or applied, so even a message that kills whoever processes it ends dead-lettered
on its last delivery. A valid command on its last delivery is dead-lettered
too: twenty deliveries without an ack say it wedged or killed its workers,
and this is the documented last resort (docs/service.md).

Should the dead letter not be stored (store down) or the term not be confirmed,
the message is left unsettled and not processed: after ``ack_wait`` the
server gives up on it and the advisory, heard by this worker, moves it (the
store keeps one dead letter per sequence and subject).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerInfo

from coordshard_service import consumerstate
from coordshard_service.errors import (
    NatsUnavailableError,
    StoreRefusedError,
    StoreUnavailableError,
)
from coordshard_service.metrics import Metrics
from coordshard_service.natsconnect import RAW
from coordshard_service.store import DeadLetter, Store

__all__ = ["TERM_TIMEOUT", "LastDeliveries", "is_last"]

logger = logging.getLogger(__name__)

TERM_TIMEOUT = 2.0
"""Seconds a last delivery's term waits for the server's confirmation."""


def is_last(msg: Msg, *, max_deliver: int | None) -> bool:
    """Whether ``msg`` is the last delivery its consumer will make (``max_deliver``
    of 0, -1 or None: no limit)."""
    return max_deliver is not None and max_deliver > 0 and msg.metadata.num_delivered >= max_deliver


def _subject(msg: Msg) -> str:
    """The subject as a dead letter keeps it: undecodable bytes as ``\\xNN`` (as ``decode``)."""
    try:
        msg.subject.encode()
    except UnicodeEncodeError:  # lone surrogates: see natsconnect.WorkerClient
        return msg.subject.encode("utf-8", RAW).decode("utf-8", "backslashreplace")
    return msg.subject


class LastDeliveries:
    """Takes the last deliveries out of a batch: dead-lettered and terminated, unprocessed."""

    def __init__(self, nc: Client, *, store: Store, metrics: Metrics) -> None:
        self.nc = nc
        self.store = store
        self.metrics = metrics
        self._max_deliver: dict[str, int | None] = {}
        """Each consumer's ``max_deliver`` as last read, by name."""

    def observe(self, info: ConsumerInfo) -> None:
        """Note a consumer's ``max_deliver`` (each read of it, so a change is seen)."""
        self._max_deliver[info.name] = info.config.max_deliver

    def is_last(self, msg: Msg) -> bool:
        """Whether ``msg`` is its consumer's last delivery of it; a consumer not read yet
        has no known limit."""
        return is_last(msg, max_deliver=self._max_deliver.get(msg.metadata.consumer or ""))

    async def take(self, msgs: Sequence[Msg], *, stream: str) -> list[Msg]:
        """Dead-letter and terminate the last deliveries of ``msgs``; return the others.

        ``stream``: the stream instance they came from (``StreamInstance.key``).
        """
        last = [m for m in msgs if self.is_last(m)]
        if not last:
            return list(msgs)
        letters = [
            DeadLetter(
                stream_seq=m.metadata.sequence.stream,
                subject=_subject(m),
                reason=f"given up after {m.metadata.num_delivered} deliveries",
                headers={str(k): str(v) for k, v in (m.headers or {}).items()},
                data=m.data,
                consumer=m.metadata.consumer or "",
            )
            for m in last
        ]
        try:
            await asyncio.to_thread(self._keep, letters, stream=stream)
        except (StoreUnavailableError, StoreRefusedError) as e:
            # Refused: cannot be (``dead_letter`` stores any message), and must not end the loop.
            logger.error(
                "could not keep %d last deliveries as dead letters, leaving them to the "
                "max-deliveries advisory: %s",
                len(last),
                e,
            )
        else:
            for m, letter in zip(last, letters, strict=True):
                await self._term(m, letter)
        taken = {id(m) for m in last}
        return [m for m in msgs if id(m) not in taken]

    def _keep(self, letters: Sequence[DeadLetter], *, stream: str) -> None:
        with self.store.transaction(stream=stream) as tx:
            for letter in letters:
                tx.dead_letter(letter)

    async def _term(self, msg: Msg, letter: DeadLetter) -> None:
        try:
            await consumerstate.term_sync(self.nc, msg, timeout=TERM_TIMEOUT)
        except NatsUnavailableError as e:
            logger.warning(
                "dead-lettered stream_seq=%d, but its term was not confirmed (the "
                "max-deliveries advisory will remove it): %s",
                letter.stream_seq,
                e,
            )
            return
        self.metrics.given_up.inc()
        self.metrics.dead_letters.inc()
        logger.error(
            "dead-lettered stream_seq=%d subject=%s: %s",
            letter.stream_seq,
            letter.subject,
            letter.reason,
        )
