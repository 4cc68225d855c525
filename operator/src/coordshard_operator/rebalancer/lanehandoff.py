"""The hand-off of the blocks layout: lanes fenced, retired and created, never edited.

``handoff.Engine.apply`` calls ``apply_lanes`` when the stream stores under
blocks. It executes ``lanes.plan_lanes`` of the lanes in force and the
desired blocks, in this order (each a checkpoint a test can crash at):

1. ``fenced``  — every lane of a dead member is deleted, all at once;
2. ``paused``  — every lane to retire is paused (with a deadline) at once;
   then each is drained (``num_ack_pending == 0``, bounded by
   ``drain_timeout_s``; past it the report lists it as Undrained);
3. ``retired`` — those lanes are deleted, at once;
4. ``created`` — the new lanes, each under its own new generation
   (``<member id>_g<generation>``), deliver all, at once;
5. ``resumed`` — any lane left paused by a run that died before step 3.

Every deletion lands before any creation, so the work queue's no-overlap rule
holds between owners whatever order the server answers the concurrent
requests in. The requests of one hand-off are one per dead lane, per retired
lane (pause, drain reads, delete) and per new lane: they grow with the blocks
moved, not with N or the member count. Level-based: a run that died between
any two steps leaves lanes that the next run reads and finishes (a deleted
lane's blocks are unowned and are planned again; a paused lane is retired or
resumed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from coordshard_client.naming import consumer_name
from coordshard_client.subjects import block_filter, shards_of_block
from coordshard_operator.rebalancer.errors import ConfigError
from coordshard_operator.rebalancer.jetstream import JetStreamApi, consumer_config
from coordshard_operator.rebalancer.lanes import LaneState, NewLane, plan_lanes
from coordshard_operator.rebalancer.state import (
    META_EPOCH,
    META_GROUP,
    META_INCARNATION,
    META_MEMBER,
    Checkpoint,
    Fenced,
    GroupConfig,
    MemberInfo,
    Observed,
    Undrained,
)

__all__ = ["LaneChanges", "apply_lanes", "drain", "lane_states", "want_blocks"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LaneChanges:
    """What ``apply_lanes`` did (the engine turns it into a Report)."""

    fenced: tuple[Fenced, ...]
    retired: tuple[str, ...]
    created: tuple[tuple[str, str], ...]
    """(member id, lane name) of every lane created, in creation order."""
    undrained: tuple[Undrained, ...]
    resumed: tuple[str, ...]
    narrowed: Mapping[str, tuple[int, ...]]
    grown: Mapping[str, tuple[int, ...]]


def lane_states(observed: Observed) -> dict[str, LaneState]:
    """Lane name → (member id, blocks) of every lane in ``observed``."""
    return {n: LaneState(observed.owner(n), c.blocks) for n, c in observed.consumers.items()}


def want_blocks(
    desired: Mapping[str, tuple[int, ...]], *, config: GroupConfig
) -> dict[str, frozenset[int]]:
    """Member id → blocks, from a shard assignment that must give whole blocks."""
    k = config.blocks
    out: dict[str, frozenset[int]] = {}
    for m, shards in desired.items():
        blocks = frozenset(s % k for s in shards)
        whole = {s for b in blocks for s in shards_of_block(b, shards=config.shards, blocks=k)}
        if whole != set(shards):
            raise ConfigError(
                f"the assignment of {m} splits a block: a blocks stream's members own whole "
                f"blocks of {k} (plan with blocks={k})"
            )
        if blocks:
            out[m] = blocks
    return out


async def drain(
    api: JetStreamApi, stream: str, name: str, *, member_id: str, timeout_s: float
) -> Undrained | None:
    """Wait (bounded) until a paused consumer has no delivery left unacked."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        info = await api.consumer_info(stream, name)
        pending = 0 if info is None else info.num_ack_pending or 0
        if pending == 0:
            return None
        if loop.time() > deadline:
            logger.warning("consumer %s still has %d in flight; going on", name, pending)
            return Undrained(member_id, pending)
        await asyncio.sleep(0.005)  # polling a condition with a deadline


def _shards(blocks: frozenset[int] | tuple[int, ...], config: GroupConfig) -> tuple[int, ...]:
    k = config.blocks
    return tuple(
        sorted(s for b in blocks for s in shards_of_block(b, shards=config.shards, blocks=k))
    )


async def apply_lanes(
    api: JetStreamApi,
    config: GroupConfig,
    observed: Observed,
    want: Mapping[str, frozenset[int]],
    *,
    members: Mapping[str, MemberInfo],
    epoch: int,
    next_generation: Callable[[int], int],
    step: Checkpoint,
) -> LaneChanges:
    """Make the group's lanes match ``want`` (member id → blocks); see the module doc."""
    stream = config.stream
    lanes = lane_states(observed)
    planned = plan_lanes(lanes, want, live=members, per_lane=config.lane_blocks)
    consumers = observed.consumers

    fenced = []
    for name in planned.fence:
        c = consumers[name]
        dup = (c.ack_floor_seq + 1, c.delivered_seq) if c.delivered_seq > c.ack_floor_seq else None
        fenced.append(Fenced(observed.owner(name), c.shards, c.num_ack_pending, dup, name=name))
    await _all(api.delete_consumer(stream, n) for n in planned.fence)
    if planned.fence:
        logger.info("fenced %d lane(s): %s", len(planned.fence), list(planned.fence))
        await step("fenced")

    retire = planned.retire
    await _all(api.pause_consumer(stream, n, for_s=config.pause_s) for n in retire)
    if retire:
        await step("paused")
    drained = await asyncio.gather(
        *(
            drain(api, stream, n, member_id=lanes[n].member_id, timeout_s=config.drain_timeout_s)
            for n in retire
        )
    )
    await _all(api.delete_consumer(stream, n) for n in retire)
    if retire:
        await step("retired")

    created = [(new, consumer_name(new.member_id, generation=next_generation(epoch)))
               for new in planned.create]  # fmt: skip
    await _all(_create(api, config, new, name, members[new.member_id], epoch)
               for new, name in created)  # fmt: skip
    if created:
        await step("created")

    gone = {*planned.fence, *retire}
    resume = sorted(n for n, c in consumers.items() if c.paused and n not in gone)
    await _all(api.resume_consumer(stream, n) for n in resume)
    if resume:
        await step("resumed")

    before: dict[str, set[int]] = {}
    for lane in lanes.values():
        before.setdefault(lane.member_id, set()).update(lane.blocks)
    narrowed: dict[str, tuple[int, ...]] = {}
    for m, had in before.items():
        lost = had - want.get(m, frozenset())
        if m in members and lost:
            narrowed[m] = _shards(frozenset(lost), config)
    grown: dict[str, tuple[int, ...]] = {}
    for m, blocks in want.items():
        gained = blocks - before.get(m, set())
        if gained:
            grown[m] = _shards(gained, config)
    return LaneChanges(
        fenced=tuple(fenced),
        retired=retire,
        created=tuple((new.member_id, name) for new, name in created),
        undrained=tuple(u for u in drained if u is not None),
        resumed=tuple(resume),
        narrowed=narrowed,
        grown=grown,
    )


async def _all(requests: Iterable[Awaitable[None]]) -> None:
    """Send independent requests concurrently; the first failure is raised after all end."""
    results = await asyncio.gather(*requests, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


async def _create(
    api: JetStreamApi,
    config: GroupConfig,
    new: NewLane,
    name: str,
    member: MemberInfo,
    epoch: int,
) -> None:
    await api.put_consumer(
        config.stream,
        consumer_config(
            name=name,
            filter_subjects=[block_filter(b, prefix=config.subject_prefix) for b in new.blocks],
            ack_wait_s=config.ack_wait_s,
            max_ack_pending=config.max_ack_pending,
            max_deliver=config.max_deliver,
            metadata={
                META_GROUP: config.group,
                META_MEMBER: member.name,
                META_INCARNATION: member.incarnation,
                META_EPOCH: str(epoch),
            },
        ),
    )
