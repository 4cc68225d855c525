"""The harness of the consumer-layout spike: timed requests, pull workers, a delivery log.

Kept apart from the candidates (``layoutcases``) so every layout is driven and
measured by the same code: the same pull loop (``fetch`` + ``ack``), the same
clock, the same way of counting JetStream requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from coordshard_client.tasks import cancel_and_wait

__all__ = ["Deliveries", "DeliverySink", "Member", "Puller", "Requests", "Workers", "chunks"]

T = TypeVar("T")


def chunks(items: Iterable[int], size: int) -> list[list[int]]:
    """``items`` sorted and cut into runs of at most ``size``."""
    ordered = sorted(items)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


@dataclass
class Requests:
    """Every JetStream request of one phase: its kind, duration and span."""

    log: list[tuple[str, str, float, float]] = field(default_factory=list)
    """(kind, consumer, started, ended), ``time.monotonic`` seconds (the loop's clock)."""

    async def timed(self, kind: str, consumer: str, op: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            return await op
        finally:
            self.log.append((kind, consumer, started, time.monotonic()))

    def wrap(self, obj: object, names: Iterable[str]) -> None:
        """Time every call of ``obj``'s coroutine methods ``names`` (the engine's API)."""
        for name in names:
            fn: Callable[..., Awaitable[object]] = getattr(obj, name)

            async def timed(*args: object, _fn: Callable[..., Awaitable[object]] = fn,
                            _kind: str = name, **kw: object) -> object:  # fmt: skip
                consumer = str(args[1]) if len(args) > 1 else ""
                return await self.timed(_kind, consumer, _fn(*args, **kw))

            setattr(obj, name, timed)

    @property
    def count(self) -> int:
        return len(self.log)

    @property
    def largest_ms(self) -> float:
        return max(((e - s) * 1000 for _, _, s, e in self.log), default=0.0)

    def stall_ms(self, consumers: Iterable[str]) -> float:
        """Longest pause → resume of any of ``consumers`` (0 when none was paused)."""
        wanted = set(consumers)
        paused: dict[str, float] = {}
        longest = 0.0
        for kind, name, started, ended in sorted(self.log, key=lambda r: r[2]):
            if name not in wanted:
                continue
            if kind == "pause_consumer":
                paused.setdefault(name, started)
            elif kind == "resume_consumer" and name in paused:
                longest = max(longest, (ended - paused.pop(name)) * 1000)
        return longest

    def touched(self, consumers: Iterable[str]) -> int:
        """Requests that changed one of ``consumers`` (pause, reset, update, resume)."""
        wanted = set(consumers)
        changing = {"put_consumer", "pause_consumer", "resume_consumer", "reset_consumer"}
        return sum(1 for kind, name, _, _ in self.log if kind in changing and name in wanted)


class Deliveries:
    """When each message was delivered, to whom, and the first delivery of watched shards."""

    def __init__(self, *, shard_token: int) -> None:
        self.shard_token = shard_token
        """Index of the shard token in a command subject."""
        self.times: list[float] = []
        self.watched: set[int] = set()
        self.victim = ""
        self.first: dict[int, float] = {}
        """Watched shard → first delivery to a member other than the victim."""
        self.all_seen = asyncio.Event()

    def watch(self, shards: Iterable[int], *, victim: str) -> None:
        self.watched = set(shards)
        self.victim = victim
        self.first.clear()
        self.all_seen.clear()

    def record(self, now: float, member: str, subject: str) -> None:
        self.record_shard(now, member, int(subject.split(".")[self.shard_token]))

    def record_shard(self, now: float, member: str, shard: int) -> None:
        self.times.append(now)
        if not self.watched or member == self.victim:
            return
        if shard in self.watched and shard not in self.first:
            self.first[shard] = now
            if len(self.first) == len(self.watched):
                self.all_seen.set()

    def rate(self, start: float, end: float) -> float:
        """Deliveries per second in [start, end)."""
        n = sum(1 for t in self.times if start <= t < end)
        return n / (end - start)


class DeliverySink(Protocol):
    """Where a puller records each delivery: the rig's ``Deliveries``, or, in a member
    process of ``rigprocesses``, a reporter that sends them to the rig."""

    def record(self, now: float, member: str, subject: str) -> None: ...


class Puller:
    """Pulls one consumer in a loop (``fetch`` + ``ack``), as the product's worker does.

    A delivery is timed when its ``fetch`` returns; nats-py holds a partial batch
    until the pull's expiry, so a trickle is timed up to one expiry late (a
    backlog fills the batch at once).
    """

    def __init__(self, workers: Workers, nc: Client, member: str, consumer: str) -> None:
        self.w, self.nc, self.member, self.consumer = workers, nc, member, consumer
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._pull())

    async def _pull(self) -> None:
        js = self.nc.jetstream()
        sub = await js.pull_subscribe_bind(durable=self.consumer, stream=self.w.stream)
        try:
            while True:
                try:
                    msgs = await sub.fetch(self.w.batch, timeout=self.w.fetch_s)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue  # nothing to deliver within the expiry
                except nats.errors.Error:
                    await asyncio.sleep(0.02)  # paused, being reset or deleted: back off
                    continue
                now = time.monotonic()
                for msg in msgs:
                    self.w.log.record(now, self.member, msg.subject)
                    await msg.ack()
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task, every=0.05)


@dataclass
class Member:
    """One member: its own connection, and a puller per consumer it owns."""

    name: str
    nc: Client
    pullers: dict[str, Puller] = field(default_factory=dict)

    async def crash(self) -> None:
        """Stop pulling at once, acking nothing more (what a killed pod does)."""
        pullers = list(self.pullers.values())
        self.pullers.clear()
        for p in pullers:
            await p.stop()
        with contextlib.suppress(nats.errors.Error):
            await self.nc.close()


class Workers:
    """The group's pull workers on one stream; new consumers are bound on their advisory.

    ``expect(consumer, member)`` says a consumer is being made for ``member``;
    when JetStream's consumer-created advisory for it arrives, that member starts
    pulling it. This is how a worker would learn of a lane made for it without
    polling, so the hand-off times below include the advisory's latency.
    """

    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        url: str,
        stream: str,
        log: DeliverySink,
        batch: int,
        fetch_s: float,
    ) -> None:
        self.nc, self.js, self.stream, self.log = nc, js, stream, log
        self.url = url
        self.batch = batch
        self.fetch_s = fetch_s
        """Expiry of each pull request, seconds."""
        self.members: dict[str, Member] = {}
        self._expected: dict[str, str] = {}
        self.resolve: Callable[[str], str | None] | None = None
        """For a consumer nobody ``expect``ed: the member it was made for, or None
        (the product's engine names its lanes ``<member id>_g<generation>``)."""
        self._advisories: Subscription | None = None

    async def listen(self) -> None:
        subject = f"$JS.EVENT.ADVISORY.CONSUMER.CREATED.{self.stream}.*"
        self._advisories = await self.nc.subscribe(subject, cb=self._on_created)

    async def _on_created(self, msg: Msg) -> None:
        consumer = json.loads(msg.data).get("consumer", msg.subject.rsplit(".", 1)[-1])
        member = self._expected.pop(consumer, None)
        if member is None and self.resolve is not None:
            member = self.resolve(consumer)
        if member is not None:
            await self.start(member, consumer)

    async def prepare(self, members: Iterable[str]) -> None:
        """Get ready to serve ``members`` before any lane exists (here: nothing to do;
        ``rigprocesses`` starts their processes)."""

    def expect(self, consumer: str, member: str) -> None:
        self._expected[consumer] = member

    async def start(self, member: str, consumer: str) -> None:
        if member not in self.members:
            self.members[member] = Member(member, await nats.connect(self.url))
        m = self.members[member]
        if consumer not in m.pullers:
            m.pullers[consumer] = p = Puller(self, m.nc, member, consumer)
            await p.start()

    async def crash(self, member: str) -> None:
        """Kill ``member``: it stops pulling at once and acks nothing more."""
        await self.members[member].crash()

    async def stop(self) -> None:
        if self._advisories is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._advisories.unsubscribe()
        for m in self.members.values():
            await m.crash()
