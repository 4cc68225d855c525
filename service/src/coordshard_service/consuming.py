"""The pull loop: bind to our consumer, fetch, apply, reply, ack — and notice fencing.

The worker never creates consumers; the rebalancer does, and rewrites their
``filter_subjects`` when shards move. So the worker waits until a consumer of
its member exists (``discovery``: under a generation it learns from the
server, new after every fence), learns its shards from the consumer's filters,
and re-reads them on every empty fetch and at least once a second while busy,
dropping the cache entries of shards it no longer owns.

Settling lives in one function, ``settle``: reply if the caller gave a reply
subject, then ack (or ``term`` for a bad message, which was already kept as a
dead letter in the batch transaction). A reply goes only to a subject under the
reply prefix that ``reply_problem`` accepts (``decode`` dead-letters the rest);
one that fails all the same is counted and skipped, never taken for a failed ack.
The batch's last ack is ``ack_sync``: the server applies a consumer's acks in
order, so that one confirmation covers the batch, at one round trip instead of
one per message.

An ack or a fetch that fails makes the worker ask whether its consumer still
exists. Gone means fenced: stop, drop the cache and the deliveries in hand,
and wait for a consumer of ours again (a new one: its name is new, so acks
we still send to the old one count on nothing); nothing is lost, since whatever we committed
but did not ack is redelivered to the new owner and answered from its stored
outcome. Still there (its leader died or moved; the server was unreachable):
send the acks again until they are confirmed. Dropping the deliveries of a
living consumer would leave them pending until ``ack_wait`` while it goes on
delivering the same shards' later messages: out of order, and (for a batch
fetched but not yet applied) past the shards' marks, which would refuse them.

What the server says goes through ``consumerstate``: it reads our consumer
(``ConsumerInfo``, "gone" or "unknown") and turns nats-py's errors into ours,
so this module catches only the worker's own errors.

Each bind also reads which instance of the stream we serve (its name and
creation time), since a stream deleted and re-created under a kept store
deletes our consumer too, and so always comes after a fence: the store counts
marks per instance, and the worker says so when it finds a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from pydantic import ValidationError

from coordshard_client.messages import (
    HEADER_KEY,
    HEADER_REPLY,
    Envelope,
    ErrorCode,
    Outcome,
    check_key,
)
from coordshard_client.subjects import (
    DEFAULT_REPLY_PREFIX,
    STREAM_META_SHARDS,
    InvalidSubjectError,
    parse_shard_filter,
    parse_subject,
    reply_problem,
    shard_of,
)
from coordshard_service import consumerstate
from coordshard_service.cache import Cache
from coordshard_service.commands import Applied, Incoming, apply_isolating
from coordshard_service.consumerstate import ConsumerState, StreamInstance
from coordshard_service.discovery import Discovery, waiting_hint
from coordshard_service.errors import (
    BadMessageError,
    ConfigError,
    FencedError,
    NatsUnavailableError,
    ReplyError,
    StoreUnavailableError,
)
from coordshard_service.lastdelivery import LastDeliveries
from coordshard_service.metrics import Metrics
from coordshard_service.natsconnect import RAW
from coordshard_service.progress import Progress
from coordshard_service.pulling import Puller, PullError
from coordshard_service.settings import ServiceSettings
from coordshard_service.store import Store

__all__ = ["Worker", "WorkerState", "decode", "owned_shards"]

logger = logging.getLogger(__name__)

_ACK = b"+ACK"
_TERM = b"+TERM"
"""JetStream's ack protocol bodies (what ``Msg.ack`` and ``Msg.term`` publish)."""

WorkerState = Literal["starting", "waiting", "bound", "stopped"]
"""waiting: no consumer of ours exists (no shards yet, or fenced); bound: serving it."""

REFRESH_SECONDS = 1.0
"""Longest a busy worker goes without re-reading its consumer's filters."""
IDLE_REFRESH_SECONDS = 0.25
"""Least time between two re-reads on empty fetches: pulls are short (they bound failover
latency), and a consumer read on every one would be a JetStream API call per pull."""
BIND_RETRY_SECONDS = 0.2
"""Seconds before another try to bind after NATS did not answer."""
ACK_RETRY_FIRST = 0.05
ACK_RETRY_MAX = 1.0
"""Seconds between tries to settle a batch whose consumer exists but did not confirm."""
ACK_SYNC_TIMEOUT = 2.0
"""Seconds the batch's last ack waits for the server's confirmation."""
STORE_RETRY_FIRST = 0.2
STORE_RETRY_MAX = 5.0
"""Seconds between tries to apply a batch the store refused."""


def owned_shards(info: ConsumerInfo, *, prefix: str) -> set[int]:
    """The shards a consumer's filters name (``<prefix>.<shard>.>``, see ``shard_filter``).

    A filter of another form selects no shard of ours and is passed over.
    """
    config = info.config
    filters = list(config.filter_subjects or [])
    if config.filter_subject:
        filters.append(config.filter_subject)
    shards = (parse_shard_filter(f, prefix=prefix) for f in filters)
    return {s for s in shards if s is not None}


def _reason(error: ValidationError) -> tuple[str, ErrorCode]:
    kinds = {e["type"] for e in error.errors()}
    if "json_invalid" in kinds or "json_type" in kinds:
        return "malformed JSON", ErrorCode.VALIDATION
    if "union_tag_invalid" in kinds:
        return "unknown op", ErrorCode.VALIDATION
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"schema-invalid: {where}: {first['msg']}", ErrorCode.VALIDATION


def decode(
    msg: Msg,
    *,
    prefix: str,
    shards: int,
    max_payload: int,
    stream: str,
    reply_prefix: str = DEFAULT_REPLY_PREFIX,
) -> Incoming:
    """Turn a fetched message into an ``Incoming``: a valid command, or the reason it is bad.

    A reply header that ``reply_problem`` refuses makes the message bad, and it is
    not answered: its reply would go where replies do not belong, cost the
    connection, or fail the settle.

    ``stream``: the stream instance it came from (``StreamInstance.key``). A message
    without a key is keyed by its sequence in that instance, since keys dedupe
    across instances and a new instance's sequence 1 is not the old one's.
    """
    headers = dict(msg.headers or {})
    meta = msg.metadata
    seq = meta.sequence.stream
    published_at = meta.timestamp.timestamp() if meta.timestamp else None
    reply = headers.get(HEADER_REPLY)
    bad_reply = reply_problem(reply, prefix=reply_prefix) if reply is not None else None
    if bad_reply is not None:
        reply = None
    key = headers.get(HEADER_KEY) or headers.get("Nats-Msg-Id") or f"{stream}:seq-{seq}"
    raw_subject: bytes | None = None  # set when the subject is not UTF-8 on the wire
    subject_text = msg.subject
    try:
        msg.subject.encode()
    except UnicodeEncodeError:  # lone surrogates: see natsconnect.WorkerClient
        raw_subject = msg.subject.encode("utf-8", RAW)
        subject_text = raw_subject.decode("utf-8", "backslashreplace")

    def bad(reason: str, shard: int = -1, code: ErrorCode = ErrorCode.VALIDATION) -> Incoming:
        return Incoming(
            stream_seq=seq,
            subject=subject_text,
            shard=shard,
            key=key,
            reply=reply,
            command=None,
            bad=BadMessageError(reason, code=code),
            headers=headers,
            data=msg.data,
            redelivered=meta.num_delivered > 1,
            published_at=published_at,
        )

    if raw_subject is not None:
        # Stored as text with each undecodable byte as \xNN; the reason keeps the bytes.
        return bad(f"subject is not UTF-8: {raw_subject!r}")
    try:
        subject = parse_subject(msg.subject, prefix=prefix)
    except InvalidSubjectError as e:
        return bad(f"bad subject: {e}")
    if bad_reply is not None:
        return bad(f"bad reply subject ({HEADER_REPLY}): {bad_reply}", subject.shard)
    try:
        check_key(key)  # the store keeps it; refuse here what it could not hold
    except ValueError as e:
        header = HEADER_KEY if headers.get(HEADER_KEY) else "Nats-Msg-Id"
        return bad(f"bad {header} header: {e}", subject.shard)
    if len(msg.data) > max_payload:
        return bad(f"oversize payload: {len(msg.data)} bytes > {max_payload}", subject.shard)
    try:
        envelope = Envelope.model_validate_json(msg.data)
    except ValidationError as e:
        reason, code = _reason(e)
        return bad(reason, subject.shard, code)
    command = envelope.command
    if command.op != subject.op or command.system_id != subject.system_id:
        return bad(
            f"subject says {subject.op} {subject.system_id}, "
            f"payload says {command.op} {command.system_id}",
            subject.shard,
        )
    expected = shard_of(subject.system_id, shards)
    if subject.shard != expected:
        return bad(
            f"wrong shard: system {subject.system_id!r} belongs to shard {expected} "
            f"of {shards}, not {subject.shard}",
            subject.shard,
        )
    return Incoming(
        stream_seq=seq,
        subject=msg.subject,
        shard=subject.shard,
        key=key,
        reply=reply,
        command=command,
        headers=headers,
        data=msg.data,  # kept in case the store refuses it (see apply_isolating)
        redelivered=meta.num_delivered > 1,
        published_at=published_at,
    )


class Worker:
    """One member of the group: binds to its consumer and serves its shards."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        nc: Client,
        store: Store,
        cache: Cache,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.store = store
        self.cache = cache
        self.metrics = metrics
        self.member = settings.member_id
        """Our member id: the stem of our consumers' names."""
        self.consumer = ""
        """The consumer we are (or were last) bound to; "" before the first bind."""
        self.discovery = Discovery(nc, stream=settings.stream, member=self.member)
        self.stream: StreamInstance | None = None
        """The stream instance of our last bind (kept while unbound, to compare)."""
        self.shards: set[int] = set()
        self.state: WorkerState = "starting"
        self._puller: Puller | None = None
        self._refreshed = 0.0
        self._stopping = asyncio.Event()
        """The ``stop`` given to ``run``."""
        self._pruned = time.monotonic()
        self.progress = Progress()
        """Fed by the loop; what /readyz and /healthz follow (``stuck``)."""
        self.last_deliveries = LastDeliveries(nc, store=store, metrics=metrics)
        """Takes each batch's last deliveries (``max_deliver``) out first, dead-lettered."""

    @property
    def bound(self) -> bool:
        """Bound to our consumer and serving its shards."""
        return self.state == "bound"

    def status(self) -> dict[str, object]:
        """What /readyz reports; ``stuck_s`` and ``stuck`` say if and why the loop is stuck."""
        stuck, why = self.progress.stuck()
        body: dict[str, object] = {
            "state": self.state,
            "member": self.member,
            "consumer": self.consumer or None,
            "stream": self.stream.key if self.stream else None,
            "shards": sorted(self.shards),
            "nats": self.nc.is_connected,
            "stuck_s": round(stuck, 3),
        }
        if stuck > self.settings.stall_timeout:
            body["stuck"] = why
        return body

    def serving(self) -> bool:
        """Not stuck for longer than ``stall_timeout`` (readiness)."""
        return self.progress.stuck()[0] <= self.settings.stall_timeout

    def alive(self) -> bool:
        """Not stuck for longer than twice ``stall_timeout`` (liveness)."""
        return self.progress.stuck()[0] <= 2 * self.settings.stall_timeout

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; the batch in hand is finished and acked first."""
        self._stopping = stop
        await self.discovery.start()  # before the first look-up, so no creation is missed
        try:
            while not stop.is_set():
                if not await self._bind(stop):
                    break
                try:
                    await self._serve(stop)
                except FencedError as e:
                    self.metrics.fenced.inc()
                    logger.warning("fenced, waiting for a new consumer of ours: %s", e)
                    await self._unbind()
            await self._unbind()
        finally:
            await self.discovery.stop()
        self.state = "stopped"

    async def _find(self) -> ConsumerState:
        """Our newest consumer, naming it ``self.consumer``; "gone" if there is none."""
        try:
            name = await self.discovery.find()
        except NatsUnavailableError as e:
            logger.warning("%s", e)
            return "unknown"
        if name is None:
            return "gone"
        self.consumer = name
        return await self._read_consumer()

    async def _bind(self, stop: asyncio.Event) -> bool:
        """Wait for a consumer of ours to exist and bind to it; False if stopped first."""
        logged = False
        self.state = "waiting"
        self.progress.bind(False)
        while not stop.is_set():
            self.progress.beat()
            info = await self._find()
            if info == "gone":
                if not logged:
                    logger.info(
                        "waiting for a consumer of %s on stream %s; %s",
                        self.member,
                        self.settings.stream,
                        waiting_hint(
                            group=self.settings.group,
                            stream=self.settings.stream,
                            pod=self.settings.pod_name,
                            listed=self.discovery.listed,
                        ),
                    )
                    logged = True
            elif info != "unknown":  # "unknown" was logged by read_consumer
                try:
                    puller = await consumerstate.open_puller(
                        self.nc, stream=self.settings.stream, consumer=self.consumer
                    )
                except NatsUnavailableError as e:
                    logger.warning("%s", e)
                else:
                    self._puller = puller
                    if await self._enter_stream() and await self._take_over(info):
                        self._adopt(info)
                        self.state = "bound"
                        self.progress.bind(True)
                        logger.info(
                            "bound to consumer %s, shards %s", self.consumer, sorted(self.shards)
                        )
                        return True
                    await self._unbind()
            # None of ours: the next advisory (or the slow timer) says when to look again.
            # No answer, or a bind that failed: try again soon.
            wait = self.settings.bind_poll if info == "gone" else BIND_RETRY_SECONDS
            await self.discovery.wait(stop, min(wait, self.settings.bind_poll))
        return False

    async def _enter_stream(self) -> bool:
        """Read the stream instance we now serve; False if NATS did not answer.

        Raises ConfigError if the stream records a shard count other than ours: we
        would judge every command's shard by another N, and refuse them all."""
        try:
            instance = await consumerstate.stream_instance(self.js, self.settings.stream)
        except NatsUnavailableError as e:
            logger.warning("%s", e)
            return False
        if instance.shards is not None and instance.shards != self.settings.shards:
            raise ConfigError(
                f"stream {instance.name} records {instance.shards} shards "
                f"({STREAM_META_SHARDS} in its metadata), but this worker was given "
                f"shards={self.settings.shards}: set COORDSHARD_SHARDS (--shards) to "
                f"{instance.shards}, the group's"
            )
        if self.stream is None or self.stream.key != instance.key:
            await self._notice_instance(instance)
        self.stream = instance
        return True

    async def _notice_instance(self, instance: StreamInstance) -> None:
        """Log and count a stream instance new to us or to the store.

        New: we served another instance before this bind, or the store has marks
        of our group for another instance of this stream and none for this one
        (a stream re-created while the store kept its data, or a server that lost
        its storage). Nothing needs doing: the store's marks start afresh for it.
        """
        try:
            known = await asyncio.to_thread(self.store.stream_instances)
        except StoreUnavailableError as e:
            logger.warning("reading the store's stream instances: %s", e)
            known = set()
        others = sorted(k for k in known if k.startswith(f"{instance.name}@"))
        served = self.stream is not None and self.stream.key != instance.key
        if served or (instance.key not in known and others):
            self.metrics.stream_instances.inc()
            logger.warning(
                "stream %s is a new instance (created %s): sequence marks start afresh "
                "(before: %s)",
                instance.name,
                instance.created.isoformat(),
                self.stream.key if served and self.stream else ", ".join(others),
            )

    async def _take_over(self, info: ConsumerInfo) -> bool:
        """Make our consumer deliver in stream order from here; False if NATS did not answer.

        A consumer that has deliveries pending when we bind holds them for a
        process of ours that died: a container restarted in place keeps its pod
        UID, so its consumer, and within the grace period nothing moves. Those
        deliveries would come back only after ``ack_wait``, behind the later
        commands of their shards, and be applied late, out of order. So we
        rewind first: the consumer delivers everything left on our shards again,
        oldest first; what the dead process committed is answered from its
        stored outcomes, the rest is applied in order.
        """
        held = info.num_ack_pending or 0
        if held == 0:
            return True
        assert self.stream is not None
        try:
            first = await consumerstate.rewind(self.js, stream=self.stream, consumer=self.consumer)
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

    async def _unbind(self) -> None:
        self.state = "waiting"
        self.progress.bind(False)
        self.cache.clear()
        self.shards = set()
        self.metrics.owned_shards.set(0)
        self.metrics.forget_consumer(self.consumer)
        if self._puller is not None:
            puller, self._puller = self._puller, None
            try:
                await consumerstate.close_puller(puller)
            except NatsUnavailableError as e:
                logger.debug("%s", e)

    def _adopt(self, info: ConsumerInfo) -> None:
        shards = owned_shards(info, prefix=self.settings.prefix)
        if shards != self.shards:
            dropped = self.cache.retain(shards)
            logger.info(
                "consumer %s now owns shards %s (cache dropped %s)",
                self.consumer,
                sorted(shards),
                dropped,
            )
            self.shards = shards
            self.metrics.owned_shards.set(len(shards))
        self._refreshed = time.monotonic()

    async def _read_consumer(self) -> ConsumerState:
        """Our consumer as the server has it: "gone" is the fence; "unknown" means no
        answer (a leader election, a reconnect), which is not a fence."""
        info = await consumerstate.read_consumer(
            self.js, stream=self.settings.stream, consumer=self.consumer
        )
        if not isinstance(info, str):
            self.last_deliveries.observe(info)
            pending, ack_pending = info.num_pending or 0, info.num_ack_pending or 0
            self.metrics.observe_consumer(self.consumer, pending=pending, ack_pending=ack_pending)
            if self.progress.bound:
                self.progress.heard(pending=pending, ack_pending=ack_pending)
        return info

    async def _refresh(self) -> None:
        """Re-read our consumer; FencedError if it is gone."""
        info = await self._read_consumer()
        if info == "gone":
            raise FencedError("consumer deleted", consumer=self.consumer)
        if info != "unknown":
            self._adopt(info)

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
        """Whether our consumer is known to be deleted (fenced); no answer is not gone."""
        return await self._read_consumer() == "gone"

    async def _serve(self, stop: asyncio.Event) -> None:
        """Pull, handle, repeat; a batch pulled as ``stop`` is set is still handled."""
        while not stop.is_set():
            self.progress.beat()
            await self._prune()
            msgs = await self._fetch()
            if not msgs:
                if time.monotonic() - self._refreshed > IDLE_REFRESH_SECONDS:
                    await self._refresh()
                continue
            await self._handle(msgs)
            if time.monotonic() - self._refreshed > REFRESH_SECONDS:
                await self._refresh()

    async def _fetch(self) -> list[Msg]:
        """One pull: the messages, or none on a timeout or a reconnect."""
        assert self._puller is not None
        try:
            return await consumerstate.fetch(
                self._puller, self.settings.batch_size, timeout=self.settings.fetch_timeout
            )
        except PullError as e:
            # 503: no consumer answers the request; 409: deleted, leader moved, ...
            if await self._gone():
                raise FencedError(f"fetch refused: {e}", consumer=self.consumer) from e
            logger.warning("fetch refused, consumer %s still exists: %s", self.consumer, e)
            await asyncio.sleep(self.settings.fetch_timeout)  # not a hot loop meanwhile
            return []
        except NatsUnavailableError as e:
            # A reconnect in progress; the client retries by itself.
            logger.warning("fetch failed, retrying: %s", e)
            return []

    async def _prune(self) -> None:
        """Forget stored outcomes past their retention, every ``prune_interval``."""
        now = time.monotonic()
        if now - self._pruned < self.settings.prune_interval:
            return
        self._pruned = now
        try:
            gone = await asyncio.to_thread(
                self.store.prune_outcomes, older_than=self.settings.outcome_retention
            )
        except StoreUnavailableError as e:
            logger.warning("pruning outcomes: %s", e)
            return
        if gone:
            logger.info("pruned %d stored outcomes", gone)

    async def _apply(self, msgs: Sequence[Msg], items: list[Incoming]) -> list[Applied] | None:
        """Apply a batch, holding it while the store is unavailable; None if stopped or fenced.

        Held, not nak'ed: a nak'ed batch comes back after the ones fetched behind
        it, and a shard's mark, moved past it by those, would refuse it as applied.
        Nothing is fetched meanwhile, so each shard's order is kept. A command the
        store refuses for a data reason is not held: ``apply_isolating`` dead-letters
        it and applies the rest; after an outage part-way, only the rest is retried.
        """
        s = self.settings
        applied: list[Applied] = []
        assert self.stream is not None
        for attempt in itertools.count():
            try:
                await asyncio.to_thread(
                    apply_isolating,
                    self.store,
                    self.cache,
                    items[len(applied) :],
                    applied=applied,
                    shards=s.shards,
                    stream=self.stream.key,
                    consumer=self.consumer,
                    metrics=self.metrics,
                    retention=s.outcome_retention,
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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), min(STORE_RETRY_MAX, STORE_RETRY_FIRST * 2**attempt)
                )
        raise AssertionError("unreachable")

    async def _handle(self, msgs: Sequence[Msg]) -> None:
        started = time.perf_counter()
        self.metrics.batch_size.observe(len(msgs))
        s = self.settings
        assert self.stream is not None
        stream = self.stream.key
        msgs = await self.last_deliveries.take(msgs, stream=stream)  # before anything else
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
                stream=stream,
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
        # plain acks before it on this connection. If it fails, we are fenced only
        # if our consumer is gone: an ack also fails while the consumer's leader
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
        self.metrics.observe_cache(
            hits=self.cache.hits, misses=self.cache.misses, entries=len(self.cache)
        )

    async def settle(
        self, msg: Msg, item: Incoming, outcome: Outcome, *, sync: bool, again: bool = False
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
                await consumerstate.reply(self.nc, item.reply, body)
            except ReplyError as e:
                self.metrics.reply_failures.inc()
                logger.warning(
                    "no reply for stream_seq=%d, settling it anyway: %s", item.stream_seq, e
                )
        if not again:
            self._count(item, outcome)
        elif msg.reply:
            # nats-py refuses a second ack of a Msg; the server takes it (and ignores
            # it if the first arrived), so send the same ack message again ourselves.
            body = _TERM if item.bad is not None else _ACK
            timeout = ACK_SYNC_TIMEOUT if sync else None
            await consumerstate.resend(self.nc, msg.reply, body, timeout=timeout)
            return
        if item.bad is not None:
            await consumerstate.term(msg)
        elif sync:
            await consumerstate.ack_sync(msg, timeout=ACK_SYNC_TIMEOUT)
        else:
            await consumerstate.ack(msg)

    def _count(self, item: Incoming, outcome: Outcome) -> None:
        if item.redelivered:
            self.metrics.redeliveries.inc()
        if item.bad is not None:
            logger.error(
                "dead-lettered stream_seq=%d subject=%s: %s",
                item.stream_seq,
                item.subject,
                item.bad.reason,
            )
            self.metrics.dead_letters.inc()
            self.metrics.commands.labels(op="?", outcome="bad").inc()
            return
        assert item.command is not None
        label = "ok" if outcome.ok or outcome.error is None else outcome.error.code.value
        self.metrics.commands.labels(op=item.command.op, outcome=label).inc()
