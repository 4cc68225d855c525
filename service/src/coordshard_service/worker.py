"""The worker: binds every consumer ("lane") of its member and runs one pull loop per lane.

The worker never creates consumers; the rebalancer does. It names each one
``<member id>_g<generation>`` and may give a member several at once: a crash
hand-off grants a gainer the orphaned shards on a *new* consumer (deliver all:
it starts at their first leftover) beside the ones it serves, and a planned
move replaces a lane by deleting it and creating one for the shards kept. So
the worker binds every consumer of its member it learns of (``discovery``:
the consumer-created advisory, and a listing at start and on a slow timer),
serves each in a ``consuming.Lane`` of its own, and owns the union of their
shards. The lanes share the store, the cache and the metrics.

A deleted lane is routine: its loop ends (at once on the consumer-deleted
advisory, else on its next failed fetch, ack or re-read), the deliveries it
held are dropped (the shards' next consumer delivers them again and the store
answers what was applied from its outcomes), and the cache forgets the shards
no other lane of ours holds. The worker is *fenced*, as it was with one
consumer, only when its last lane is gone: it then waits for a consumer of
ours again, and one made after a fence comes under a new generation, so acks
still in flight to the old one count on nothing.

Each lane bind also reads which instance of the stream we serve (its name and
creation time), since a stream deleted and re-created under a kept store
deletes our consumers too: the store counts marks per instance, and the
worker says so when it finds a new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

from nats.aio.client import Client
from nats.js import JetStreamContext

from coordshard_client.naming import generation_of
from coordshard_client.subjects import STREAM_META_SHARDS
from coordshard_client.tasks import cancel_and_wait
from coordshard_service import consumerstate
from coordshard_service.applier import Applier
from coordshard_service.cache import Cache
from coordshard_service.consumerstate import StreamInstance
from coordshard_service.consuming import Lane
from coordshard_service.discovery import Discovery, waiting_hint
from coordshard_service.errors import (
    ConfigError,
    FencedError,
    NatsUnavailableError,
    StoreUnavailableError,
)
from coordshard_service.metrics import Metrics
from coordshard_service.progress import Progress
from coordshard_service.settings import ServiceSettings
from coordshard_service.store import Store

__all__ = ["Worker", "WorkerState"]

logger = logging.getLogger(__name__)

WorkerState = Literal["starting", "waiting", "bound", "stopped"]
"""waiting: no consumer of ours exists (no shards yet, or fenced); bound: serving one or more."""

BIND_RETRY_SECONDS = 0.2
"""Seconds before another try to bind after NATS did not answer."""
BOUND_LOOK_UP_FACTOR = 12
"""While serving lanes, the stream's consumers are looked up every this many
``bind_poll`` (and after every reconnect, when advisories may have been missed):
a listing per ``bind_poll`` from every pod of a large group is load on the server
for nothing, since advisories name every lane made while we are connected."""

_BindResult = Literal["bound", "gone", "retry"]


class Worker:
    """One member of the group: binds to its consumers and serves their shards."""

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
        self.discovery = Discovery(
            nc, stream=settings.stream, member=self.member, on_deleted=self._on_deleted
        )
        self.stream: StreamInstance | None = None
        """The stream instance of our last bind (kept while unbound, to compare)."""
        self.lanes: dict[str, Lane] = {}
        """The lanes we serve, by consumer name."""
        self.shards: set[int] = set()
        """The union of the lanes' shards."""
        self.state: WorkerState = "starting"
        self.applying = asyncio.Lock()
        """One transaction applied (or the cache pruned) at a time, whichever lane it is for."""
        self.applier = Applier(self)
        """Applies the lanes' batches, several waiting ones in one transaction."""
        self.progress = Progress()
        """Fed by the binding loop; each lane has its own (``stuck`` takes the worst)."""
        self._last = ""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._deleted_early: set[str] = set()
        """Ours, named by a deleted advisory while not (yet) a lane: a bind in flight."""
        self._pruned = time.monotonic()
        self._looked_up = 0.0
        self._reconnects = 0
        """The connection's reconnect count at the last look-up."""

    @property
    def consumer(self) -> str:
        """Our newest lane (highest generation), or the one we were last bound to;
        "" before the first bind."""
        if self.lanes:
            return max(self.lanes, key=lambda n: generation_of(n, member=self.member) or 0)
        return self._last

    @property
    def bound(self) -> bool:
        """Bound to at least one consumer of ours and serving its shards."""
        return self.state == "bound"

    def stuck(self) -> tuple[float, str]:
        """How long the worker has been stuck and why: the worst of its binding loop and
        its lanes (one lane with messages owed and none settled is enough)."""
        # The binding loop waits up to ``bind_poll`` for an advisory while lanes serve;
        # that wait is not a stall, so only the lanes count then.
        worst = self.progress.stuck() if not self.lanes else (0.0, "")
        for name, lane in self.lanes.items():
            seconds, why = lane.progress.stuck()
            if seconds > worst[0]:
                worst = (seconds, f"lane {name}: {why}")
        return worst

    def status(self) -> dict[str, object]:
        """What /readyz reports; ``stuck_s`` and ``stuck`` say if and why the loop is stuck."""
        stuck, why = self.stuck()
        body: dict[str, object] = {
            "state": self.state,
            "member": self.member,
            "consumer": self.consumer or None,
            "lanes": {
                name: {
                    "shards": len(lane.shards),
                    "stuck_s": round(lane.progress.stuck()[0], 3),
                }
                for name, lane in sorted(self.lanes.items())
            },
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
        return self.stuck()[0] <= self.settings.stall_timeout

    def alive(self) -> bool:
        """Not stuck for longer than twice ``stall_timeout`` (liveness)."""
        return self.stuck()[0] <= 2 * self.settings.stall_timeout

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; each lane finishes and acks its batch in hand first."""
        await self.discovery.start()  # before the first look-up, so no creation is missed
        self.state = "waiting"
        stopped = asyncio.ensure_future(stop.wait())
        try:
            look_up, logged = True, False
            while not stop.is_set():
                self.progress.beat()
                await self._prune()
                retry = await self._bind_new(stop, look_up=look_up)
                if self.lanes:
                    logged = False
                elif look_up and not retry and not logged:
                    self._log_waiting()
                    logged = True
                # Woken by an advisory naming a new consumer of ours, a lane that ended,
                # or ``stop``; else the slow timer looks the stream's consumers up again.
                wait = BIND_RETRY_SECONDS if retry else self.settings.bind_poll
                await self.discovery.wait([stopped, *self._tasks.values()], wait)
                await self._reap()
                look_up = retry or self._look_up_due()
        finally:
            stopped.cancel()
            await self._end_lanes(cancel=not stop.is_set())
            await self.discovery.stop()
        self.state = "stopped"

    def _look_up_due(self) -> bool:
        """Whether to list the stream's consumers again: after a reconnect (advisories sent
        meanwhile are lost), or on the slow timer (``bind_poll``; longer while serving)."""
        if self.nc.stats["reconnects"] != self._reconnects:
            return True
        every = self.settings.bind_poll * (BOUND_LOOK_UP_FACTOR if self.lanes else 1)
        return time.monotonic() - self._looked_up >= every

    def _log_waiting(self) -> None:
        s = self.settings
        logger.info(
            "waiting for a consumer of %s on stream %s; %s",
            self.member,
            s.stream,
            waiting_hint(
                group=s.group, stream=s.stream, pod=s.pod_name, listed=self.discovery.listed
            ),
        )

    def _on_deleted(self, name: str) -> None:
        lane = self.lanes.get(name)
        if lane is not None:
            lane.deleted.set()
        else:
            self._deleted_early.add(name)

    async def _bind_new(self, stop: asyncio.Event, *, look_up: bool) -> bool:
        """Bind every consumer of ours not yet a lane; True if one should be tried again
        soon (NATS did not answer)."""
        self._deleted_early.clear()
        try:
            names = await self.discovery.find(look_up=look_up)
        except NatsUnavailableError as e:
            logger.warning("%s", e)
            return True
        if look_up:
            self._looked_up = time.monotonic()
            self._reconnects = self.nc.stats["reconnects"]
        retry = False
        for name in sorted(names - self.lanes.keys()):
            if stop.is_set():
                break
            retry |= await self._bind_lane(name, stop) == "retry"
        return retry

    async def _bind_lane(self, name: str, stop: asyncio.Event) -> _BindResult:
        """Read consumer ``name``, subscribe its pulls and start its lane."""
        info = await consumerstate.read_consumer(
            self.js, stream=self.settings.stream, consumer=name
        )
        if info == "gone":
            return "gone"
        if info == "unknown":  # logged by read_consumer
            return "retry"
        try:
            puller = await consumerstate.open_puller(
                self.nc, stream=self.settings.stream, consumer=name
            )
        except NatsUnavailableError as e:
            logger.warning("%s", e)
            return "retry"
        if not await self._enter_stream():
            try:
                await consumerstate.close_puller(puller)
            except NatsUnavailableError as e:
                logger.debug("%s", e)
            return "retry"
        assert self.stream is not None
        lane = Lane(self, consumer=name, stream=self.stream, puller=puller)
        self.lanes[name] = lane  # before its shards are read: they join the union
        if not await lane.bind(info):
            del self.lanes[name]
            await lane.close()
            await self.shards_changed()
            return "retry"
        if name in self._deleted_early:
            lane.deleted.set()  # deleted while we bound it: the lane ends at once
        self._tasks[name] = asyncio.create_task(lane.run(stop), name=f"lane {name}")
        self._last = name
        self.state = "bound"
        self.metrics.lanes.set(len(self.lanes))
        logger.info("bound to consumer %s, shards %s", name, sorted(lane.shards))
        return "bound"

    async def _reap(self) -> None:
        """Take the lanes whose loops ended out of service; re-raise a lane's own error."""
        for name, task in list(self._tasks.items()):
            if not task.done():
                continue
            del self._tasks[name]
            lane = self.lanes.pop(name)
            error = task.exception()
            if error is not None and not isinstance(error, FencedError):
                await lane.close()
                raise error
            if error is not None:
                self.metrics.lanes_ended.inc()
                logger.info("lane %s ended: %s", name, error)
            self.metrics.lanes.set(len(self.lanes))
            await self.shards_changed()
            await lane.close()
        if not self.lanes and self.state == "bound":
            self.metrics.fenced.inc()
            logger.warning("fenced: no consumer of ours is left; waiting for a new one")
            async with self.applying:
                self.cache.clear()
            self.state = "waiting"

    async def _end_lanes(self, *, cancel: bool) -> None:
        """Wait for every lane to end (``cancel``: end them now, for an error or a
        cancellation of ``run``), and unsubscribe them."""
        tasks = list(self._tasks.values())
        if cancel:
            await cancel_and_wait(*tasks)  # a cancel nats-py swallowed would wait for ever
        else:
            await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self.lanes.values():
            await lane.close()
        self._tasks.clear()
        self.lanes.clear()
        self.shards = set()
        self.cache.clear()
        self.metrics.lanes.set(0)
        self.metrics.owned_shards.set(0)

    async def shards_changed(self) -> None:
        """Own the union of the lanes' shards; the cache forgets the shards none holds."""
        union: set[int] = set()
        for lane in self.lanes.values():
            union |= lane.shards
        if union == self.shards:
            return
        async with self.applying:
            dropped = self.cache.retain(union)
        logger.info(
            "%d lane(s) own shards %s (cache dropped %s)", len(self.lanes), sorted(union), dropped
        )
        self.shards = union
        self.metrics.owned_shards.set(len(union))

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

    async def _prune(self) -> None:
        """Forget stored outcomes past their retention, every ``prune_interval``."""
        now = time.monotonic()
        if now - self._pruned < self.settings.prune_interval:
            return
        self._pruned = now
        try:
            async with self.applying:
                gone = await asyncio.to_thread(
                    self.store.prune_outcomes, older_than=self.settings.outcome_retention
                )
        except StoreUnavailableError as e:
            logger.warning("pruning outcomes: %s", e)
            return
        if gone:
            logger.info("pruned %d stored outcomes", gone)
