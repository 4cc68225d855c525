"""Count the workers a message kills, in the store, and dead-letter the message that keeps killing.

A message that kills the worker *process* while it is applied (a segfault in a
driver, an OOM, a bug that exits) is never acked, so it comes again; but
JetStream's delivery counts cannot see it: a container restarted in place
rewinds its lane on bind (every count back to 1), and after a pod is lost its
shards go to another member on a new lane, whose counts start at 1 too. So
``max_deliver`` is never reached and the message takes every pod of the group
down in turn. The attempts are counted where they outlive the process: in the
store every worker of the group shares.

Before a batch is applied, its shards are *claimed* in a transaction of their
own (``Store.claim_attempts``: this process applies shard S up to sequence X);
the batch's own transaction clears the claims. A claim of another process found
uncleared is a process that died applying that range, and is counted (per
shard: ``deaths``, and ``suspect``, the highest sequence such a process held).
While a shard has dead attempts, its messages up to ``suspect`` are applied one
at a time, each under a claim of its own, so the next death names its message
(``dead_single``). Once a shard has ``KILL_LIMIT`` deaths and the last was of
one message alone, that message is dead-lettered ("killed N workers while being
applied", its raw bytes kept) and terminated; the rest of the shard goes on, in
order, exactly once. When the shard's mark passes ``suspect``, its count is
forgotten.

A claim costs one small transaction per batch, about half a batch of eight's
own cost on SQLite (docs/benchmarks.md, "Counting the workers a message
kills"), so only batches that may hold a message a dead process was applying
are claimed: those with a message at or below the stream's last sequence when
their lane was bound (after a restart in place, its rewind delivers them again;
on a failover, the gainer's new lane does). A lane in its steady state claims
nothing. So the process that dies first, in its steady state, is not counted:
a killer takes ``KILL_LIMIT`` + 1 processes. A claim found uncleared counts only
while the shard's mark is below its highest sequence (what the dead held was
not applied since). A claim left by a process that did not
die (one frozen past the grace period while its shards moved, or one that
stopped while the store was down with a batch in hand) is counted as a death
too; it takes ``KILL_LIMIT`` of them on one shard without progress, the last of
one message alone, to dead-letter anything.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence

from coordshard_service.cache import Cache
from coordshard_service.commands import Applied, Incoming, apply_isolating
from coordshard_service.errors import BadMessageError
from coordshard_service.metrics import Metrics
from coordshard_service.store import Attempts, Store

__all__ = ["KILL_LIMIT", "apply_guarded", "needs_claim", "segments"]

logger = logging.getLogger(__name__)

KILL_LIMIT = 3
"""Processes that may die applying a shard's messages, the last of them applying one
message alone, before that message is dead-lettered."""


def _his(items: Sequence[Incoming]) -> dict[int, int]:
    """Each shard's highest sequence among the commands of ``items``."""
    his: dict[int, int] = {}
    for i in items:
        if i.command is not None:
            his[i.shard] = max(his.get(i.shard, 0), i.stream_seq)
    return his


def needs_claim(items: Sequence[Incoming], *, in_doubt: int) -> bool:
    """Whether a batch holds a command at or below ``in_doubt`` (its lane's stream's last
    sequence at bind): one a dead process may have been applying, so it is claimed."""
    return any(i.command is not None and i.stream_seq <= in_doubt for i in items)


def _alone(item: Incoming, suspects: dict[int, Attempts]) -> bool:
    found = suspects.get(item.shard)
    return item.command is not None and found is not None and item.stream_seq <= found.suspect


def segments(
    items: Sequence[Incoming], suspects: dict[int, Attempts]
) -> Iterator[tuple[Sequence[Incoming], bool]]:
    """``items`` cut, in order, into runs applied together and messages applied alone
    (those of a shard with dead attempts, up to its ``suspect``); True for alone."""
    run: list[Incoming] = []
    for item in items:
        if _alone(item, suspects):
            if run:
                yield run, False
                run = []
            yield [item], True
        else:
            run.append(item)
    if run:
        yield run, False


def _blamed(item: Incoming, suspects: dict[int, Attempts]) -> Incoming:
    """``item`` as a bad message if it killed ``KILL_LIMIT`` processes, the last alone."""
    found = suspects.get(item.shard)
    if found is None or found.deaths < KILL_LIMIT or found.dead_single != item.stream_seq:
        return item
    reason = f"killed {found.deaths} workers while being applied"
    logger.error("stream_seq=%d of shard %d %s", item.stream_seq, item.shard, reason)
    return dataclasses.replace(item, command=None, bad=BadMessageError(reason))


def apply_guarded(
    store: Store,
    cache: Cache,
    items: Sequence[Incoming],
    *,
    applied: list[Applied],
    shards: int,
    stream: str,
    consumer: str,
    metrics: Metrics,
    retention: float,
    in_doubt: int,
) -> None:
    """``apply_isolating`` under attempt claims (see the module docstring).

    ``in_doubt``: the highest stream sequence a process that died may have been
    applying when the lane was bound (the stream's last then); a batch of later
    messages only is applied unclaimed.

    Raises:
        StoreUnavailableError: the items from ``len(applied)`` on are not committed.
    """

    def apply(part: Sequence[Incoming], *, reset: bool) -> None:
        apply_isolating(
            store,
            cache,
            part,
            applied=applied,
            shards=shards,
            stream=stream,
            consumer=consumer,
            metrics=metrics,
            retention=retention,
            owner=store.owner,
            reset=reset,
        )

    if not needs_claim(items, in_doubt=in_doubt):
        apply_isolating(
            store, cache, items, applied=applied, shards=shards, stream=stream,
            consumer=consumer, metrics=metrics, retention=retention,
        )  # fmt: skip
        return
    found = store.claim_attempts(_his(items), stream=stream, single=False)
    suspects = {s: a for s, a in found.items() if a.deaths > 0}
    if not suspects:
        apply(items, reset=False)
        return
    logger.warning(
        "shards %s: a process died applying them (deaths: %s); applying their messages "
        "up to the sequences it held one at a time",
        sorted(suspects),
        {s: a.deaths for s, a in sorted(suspects.items())},
    )
    for part, alone in segments(items, suspects):
        if alone:
            part = [_blamed(part[0], suspects)]
        part_his = _his(part)
        if part_his:
            store.claim_attempts(part_his, stream=stream, single=alone)
        apply(part, reset=True)
