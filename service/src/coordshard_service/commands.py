"""Apply a batch of decoded commands: one function per op, one transaction per batch.

The batch thread runs ``apply_batch``: it locks the marks of every shard in
the batch, then walks the messages in stream order (which is each shard's
order), and for each one either replays the stored outcome (same idempotency
key, or a stream sequence at or below the shard's mark) or runs the op and
stores its outcome with the new mark. The state changes, outcomes, marks and
dead letters of the batch commit together, before anything is replied or
acked, so a crash at any point leaves either nothing or everything, and a
redelivery finds its outcome. Marks and stream sequences are those of the
stream instance the batch came from (``stream``): a re-created stream starts
with no marks, and is never answered from the outcomes of the old one.


``apply_isolating`` wraps it for values the database refuses (a data error,
a constraint) although they passed validation: such a refusal names no
command, so the batch is split in halves, applied in order, down to the one
command refused on its own, which is dead-lettered; the rest is applied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordshard_client.messages import (
    COMMAND_OPS,
    Command,
    CreatePoint,
    CreateSystem,
    Deleted,
    DeletePoint,
    DeleteSystem,
    ErrorCode,
    ErrorInfo,
    GetPoint,
    GetSystem,
    ListPoints,
    MovePoint,
    Outcome,
    Point,
    PointPage,
    System,
)
from coordshard_client.subjects import shard_of
from coordshard_service import domain
from coordshard_service.cache import Cache
from coordshard_service.errors import BadMessageError, StoreRefusedError
from coordshard_service.metrics import Metrics
from coordshard_service.store import DeadLetter, SavedOutcome, Store, StoreTx

__all__ = ["Applied", "Incoming", "apply_batch", "apply_isolating", "fingerprint"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One fetched message, decoded at the boundary: a command, or why it is bad."""

    stream_seq: int
    subject: str
    shard: int
    key: str
    reply: str | None
    command: Command | None
    bad: BadMessageError | None = None
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    redelivered: bool = False
    published_at: float | None = None
    """When the stream stored the message (epoch seconds), if known."""
    consumer: str = ""
    """The consumer (lane) that delivered it, if known: a dead letter records it, and a
    transaction may hold the batches of several lanes (``applier``)."""


@dataclass
class _View:
    """Reads through (this batch's writes) → cache → store; writes go to the store."""

    tx: StoreTx
    cache: Cache
    shards: int
    systems: dict[str, System | None] = field(default_factory=dict)
    points: dict[tuple[str, str], Point | None] = field(default_factory=dict)
    dirty: dict[tuple[str, str], Point | None] = field(default_factory=dict)
    """Point writes not yet sent to the store (sent in bulk by ``flush``)."""
    outcomes: dict[str, SavedOutcome] = field(default_factory=dict)
    """Stored outcomes by idempotency key: prefetched, plus this batch's."""
    new_outcomes: list[SavedOutcome] = field(default_factory=list)

    def write_point(self, key: tuple[str, str], point: Point | None) -> None:
        self.points[key] = point
        self.dirty[key] = point

    def flush(self) -> None:
        """Send pending point writes and outcomes to the store (still uncommitted)."""
        upserts = [p for p in self.dirty.values() if p is not None]
        deletes = [k for k, p in self.dirty.items() if p is None]
        self.tx.write_points(upserts, deletes)
        self.tx.save_outcomes(self.new_outcomes)
        self.dirty.clear()
        self.new_outcomes.clear()

    def system(self, system_id: str) -> System | None:
        if system_id in self.systems:
            return self.systems[system_id]
        found = self.cache.system(system_id)
        if found is None:
            found = self.tx.system(system_id)
            if found is not None:
                self.cache.put_system(found, shard=shard_of(system_id, self.shards))
        return found

    def point(self, system_id: str, point_id: str) -> Point | None:
        if (system_id, point_id) in self.points:
            return self.points[(system_id, point_id)]
        if system_id in self.systems and self.systems[system_id] is None:
            return None
        found = self.cache.point(system_id, point_id)
        if found is None:
            found = self.tx.point(system_id, point_id)
            if found is not None:
                self.cache.put_point(found, shard=shard_of(system_id, self.shards))
        return found

    def commit_to_cache(self) -> None:
        """After the commit: make the cache show this batch's writes."""
        for system_id, system in self.systems.items():
            if system is None:
                self.cache.forget(system_id)
            else:
                self.cache.put_system(system, shard=shard_of(system_id, self.shards))
        for (system_id, point_id), point in self.points.items():
            if point is None:
                self.cache.forget(system_id, point_id)
            else:
                self.cache.put_point(point, shard=shard_of(system_id, self.shards))


_Answer = System | Point | PointPage | Deleted | ErrorInfo
"""What an op returns: its result, or why it refused."""


def _outcome(answer: _Answer, stream_seq: int) -> Outcome:
    if isinstance(answer, ErrorInfo):
        return Outcome(ok=False, error=answer, stream_seq=stream_seq)
    return Outcome(ok=True, result=answer, stream_seq=stream_seq)


def _missing(kind: str, ident: str) -> ErrorInfo:
    return domain.refusal(ErrorCode.NOT_FOUND, f"{kind} {ident!r} does not exist")


def _create_system(view: _View, command: CreateSystem) -> _Answer:
    made = domain.create_system(view.system(command.system_id), command)
    if isinstance(made, ErrorInfo):
        return made
    view.tx.put_system(made, shard=shard_of(made.system_id, view.shards))
    view.systems[made.system_id] = made
    return made


def _delete_system(view: _View, command: DeleteSystem) -> _Answer:
    if view.system(command.system_id) is None:
        return _missing("system", command.system_id)
    view.flush()
    count = view.tx.delete_system(command.system_id)
    view.systems[command.system_id] = None
    view.points = {k: v for k, v in view.points.items() if k[0] != command.system_id}
    return Deleted(system_id=command.system_id, points_deleted=count)


def _create_point(view: _View, command: CreatePoint) -> _Answer:
    system = view.system(command.system_id)
    existing = view.point(command.system_id, command.point_id) if system else None
    made = domain.create_point(system, existing, command)
    if isinstance(made, ErrorInfo):
        return made
    view.write_point((made.system_id, made.point_id), made)
    return made


def _move_point(view: _View, command: MovePoint) -> _Answer:
    system = view.system(command.system_id)
    point = view.point(command.system_id, command.point_id) if system else None
    moved = domain.move_point(system, point, command)
    if isinstance(moved, ErrorInfo):
        return moved
    view.write_point((moved.system_id, moved.point_id), moved)
    return moved


def _delete_point(view: _View, command: DeletePoint) -> _Answer:
    if view.point(command.system_id, command.point_id) is None:
        return _missing("point", command.point_id)
    view.write_point((command.system_id, command.point_id), None)
    return Deleted(system_id=command.system_id, point_id=command.point_id)


def _get_system(view: _View, command: GetSystem) -> _Answer:
    system = view.system(command.system_id)
    if system is None:
        return _missing("system", command.system_id)
    return system


def _get_point(view: _View, command: GetPoint) -> _Answer:
    point = view.point(command.system_id, command.point_id)
    if point is None:
        return _missing("point", command.point_id)
    return point


def _list_points(view: _View, command: ListPoints) -> _Answer:
    if view.system(command.system_id) is None:
        return _missing("system", command.system_id)
    view.flush()
    found = view.tx.list_points(command.system_id, after=command.after, limit=command.limit + 1)
    page = found[: command.limit]
    more = len(found) > command.limit
    return PointPage(
        system_id=command.system_id,
        points=tuple(page),
        next_after=page[-1].point_id if more and page else None,
    )


_OPS: dict[str, Callable[[_View, Any], _Answer]] = {
    "create-system": _create_system,
    "delete-system": _delete_system,
    "create-point": _create_point,
    "move-point": _move_point,
    "delete-point": _delete_point,
    "get-system": _get_system,
    "get-point": _get_point,
    "list-points": _list_points,
}


def _conflict(message: str, *, stream_seq: int, replayed: bool = False) -> Outcome:
    """Refused as a conflict by the dedupe rules, before any op ran."""
    return Outcome(
        ok=False,
        error=ErrorInfo(code=ErrorCode.CONFLICT, message=message),
        stream_seq=stream_seq,
        replayed=replayed,
    )


def _bad_outcome(item: Incoming) -> Outcome:
    assert item.bad is not None
    return Outcome(
        ok=False,
        error=ErrorInfo(code=item.bad.code, message=item.bad.reason),
        stream_seq=item.stream_seq,
    )


DEFAULT_RETENTION = 86_400.0
"""The worker's default ``outcome_retention``, seconds."""
_CLOCK_MARGIN = 0.9
"""Share of the retention within which a message's own timestamp is trusted (the
stream's clock and the workers' may differ)."""


def _recent(item: Incoming, retention: float) -> bool:
    """Whether an outcome of ``item``, had it been applied, could not have been pruned yet."""
    if item.published_at is None:
        return False
    return time.time() - item.published_at < retention * _CLOCK_MARGIN


def apply_batch(
    store: Store,
    cache: Cache,
    items: Sequence[Incoming],
    *,
    shards: int,
    stream: str,
    consumer: str,
    metrics: Metrics,
    retention: float = DEFAULT_RETENTION,
    owner: str | None = None,
    reset: bool = False,
) -> list[Outcome]:
    """Apply ``items`` in order in one transaction; return one outcome per item.

    ``stream``: the stream instance the items were delivered from
    (``consumerstate.StreamInstance.key``). ``retention``: how long stored outcomes
    are kept (seconds); it tells a late delivery below its shard's mark from one
    applied long ago. ``owner``: the process whose attempt claims of these shards
    (``attempts``) commit cleared with the batch; ``reset``: forget their dead
    attempts where the marks now pass them.

    Raises:
        StoreUnavailableError: nothing was committed; the caller naks the batch.
    """
    results: list[Outcome] = []
    with store.transaction(stream=stream) as tx:
        marks = tx.lock_marks(sorted({i.shard for i in items if i.command is not None}))
        for shard, mark in marks.items():
            cache.validate(shard, mark)
        view = _View(tx, cache, shards)
        keys = [i.key for i in items if i.command is not None and i.command.op in COMMAND_OPS]
        view.outcomes = tx.outcomes_by_keys(keys)
        try:
            for item in items:
                results.append(
                    _apply_one(
                        view, item, marks, consumer=consumer, metrics=metrics, retention=retention
                    )
                )
            view.flush()
        except BaseException:
            cache.clear()  # it may hold reads of writes that are now rolled back
            raise
        tx.set_marks(marks)
        if owner is not None:
            tx.clear_attempts([i.shard for i in items], owner=owner, reset=reset)
    view.commit_to_cache()
    for shard, mark in marks.items():
        cache.advance(shard, mark)
    return results


Applied = tuple[Incoming, Outcome]
"""A message as it was applied (a command the database refused comes back bad) and its
outcome."""


def apply_isolating(
    store: Store,
    cache: Cache,
    items: Sequence[Incoming],
    *,
    applied: list[Applied],
    shards: int,
    stream: str,
    consumer: str,
    metrics: Metrics,
    retention: float = DEFAULT_RETENTION,
    owner: str | None = None,
    reset: bool = False,
) -> None:
    """Apply ``items`` in order as ``apply_batch`` does, isolating what the database refuses.

    Each part's results are appended to ``applied`` as it commits, so that after a
    ``StoreUnavailableError`` part-way the caller retries only the items not yet in
    it. A command the database refuses (``StoreRefusedError``) on its own, twice
    (once could be a race: two writers inserting the same new mark or key), is
    dead-lettered instead, with a validation outcome.

    Raises:
        StoreUnavailableError: the items from ``len(applied)`` on are not committed.
    """

    def run(part: Sequence[Incoming]) -> None:
        applied.extend(
            zip(
                part,
                apply_batch(
                    store,
                    cache,
                    part,
                    shards=shards,
                    stream=stream,
                    consumer=consumer,
                    metrics=metrics,
                    retention=retention,
                    owner=owner,
                    reset=reset,
                ),
                strict=True,
            )
        )

    def isolate(part: Sequence[Incoming], *, tries: int) -> None:
        try:
            run(part)
            return
        except StoreRefusedError as e:
            refused = e
        if len(part) > 1:
            half = len(part) // 2
            isolate(part[:half], tries=1)
            isolate(part[half:], tries=1)
        elif tries < 2:
            isolate(part, tries=tries + 1)
        else:
            refuse(part[0], refused)

    def refuse(item: Incoming, error: StoreRefusedError) -> None:
        metrics.store_refusals.inc()
        logger.error("the store refused stream_seq=%d alone: %s", item.stream_seq, error)
        bad = dataclasses.replace(
            item, command=None, bad=BadMessageError(f"the database refused it: {error}")
        )
        try:
            run([bad])
        except StoreRefusedError as e:
            # Not even its dead letter can be stored: answer it, keep it in the log.
            logger.error(
                "the store refused the dead letter of stream_seq=%d too, dropping it "
                "(subject %r, headers %r, payload %r): %s",
                bad.stream_seq,
                bad.subject,
                bad.headers,
                bad.data,
                e,
            )
            applied.append((bad, _bad_outcome(bad)))

    isolate(items, tries=1)


def fingerprint(command: Command) -> str:
    """A digest of what a command asks for, to tell a retry from a reused key."""
    return hashlib.blake2b(command.model_dump_json().encode(), digest_size=16).hexdigest()


def _apply_one(
    view: _View,
    item: Incoming,
    marks: dict[int, int],
    *,
    consumer: str,
    metrics: Metrics,
    retention: float,
) -> Outcome:
    if item.command is None:
        assert item.bad is not None
        view.tx.dead_letter(
            DeadLetter(
                stream_seq=item.stream_seq,
                subject=item.subject,
                reason=item.bad.reason,
                headers=item.headers,
                data=item.data,
                consumer=item.consumer or consumer,
            )
        )
        return _bad_outcome(item)
    command = item.command
    if command.op not in COMMAND_OPS:
        return _outcome(_OPS[command.op](view, command), item.stream_seq)
    digest = fingerprint(command)
    saved = view.outcomes.get(item.key)
    if saved is not None and saved.fingerprint not in (None, digest):
        metrics.dedupe_hits.inc()
        return _conflict(
            f"idempotency key {item.key!r} was used before for a different "
            f"command (stream sequence {saved.stream_seq}); use a new key",
            stream_seq=item.stream_seq,
        )
    stored = saved.outcome if saved is not None else None
    if stored is None and item.stream_seq <= marks[item.shard]:
        stored = view.tx.outcome_by_seq(item.shard, item.stream_seq)
        if stored is None and _recent(item, retention):
            # A late delivery: JetStream redelivered it behind later messages of its
            # shard (e.g. a delivery lost with a dying server comes back after
            # ack_wait). Had it been applied, its outcome would still be stored.
            logger.warning(
                "applying stream_seq=%d late: below shard %d's mark %d, never applied",
                item.stream_seq,
                item.shard,
                marks[item.shard],
            )
            metrics.late_applies.inc()
        elif stored is None:
            # Applied before, outcome since pruned: applying again would double it.
            metrics.dedupe_hits.inc()
            return _conflict(
                f"stream sequence {item.stream_seq} was applied already; "
                "its outcome is no longer stored",
                stream_seq=item.stream_seq,
                replayed=True,
            )
    if stored is not None:
        metrics.dedupe_hits.inc()
        return Outcome.model_validate_json(stored).model_copy(update={"replayed": True})
    outcome = _outcome(_OPS[command.op](view, command), item.stream_seq)
    row = SavedOutcome(item.key, item.shard, item.stream_seq, outcome.model_dump_json(), digest)
    view.outcomes[item.key] = row
    view.new_outcomes.append(row)
    marks[item.shard] = max(marks[item.shard], item.stream_seq)
    return outcome
