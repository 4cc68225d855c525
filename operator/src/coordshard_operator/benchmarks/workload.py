"""Simulated workers and a publisher: the load the handoff benchmark and tests drive.

A ``SimWorker`` behaves like a real worker as far as the engine is concerned:
it waits for its consumers to exist (workers never create consumers; it
serves every one of its member's, so several lanes on a blocks stream), pulls,
records ``(consumer, shard, stream sequence)`` for every message it processes,
and acks with ``ack_sync``. An ack that fails, or a consumer that vanished,
means "possibly fenced": it asks whether its consumer still exists. A
consumer that is gone (deleted: the fence) makes it drop its subscription and
the deliveries in hand and wait for its consumer again; one whose cursor went
back behind the message (a reset, whose redelivery brings it again in order)
makes it drop the deliveries in hand and pull again; otherwise it retries. ``crash()`` cancels it
mid-flight, like kill -9, and remembers which processed messages it had not
seen acked: those are the only duplicates the new owners may process.

Why a worker must not give up deliveries of a consumer that still exists: an
ack fails whenever the consumer's Raft leader dies or moves (NoResponders or a
timeout), and the consumer lives on. The deliveries it dropped stay pending
on the server until ``ack_wait`` runs out (or the next reset), while the
consumer goes on delivering the same shards' later messages: per-shard order
breaks, and a worker that dedupes by a per-shard high-water mark would then
refuse the stranded messages as already applied. Measured on R3 with kill -9
of the consumer leader between a delivery and its ack.

The ``Ledger`` holds what was published and what was processed, and checks
the properties the handoff must keep: nothing lost, each consumer sees each
shard in stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo

from coordshard_client.naming import generation_of
from coordshard_client.subjects import shard_of
from coordshard_client.tasks import cancel_and_wait

__all__ = ["Ledger", "Publisher", "SimWorker", "ids_per_shard", "wait_jetstream"]


def ids_per_shard(shards: int) -> list[str]:
    """One system id per shard: ``[i]`` hashes to shard i (``shard_of``).

    A benchmark publishing "on shard s" must use such an id: a stream of the blocks
    layout stores a message under the block of its *id* (the server's partition()),
    whatever shard token it was published with.
    """
    found: dict[int, str] = {}
    j = 0
    while len(found) < shards:
        found.setdefault(shard_of(f"s{j}", shards), f"s{j}")
        j += 1
    return [found[s] for s in range(shards)]


AckResult = Literal["acked", "dropped", "fenced"]


@dataclass
class Ledger:
    """Everything published and processed in one run."""

    published: set[int] = field(default_factory=set)
    processed: list[tuple[str, int, int]] = field(default_factory=list)
    """(consumer, shard, stream sequence), in processing order."""
    crashed_unacked: int = 0
    """Messages processed by crashed workers whose ack was not confirmed."""
    failed_acks: int = 0
    """Messages processed whose ``ack_sync`` failed at least once (fenced, or a leader
    election): each may be processed again."""
    last_seen: dict[tuple[str, int], float] = field(default_factory=dict)
    """(consumer, shard) → loop time it last processed a message of that shard."""
    redelivered: set[int] = field(default_factory=set)
    """Stream sequences processed at least once from a delivery that was not the first."""

    def missing(self) -> set[int]:
        return self.published - {seq for _, _, seq in self.processed}

    def duplicates(self) -> int:
        return len(self.processed) - len({seq for _, _, seq in self.processed})

    def out_of_order(self) -> list[tuple[str, int, int, int]]:
        """(consumer, shard, earlier seq, later seq) where a shard went backwards.

        Replays of messages already processed are duplicates (see ``duplicates``),
        not reordering; the order is checked over first processings.
        """
        last: dict[tuple[str, int], int] = {}
        seen: set[int] = set()
        bad = []
        for consumer, shard, seq in self.processed:
            if seq in seen:
                continue
            seen.add(seq)
            prev = last.get((consumer, shard))
            if prev is not None and seq <= prev:
                bad.append((consumer, shard, prev, seq))
            last[(consumer, shard)] = seq
        return bad

    def by_consumer(self) -> dict[str, set[int]]:
        shards: dict[str, set[int]] = defaultdict(set)
        for consumer, shard, _ in self.processed:
            shards[consumer].add(shard)
        return shards


async def every_consumer(js: JetStreamContext, stream: str) -> list[ConsumerInfo]:
    """The stream's consumers, every page: ``consumers_info`` returns one page (256)."""
    found: list[ConsumerInfo] = []
    while page := await js.consumers_info(stream, offset=len(found)):
        found.extend(page)
    return found


class SimWorker:
    """An in-process pull worker bound to every consumer (lane) of one member.

    ``consumer`` is the member id (``coordshard_client.naming.member_id``); its
    consumers are named ``<member id>_g<generation>``. It lists them once at the
    start and learns of each new one from JetStream's consumer-created advisory
    (no polling), and serves each on its own pull loop until that consumer is
    gone. The ledger records the member id. Stored subjects may carry a block
    token (``<prefix>.b.<block>.<shard>.<id>.<op>``): the shard is the third
    token from the end either way.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        consumer: str,
        ledger: Ledger,
        batch: int = 16,
        fetch_timeout_s: float = 0.1,
        on_processed: Callable[[str, int], Awaitable[None]] | None = None,
    ) -> None:
        self.js = js
        self.stream = stream
        self.member = consumer
        self.consumer = consumer
        """The consumer bound last (the member id until one is found)."""
        self.ledger = ledger
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        """How long one pull waits; a pull pending across a reset may wait it out."""
        self.in_hand: set[int] = set()
        self.fenced_acks = 0
        """Messages whose ack failed at least once (fenced, or a leader election)."""
        self._on_processed = on_processed
        """Awaited with (consumer, stream sequence) after processing, before the ack
        (tests inject failures here)."""
        self._task: asyncio.Task[None] | None = None
        self._lanes: dict[str, asyncio.Task[None]] = {}
        """Consumer name → the pull loop serving it."""

    def start(self) -> SimWorker:
        self._task = asyncio.create_task(self._run(), name=f"worker {self.member}")
        return self

    @property
    def lanes(self) -> list[str]:
        """The consumers being served now."""
        return sorted(n for n, t in self._lanes.items() if not t.done())

    async def _exists(self, name: str) -> bool:
        """Whether the consumer exists; raises on a transient failure (no answer)."""
        try:
            await self.js.consumer_info(self.stream, name, timeout=1)
        except nats.js.errors.NotFoundError:
            return False
        return True

    def _ours(self, name: str) -> bool:
        return generation_of(name, member=self.member) is not None

    def _serve(self, name: str) -> None:
        task = self._lanes.get(name)
        if task is None or task.done():
            self.consumer = name
            self._lanes[name] = asyncio.create_task(self._lane(name), name=f"lane {name}")

    async def _run(self) -> None:
        nc = self.js._nc
        created = asyncio.Queue[str]()

        async def on_created(msg: Msg) -> None:
            created.put_nowait(msg.subject.rsplit(".", 1)[-1])

        advisory = f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{self.stream}.*"
        sub = await nc.subscribe(advisory, cb=on_created)
        try:
            while True:  # the first listing; after it, the advisories
                try:
                    for info in await every_consumer(self.js, self.stream):
                        if self._ours(info.name):
                            self._serve(info.name)
                    break
                except (TimeoutError, nats.errors.Error):
                    await asyncio.sleep(0.02)  # back off, then list again
            while True:
                name = await created.get()
                if self._ours(name):
                    self._serve(name)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _lane(self, name: str) -> None:
        """Serve one consumer until it is gone (deleted: the fence, or a retired lane)."""
        while True:
            try:
                sub = await self.js.pull_subscribe_bind(durable=name, stream=self.stream)
                try:
                    if await self._pull(sub, name):
                        return
                finally:
                    with contextlib.suppress(nats.errors.Error):
                        await sub.unsubscribe()
            except (TimeoutError, nats.errors.Error):
                await asyncio.sleep(0.02)  # back off, then bind again

    async def _gone(self, name: str) -> bool:
        """Whether the consumer is known to be deleted; no answer counts as not gone."""
        try:
            return not await self._exists(name)
        except (TimeoutError, nats.errors.Error):
            return False

    async def _pull(self, sub: JetStreamContext.PullSubscription, name: str) -> bool:
        """Serve ``sub`` until its consumer is gone (only then are deliveries dropped);
        True when it is."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                msgs = await sub.fetch(self.batch, timeout=self.fetch_timeout_s)
            except nats.errors.TimeoutError:
                msgs = []
            except nats.errors.Error:
                # A 503 while the consumer's leader is elected, or a deleted consumer:
                # _gone tells which. Back off either way.
                await asyncio.sleep(0.02)
                msgs = []
            if not msgs:
                if await self._gone(name):
                    return True
                continue
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                shard = int(msg.subject.split(".")[-3])
                self.in_hand.add(seq)
                self.ledger.processed.append((self.member, shard, seq))
                if msg.metadata.num_delivered > 1:
                    self.ledger.redelivered.add(seq)
                self.ledger.last_seen[(self.member, shard)] = loop.time()
                if self._on_processed is not None:
                    await self._on_processed(name, seq)
                result = await self._ack(msg, name)
                if result == "fenced":
                    return True
                self.in_hand.discard(seq)
                if result == "dropped":
                    break  # the rest of the batch comes again, in order

    async def _ack(self, msg: Msg, name: str) -> AckResult:
        """Ack ``msg``; after a failure, retry while the delivery is still outstanding.

        Acks are idempotent (a repeated ``ack_sync`` is answered). An ack for a
        delivery made before a reset gets no answer at all: the consumer's cursor
        is then behind the message, which comes again in stream order, so the
        messages in hand are dropped ("dropped"). A consumer that is gone is the
        fence ("fenced"). Past the consumer's ``ack_wait`` the server redelivers
        the message anyway, so retrying stops there too.
        """
        seq = msg.metadata.sequence.stream
        loop = asyncio.get_running_loop()
        started = loop.time()
        failed = False
        while True:
            try:
                await msg.ack_sync(timeout=2)
                return "acked"
            except (TimeoutError, nats.errors.Error):
                if not failed:
                    failed = True
                    self.fenced_acks += 1
                    self.ledger.failed_acks += 1
            try:
                info = await self.js.consumer_info(self.stream, name, timeout=1)
            except nats.js.errors.NotFoundError:
                return "fenced"
            except (TimeoutError, nats.errors.Error):
                await asyncio.sleep(0.05)  # the consumer's leader is being elected
                continue
            cursor = info.delivered.stream_seq if info.delivered else 0
            if cursor < seq or loop.time() - started > (info.config.ack_wait or 30.0):
                return "dropped"
            await asyncio.sleep(0.05)  # backoff before the next ack attempt

    async def crash(self) -> int:
        """Stop at once, as kill -9 would; return the processed messages never seen acked."""
        await self.stop()
        lost_acks = len(self.in_hand)
        self.ledger.crashed_unacked += lost_acks
        return lost_acks

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None
        for task in list(self._lanes.values()):
            await _cancel(task)
        self._lanes.clear()


async def _cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task``, wait for it to end, and raise what it failed with, if anything."""
    if task is None:
        return
    await cancel_and_wait(task, every=0.05)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


class Publisher:
    """Publishes commands over all shards until stopped, retrying with a message id."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        prefix: str,
        shards: int,
        ledger: Ledger,
        keys: int = 500,
        burst: int = 20,
        pause_s: float = 0.01,
    ) -> None:
        self.js = js
        self.prefix = prefix
        self.shards = shards
        self.ledger = ledger
        self.keys = keys
        self.burst = burst
        self.pause_s = pause_s
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Publisher:
        self._task = asyncio.create_task(self._run(), name="publisher")
        return self

    async def publish_one(self) -> None:
        key = f"sys-{self.count % self.keys}"
        subject = f"{self.prefix}.{shard_of(key, self.shards)}.{key}.op"
        msg_id = f"m{self.count}"
        while True:
            try:
                ack = await self.js.publish(
                    subject, b"x", headers={"Nats-Msg-Id": msg_id}, timeout=1
                )
                break
            except (TimeoutError, nats.errors.Error):
                await asyncio.sleep(0.05)  # retry; the duplicate window dedupes
        self.ledger.published.add(ack.seq)
        self.count += 1

    async def _run(self) -> None:
        while True:
            for _ in range(self.burst):
                await self.publish_one()
            await asyncio.sleep(self.pause_s)  # pacing, not synchronisation

    async def stop(self) -> None:
        await _cancel(self._task)
        self._task = None


async def wait_jetstream(js: JetStreamContext, *, timeout: float = 30.0) -> None:
    """Return once JetStream answers: a fresh cluster first elects a meta leader."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await js.account_info()
            return
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)  # polling a server that cannot tell us when it is ready
