"""One lane's pull loop: fetch, apply, reply, ack — and notice the lane is gone.

A *lane* is one consumer of our member (``<member id>_g<generation>``). The
worker (``worker.Worker``) binds every lane of its member and runs one
``Lane`` for each; a lane is never edited by the rebalancer, only created and
deleted (a stream without blocks has one consumer whose filters it still
rewrites, so a lane re-reads its filters on every empty fetch and at least
once a second while busy). The lanes share the worker's store, cache and
metrics, and take turns applying (``LaneHost.applying``): one transaction at a
time, as with one consumer, so the cache needs no locks (``applier`` joins the
batches of lanes that wait into one transaction), and a shard
that moves from a deleted lane to a new one of ours is applied in its stream
order by its marks whichever lane delivers it. Per-shard order within a lane
holds because a shard is in exactly one consumer at a time (the WorkQueue
stream refuses overlapping filters).

Settling lives in one function, ``settle``: reply if the caller gave a reply
subject, then ack (or ``term`` for a bad message, which was already kept as a
dead letter in the batch transaction). A reply goes only to a subject under the
reply prefix that ``reply_problem`` accepts (``decode`` dead-letters the rest);
one that fails all the same is counted and skipped, never taken for a failed ack.
The batch's last ack is ``ack_sync``: the server applies a consumer's acks in
order, so that one confirmation covers the batch, at one round trip instead of
one per message.

An ack or a fetch that fails makes the lane ask whether its consumer still
exists; the consumer-deleted advisory (``Lane.deleted``) answers that at once
when it came. Gone ends the lane: it drops the deliveries in hand (whatever
we committed but did not ack is redelivered to the shard's next consumer and
answered from its stored outcome). Still there (its leader died or moved; the
server was unreachable): send the acks again until they are confirmed.
Dropping the deliveries of a living consumer would leave them pending until
``ack_wait`` while it goes on delivering the same shards' later messages: out
of order, and (for a batch fetched but not yet applied) past the shards'
marks, which would refuse them.

What the server says goes through ``consumerstate``: it reads our consumer
(``ConsumerInfo``, "gone" or "unknown") and turns nats-py's errors into ours,
so this module catches only the worker's own errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Literal, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from coordshard_client.messages import Outcome
from coordshard_service import consumerstate
from coordshard_service.applier import Applier
from coordshard_service.cache import Cache
from coordshard_service.commands import Applied, Incoming
from coordshard_service.consumerstate import ConsumerState, StreamInstance
from coordshard_service.decoding import decode, owned_shards
from coordshard_service.errors import (
    FencedError,
    NatsUnavailableError,
    ReplyError,
    StoreUnavailableError,
)
from coordshard_service.lastdelivery import LastDeliveries
from coordshard_service.metrics import Metrics
from coordshard_service.progress import Progress
from coordshard_service.pulling import Puller, PullError
from coordshard_service.settings import ServiceSettings
from coordshard_service.store import Store

__all__ = ["Lane", "LaneHost", "settle"]

logger = logging.getLogger(__name__)

_ACK = b"+ACK"
_TERM = b"+TERM"
"""JetStream's ack protocol bodies (what ``Msg.ack`` and ``Msg.term`` publish)."""

REFRESH_SECONDS = 1.0
"""Longest a busy lane goes without re-reading its consumer's filters."""
IDLE_REFRESH_SECONDS = 0.25
"""Least time between two re-reads on empty fetches: pulls are short (they bound failover
latency), and a consumer read on every one would be a JetStream API call per pull."""
ACK_RETRY_FIRST = 0.05
ACK_RETRY_MAX = 1.0
"""Seconds between tries to settle a batch whose consumer exists but did not confirm."""
ACK_SYNC_TIMEOUT = 2.0
"""Seconds the batch's last ack waits for the server's confirmation."""
STORE_RETRY_FIRST = 0.2
STORE_RETRY_MAX = 5.0
"""Seconds between tries to apply a batch the store refused."""


class LaneHost(Protocol):
    """What a lane shares with the worker that runs it."""

    settings: ServiceSettings
    nc: Client
    js: JetStreamContext
    store: Store
    cache: Cache
    metrics: Metrics
    applying: asyncio.Lock
    """Held while a batch is applied or the cache is pruned: one at a time per worker."""
    applier: Applier
    """Applies the batches, joining those of several lanes that wait in one transaction."""

    async def shards_changed(self) -> None:
        """A lane's shards changed: drop the cache entries of shards no lane holds now."""


class Lane:
    """Serves one consumer of ours until it is deleted or ``stop`` is set."""

    def __init__(
        self, host: LaneHost, *, consumer: str, stream: StreamInstance, puller: Puller
    ) -> None:
        self.host = host
        self.settings = host.settings
        self.metrics = host.metrics
        self.consumer = consumer
        self.stream = stream
        """The stream instance read when the lane was bound."""
        self.shards: set[int] = set()
        self.progress = Progress()
        """Fed by the lane's loop; the worker is stuck when any lane is (``stuck``)."""
        self.deleted = asyncio.Event()
        """Set when the consumer-deleted advisory names this lane: stop at once."""
        self._puller = puller
        self._refreshed = 0.0
        self._stopping = asyncio.Event()
        self.progress.bind(True)
        self.last_deliveries = LastDeliveries(host.nc, store=host.store, metrics=host.metrics)
        """Takes each batch's last deliveries (``max_deliver``) out first, dead-lettered."""

    async def bind(self, info: ConsumerInfo) -> bool:
        """Take the consumer over and learn its shards; False if NATS did not answer."""
        self._observe(info)
        if not await self._take_over(info):
            return False
        await self._adopt(info)
        return True

    async def close(self) -> None:
        """Unsubscribe the lane's pulls and forget its lag series."""
        self.metrics.forget_consumer(self.consumer)
        try:
            await consumerstate.close_puller(self._puller)
        except NatsUnavailableError as e:
            logger.debug("%s", e)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (the batch in hand is finished and acked first).

        Raises:
            FencedError: the lane's consumer is gone; the deliveries in hand are dropped.
        """
        self._stopping = stop
        while not stop.is_set():
            if self.deleted.is_set():
                raise FencedError("consumer deleted (advisory)", consumer=self.consumer)
            self.progress.beat()
            msgs = await self._fetch()
            if not msgs:
                if time.monotonic() - self._refreshed > IDLE_REFRESH_SECONDS:
                    await self._refresh()
                continue
            await self._handle(msgs)
            if time.monotonic() - self._refreshed > REFRESH_SECONDS:
                await self._refresh()

    async def _take_over(self, info: ConsumerInfo) -> bool:
        """Make the consumer deliver in stream order from here; False if NATS did not answer.

        A consumer that has deliveries pending when we bind holds them for a
        process of ours that died: a container restarted in place keeps its pod
        UID, so its lanes, and within the grace period nothing moves. Those
        deliveries would come back only after ``ack_wait``, behind the later
        commands of their shards, and be applied late, out of order. So we
        rewind first: the consumer delivers everything left on its shards again,
        oldest first; what the dead process committed is answered from its
        stored outcomes, the rest is applied in order. Each lane rewinds itself.
        """
        held = info.num_ack_pending or 0
        if held == 0:
            return True
        try:
            first = await consumerstate.rewind(
                self.host.js, stream=self.stream, consumer=self.consumer
            )
        except NatsUnavailableError as e:
            logger.warning("%s", e)
            return False
        self.metrics.rewinds.inc()
        logger.warning(
            "consumer %s held %d deliveries of a previous process of ours; "
            "rewound it to stream sequence %d so they come again in order",
            self.consumer,
            held,
            first,
        )
        return True

    async def _adopt(self, info: ConsumerInfo) -> None:
        shards = owned_shards(info.config, prefix=self.settings.prefix, shards=self.settings.shards)
        self._refreshed = time.monotonic()
        if shards != self.shards:
            logger.info("consumer %s now owns shards %s", self.consumer, sorted(shards))
            self.shards = shards
            await self.host.shards_changed()

    async def _read_consumer(self) -> ConsumerState:
        """Our consumer as the server has it: "gone" is the end of the lane; "unknown"
        means no answer (a leader election, a reconnect), which is not."""
        if self.deleted.is_set():
            return "gone"
        info = await consumerstate.read_consumer(
            self.host.js, stream=self.settings.stream, consumer=self.consumer
        )
        if not isinstance(info, str):
            self._observe(info)
        return info

    def _observe(self, info: ConsumerInfo) -> None:
        """The lane's lag as just read: its gauges, and what its progress owes."""
        self.last_deliveries.observe(info)
        pending, ack_pending = info.num_pending or 0, info.num_ack_pending or 0
        self.metrics.observe_consumer(self.consumer, pending=pending, ack_pending=ack_pending)
        self.progress.heard(pending=pending, ack_pending=ack_pending)

    async def _refresh(self) -> None:
        """Re-read our consumer; FencedError if it is gone."""
        info = await self._read_consumer()
        if info == "gone":
            raise FencedError("consumer deleted", consumer=self.consumer)
        if info != "unknown":
            await self._adopt(info)

    async def _after_failed_settle(
        self, items: Sequence[Incoming], *, fetched_at: float
    ) -> Literal["fenced", "redelivered", "retry"]:
        """What a failed ack means: our consumer gone (fenced); its cursor put back behind
        the batch by a reset, or the batch past ``ack_wait`` (it will be delivered
        again; an ack for a delivery made before a reset gets no answer at all); or
        neither (its leader moved, the server is back: ack again)."""
        info = await self._read_consumer()
        if info == "gone":
            return "fenced"
        if info == "unknown":
            return "retry"
        cursor = (info.delivered.stream_seq if info.delivered else None) or 0
        first = min((i.stream_seq for i in items), default=0)
        ack_wait = info.config.ack_wait or 30.0
        if cursor < first or time.perf_counter() - fetched_at > ack_wait:
            return "redelivered"
        return "retry"

    async def _gone(self) -> bool:
        """Whether our consumer is known to be deleted; no answer is not gone."""
        return await self._read_consumer() == "gone"

    async def _fetch(self) -> list[Msg]:
        """One pull: the messages, or none on a timeout or a reconnect."""
        try:
            return await consumerstate.fetch(
                self._puller, self.settings.batch_size, timeout=self.settings.fetch_timeout
            )
        except PullError as e:
            # 503: no consumer answers the request; 409: deleted, leader moved, ...
            if await self._gone():
                raise FencedError(f"fetch refused: {e}", consumer=self.consumer) from e
            logger.warning("fetch refused, consumer %s still exists: %s", self.consumer, e)
            await self._pause(self.settings.fetch_timeout)  # not a hot loop meanwhile
            return []
        except NatsUnavailableError as e:
            # A reconnect in progress; the client retries by itself.
            logger.warning("fetch failed, retrying: %s", e)
            return []

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if the worker stops or the lane is deleted meanwhile."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stopping, self.deleted)]
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w

    async def _apply(self, msgs: Sequence[Msg], items: list[Incoming]) -> list[Applied] | None:
        """Apply a batch, holding it while the store is unavailable; None if stopped.

        Held, not nak'ed: a nak'ed batch comes back after the ones fetched behind
        it, and a shard's mark, moved past it by those, would refuse it as applied.
        Nothing is fetched meanwhile, so each shard's order is kept. A command the
        store refuses for a data reason is not held: ``apply_isolating`` dead-letters
        it and applies the rest; after an outage part-way, only the rest is retried.
        """
        host = self.host
        applied: list[Applied] = []
        for attempt in itertools.count():
            try:
                await host.applier.apply(
                    items[len(applied) :],
                    applied=applied,
                    stream=self.stream,
                    consumer=self.consumer,
                )
                return applied
            except StoreUnavailableError as e:
                self.metrics.store_retries.inc()
                logger.error(
                    "store refused a batch of %d (try %d), holding it: %s",
                    len(msgs),
                    attempt + 1,
                    e,
                )
            if await self._gone():
                raise FencedError(
                    "consumer deleted while the store was down", consumer=self.consumer
                )
            if self._stopping.is_set():
                return None  # unacked: delivered again after ack_wait, to us or the next owner
            # Keep the batch ours meanwhile (ack_wait restarts), in case the outage is long.
            await asyncio.gather(*(m.in_progress() for m in msgs), return_exceptions=True)
            await self._pause(min(STORE_RETRY_MAX, STORE_RETRY_FIRST * 2**attempt))
        raise AssertionError("unreachable")

    async def _handle(self, msgs: Sequence[Msg]) -> None:
        started = time.perf_counter()
        self.metrics.batch_size.observe(len(msgs))
        s = self.settings
        msgs = await self.last_deliveries.take(msgs, stream=self.stream.key)  # before all else
        if not msgs:
            self.progress.settled()
            return
        items = [
            decode(
                m,
                prefix=s.prefix,
                shards=s.shards,
                max_payload=s.max_payload,
                reply_prefix=s.reply_prefix,
                stream=self.stream.key,
            )
            for m in msgs
        ]
        applied = await self._apply(msgs, items)
        if applied is None:
            return
        items = [i for i, _ in applied]  # a command the store refused is now a bad one
        outcomes = [o for _, o in applied]
        # Settle in order; the last good message is acked with ack_sync. JetStream
        # applies a consumer's acks in arrival order, so its confirmation covers the
        # plain acks before it on this connection. If it fails, the lane ends only
        # if its consumer is gone: an ack also fails while the consumer's leader
        # dies or moves, and a consumer that lives on must get these acks (they are
        # idempotent), or it holds the batch until ack_wait while it delivers the
        # same shards' later messages: out of order, and past the shards' marks.
        last_good = max((n for n, i in enumerate(items) if i.bad is None), default=-1)
        batch = list(zip(msgs, items, outcomes, strict=True))
        counted = 0  # messages of the batch whose outcome was counted and logged
        for attempt in itertools.count():
            try:
                for n, (m, i, o) in enumerate(batch):
                    await self.settle(m, i, o, sync=n == last_good, again=n < counted)
                    counted = max(counted, n + 1)
                break
            except NatsUnavailableError as e:
                verdict = await self._after_failed_settle(items, fetched_at=started)
                if verdict == "fenced":
                    raise FencedError(
                        f"settling a batch of {len(msgs)} failed: {e!r}", consumer=self.consumer
                    ) from e
                if verdict == "redelivered":
                    # Reset under us (or past ack_wait): the batch comes again, in
                    # stream order, and is answered from its stored outcomes.
                    logger.warning(
                        "leaving a batch of %d unacked: consumer %s will deliver it again (%r)",
                        len(msgs),
                        self.consumer,
                        e,
                    )
                    return
                self.metrics.ack_retries.inc()
                logger.warning(
                    "settling a batch of %d failed, consumer %s still exists, retrying: %r",
                    len(msgs),
                    self.consumer,
                    e,
                )
                await asyncio.sleep(min(ACK_RETRY_MAX, ACK_RETRY_FIRST * 2**attempt))
        self.progress.settled()
        elapsed = time.perf_counter() - started
        for _ in msgs:
            self.metrics.latency.observe(elapsed)
        cache = self.host.cache
        self.metrics.observe_cache(hits=cache.hits, misses=cache.misses, entries=len(cache))

    async def settle(
        self, msg: Msg, item: Incoming, outcome: Outcome, *, sync: bool, again: bool = False
    ) -> None:
        """``settle`` on this lane's connection (one seam a test can wrap)."""
        await settle(self.host.nc, msg, item, outcome, metrics=self.metrics, sync=sync, again=again)


async def settle(
    nc: Client,
    msg: Msg,
    item: Incoming,
    outcome: Outcome,
    *,
    metrics: Metrics,
    sync: bool,
    again: bool = False,
) -> None:
    """Reply (if asked), then ack (``ack_sync`` if ``sync``), or term a bad message.

    A reply that fails is logged, counted and skipped: the outcome is stored,
    and a retry of the command is answered from it; taking it for a failed ack
    would hold the batch (and its shards) until ``ack_wait``, then fail again.

    ``again``: settled before, in a try that failed later in its batch; the reply
    and ack go out again (a client ignores a second reply, JetStream a second
    ack), but nothing is counted or logged twice.
    """
    if item.reply:
        body = outcome.model_dump_json(exclude_none=True).encode()
        try:
            await consumerstate.reply(nc, item.reply, body)
        except ReplyError as e:
            metrics.reply_failures.inc()
            logger.warning("no reply for stream_seq=%d, settling it anyway: %s", item.stream_seq, e)
    if not again:
        _count(metrics, item, outcome)
    elif msg.reply:
        # nats-py refuses a second ack of a Msg; the server takes it (and ignores
        # it if the first arrived), so send the same ack message again ourselves.
        body = _TERM if item.bad is not None else _ACK
        timeout = ACK_SYNC_TIMEOUT if sync else None
        await consumerstate.resend(nc, msg.reply, body, timeout=timeout)
        return
    if item.bad is not None:
        await consumerstate.term(msg)
    elif sync:
        await consumerstate.ack_sync(msg, timeout=ACK_SYNC_TIMEOUT)
    else:
        await consumerstate.ack(msg)


def _count(metrics: Metrics, item: Incoming, outcome: Outcome) -> None:
    if item.redelivered:
        metrics.redeliveries.inc()
    if item.bad is not None:
        logger.error(
            "dead-lettered stream_seq=%d subject=%s: %s",
            item.stream_seq,
            item.subject,
            item.bad.reason,
        )
        metrics.dead_letters.inc()
        metrics.commands.labels(op="?", outcome="bad").inc()
        return
    assert item.command is not None
    label = "ok" if outcome.ok or outcome.error is None else outcome.error.code.value
    metrics.commands.labels(op=item.command.op, outcome=label).inc()
