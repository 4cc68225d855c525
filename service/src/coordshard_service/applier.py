"""Apply the lanes' batches one transaction at a time, joining the batches that wait.

A worker's lanes fetch on their own, one pull loop each, and the store takes one
batch at a time (``LaneHost.applying``). A store transaction costs something of
its own whatever it holds (the thread hop, begin, the shards' marks locked and
written, commit), so a member whose shards are on several lanes pays it once per
lane's batch: at N=4096 with 3 members (6 lanes each) a transaction held ~27
messages where one lane's held ~120 (docs/benchmarks.md, "End to end at N = 16
and 4096"). So the batches that queue while one is applied are applied together
next, in one transaction: a group commit. The lanes settle their own messages
afterwards, each on its consumer, as before.

Per-shard order holds as when the lanes took turns: a shard is on one lane at a
time, and a shard that moves between two lanes of ours is applied by its marks
in the order its batches queued (the lock is fair, and a group is applied in
queue order).

What stays alone:

- a batch that may hold a message a dead process was applying (one at or below
  its lane's ``StreamInstance.last_seq``) is claimed and applied by
  ``attempts.apply_guarded`` on its own, as before;
- batches of another stream instance than the first waiting one (a stream
  re-created under us) wait for the next turn: a transaction counts marks for
  one instance.

After a ``StoreUnavailableError`` part-way, each batch learns how far it got
(its ``applied``) and gets the error; its lane holds and retries the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from coordshard_service.attempts import apply_guarded, needs_claim
from coordshard_service.cache import Cache
from coordshard_service.commands import Applied, Incoming, apply_isolating
from coordshard_service.consumerstate import StreamInstance
from coordshard_service.errors import StoreUnavailableError
from coordshard_service.metrics import Metrics
from coordshard_service.settings import ServiceSettings
from coordshard_service.store import Store

__all__ = ["Applier", "ApplierHost"]


class ApplierHost(Protocol):
    """What the applier shares with the worker."""

    settings: ServiceSettings
    store: Store
    cache: Cache
    metrics: Metrics
    applying: asyncio.Lock


@dataclass(eq=False)
class _Batch:
    items: Sequence[Incoming]
    stream: str
    consumer: str
    done: asyncio.Future[None]
    applied: list[Applied] = field(default_factory=list)


class Applier:
    """One worker's store writer: a lane's ``apply`` returns once its batch is committed."""

    def __init__(self, host: ApplierHost) -> None:
        self.host = host
        self._queue: list[_Batch] = []

    async def apply(
        self,
        items: Sequence[Incoming],
        *,
        applied: list[Applied],
        stream: StreamInstance,
        consumer: str,
    ) -> None:
        """Apply ``items``, alone or with the batches waiting beside it; append each
        (message, outcome) to ``applied`` as it commits.

        Raises:
            StoreUnavailableError: the items from ``len(applied)`` on are not committed.
        """
        host, s = self.host, self.host.settings
        if needs_claim(items, in_doubt=stream.last_seq):
            async with host.applying:
                await asyncio.to_thread(
                    apply_guarded, host.store, host.cache, items, applied=applied,
                    shards=s.shards, stream=stream.key, consumer=consumer,
                    metrics=host.metrics, retention=s.outcome_retention,
                    in_doubt=stream.last_seq,
                )  # fmt: skip
            return
        me = _Batch(items, stream.key, consumer, asyncio.get_running_loop().create_future())
        self._queue.append(me)
        try:
            async with host.applying:
                if not me.done.done():
                    await self._together(self._take(me.stream))
        finally:
            if me in self._queue:  # cancelled while waiting its turn
                self._queue.remove(me)
            applied.extend(me.applied)
        me.done.result()

    def _take(self, stream: str) -> list[_Batch]:
        """The waiting batches of ``stream``, in queue order, out of the queue."""
        group = [b for b in self._queue if b.stream == stream]
        self._queue = [b for b in self._queue if b.stream != stream]
        return group

    async def _together(self, group: list[_Batch]) -> None:
        """Apply ``group`` in one go and settle each batch's future."""
        host, s = self.host, self.host.settings
        items = [i for b in group for i in b.items]
        applied: list[Applied] = []
        error: BaseException | None = None
        try:
            await asyncio.to_thread(
                apply_isolating, host.store, host.cache, items, applied=applied,
                shards=s.shards, stream=group[0].stream, consumer=group[0].consumer,
                metrics=host.metrics, retention=s.outcome_retention,
            )  # fmt: skip
        except StoreUnavailableError as e:
            error = e
        except BaseException:
            # Cancelled (the worker stops) or a bug: the others' lanes must not wait
            # for ever, and must not take it for theirs; they hold and retry.
            error = StoreUnavailableError("the transaction applying this batch was abandoned")
            raise
        finally:
            host.metrics.store_batch_size.observe(len(items))
            offset = 0
            for b in group:
                b.applied = applied[offset : offset + len(b.items)]
                offset += len(b.items)
                if len(b.applied) == len(b.items):
                    b.done.set_result(None)
                else:
                    b.done.set_exception(error or StoreUnavailableError("not applied"))
