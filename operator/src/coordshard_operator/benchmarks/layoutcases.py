"""The consumer layouts the spike compares, each able to set up and hand off a crash.

- ``today``: the product's engine as it is (one consumer per member, one
  ``<prefix>.<shard>.>`` filter per shard; a crash is fenced, then every gainer
  is paused, drained, reset, grown, reset and resumed).
- ``lanes F``: a member owns several consumers of at most F filters each; a
  crash deletes the dead member's consumers and grants its shards on *new*
  consumers (deliver all), so no survivor's consumer is touched.
- ``blocks B``: the subject grammar gains a block token,
  ``<prefix>.<shard // B>.<shard>.<id>.<op>``; members own whole blocks and
  filter ``<prefix>.<block>.>``, on lanes as above.
- ``server blocks B``: the same blocks, computed by the server: publishers keep
  ``<prefix>.<shard>.<id>.<op>``, and a stream subject transform stores
  ``<prefix>.b.{{partition(K, id)}}.<shard>.<id>.<op>`` with K = N / B, which is
  ``shard % K`` whenever K divides N; a block is the shards ``b, b + K, ...``.
- ``per shard``: one consumer per shard (lanes with F = 1), on a stream whose
  ``max_consumers`` is raised past nats-server's default of 1000.
- ``engine``: the product's engine on a new stream, i.e. the blocks layout it
  builds from ``server blocks`` (``rebalancer.lanehandoff``), driven through
  ``passes.run_pass`` as the membership sources drive it.

All of them place work with the product's planner (``planning.plan``), over
shards or, for blocks, over blocks, so the same number of units moves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, StreamConfig, SubjectTransform

from coordshard_client.subjects import shard_filter
from coordshard_operator.benchmarks.layoutrig import Requests, Workers, chunks
from coordshard_operator.benchmarks.workload import ids_per_shard
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.jetstream import consumer_config, stream_config
from coordshard_operator.rebalancer.lanes import LANE_BLOCKS
from coordshard_operator.rebalancer.passes import run_pass
from coordshard_operator.rebalancer.planning import plan
from coordshard_operator.rebalancer.state import Layout as StreamLayout

__all__ = ["PREFIX", "EngineBlocks", "Lanes", "Layout", "Shape", "Today", "layout_named"]

PREFIX = "lay.cmd"
GROUP = "lay"
ENGINE_CALLS = (
    "consumers",
    "stream_info",
    "stream_subjects",
    "consumer_info",
    "put_consumer",
    "delete_consumer",
    "pause_consumer",
    "resume_consumer",
    "reset_consumer",
)
"""The engine's JetStream calls, each timed as one request."""


@dataclass(frozen=True)
class Shape:
    """How big the layout is: the bounds a design would promise."""

    consumers: int
    filters: int
    most_filters: int
    """Filters of the consumer with the most."""
    most_consumers: int
    """Consumers of the member with the most."""


class Layout(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def shard_token(self) -> int:
        """Index of the shard token in a command subject."""
        ...

    @property
    def pull_expiry_s(self) -> float:
        """Expiry of the workers' pull requests."""
        ...

    def subject(self, shard: int, key: int) -> str: ...
    async def create_stream(self, js: JetStreamContext) -> None: ...
    async def setup(self, js: JetStreamContext, workers: Workers) -> None: ...
    def owned(self, member: str) -> set[int]: ...
    def shape(self) -> Shape: ...
    def consumers_of(self, members: Iterable[str]) -> list[str]: ...
    async def hand_off(
        self, js: JetStreamContext, victim: str, req: Requests, workers: Workers
    ) -> None: ...


def _metadata(member: str) -> dict[str, str]:
    return {"coordshard.group": GROUP, "coordshard.member": member}


@dataclass
class _EngineDriven(ABC):
    """A layout the product's engine makes and hands off: ``today`` and ``engine``.

    What differs is the stream layout the engine is given, how a pass converges
    (``_converge``) and how the lanes are read back (``_lane_members``); making the
    stream, the hand-off (timed call by call) and the survivors' consumers are one copy.
    """

    stream: str
    shards: int
    members: list[str]
    engine: Engine | None = None
    live: dict[str, MemberInfo] = field(default_factory=dict)
    lane_blocks: int = LANE_BLOCKS
    """F, the most blocks on one lane (the group's ``lane_blocks``)."""
    replicas: int = 1
    """The stream's replicas (its consumers inherit them): 3 on a 3-node cluster."""
    stream_layout: ClassVar[StreamLayout]

    async def create_stream(self, js: JetStreamContext) -> None:
        config = GroupConfig(stream=self.stream, subject_prefix=PREFIX, group=GROUP,
                             shards=self.shards, layout=self.stream_layout,
                             lane_blocks=self.lane_blocks, replicas=self.replicas)  # fmt: skip
        self.engine = Engine(js, config)
        for m in self.members:
            info = MemberInfo.of(group=GROUP, member=m, incarnation="1")
            self.live[info.id] = info
        await self.engine.ensure_stream()

    @abstractmethod
    async def _converge(self, epoch: int) -> None: ...

    @abstractmethod
    def _lane_members(self) -> dict[str, str | None]:
        """Consumer name → the name of the member it serves."""

    def consumers_of(self, members: Iterable[str]) -> list[str]:
        wanted = set(members)
        return [n for n, m in self._lane_members().items() if m in wanted]

    async def hand_off(
        self, js: JetStreamContext, victim: str, req: Requests, workers: Workers
    ) -> None:
        assert self.engine is not None
        self.live = {c: i for c, i in self.live.items() if i.name != victim}
        api = self.engine.api
        req.wrap(api, ENGINE_CALLS)
        try:
            await self._converge(2)
        finally:
            for name in ENGINE_CALLS:  # drop the instance wrappers
                delattr(api, name)


@dataclass
class Today(_EngineDriven):
    """The engine of today, driven as the membership sources drive it."""

    name: str = "today"
    shard_token: int = 2
    pull_expiry_s: float = 0.1
    """Short, as the product's worker: a pull waiting across a reset and a grow does
    not get the gained shards' messages until it expires (docs/handoff.md)."""
    assignment: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Member id → its shards."""
    names: dict[str, str] = field(default_factory=dict)
    """Member id → the name of its consumer."""
    stream_layout: ClassVar[StreamLayout] = "shards"

    def subject(self, shard: int, key: int) -> str:
        return f"{PREFIX}.{shard}.k{key}.op"

    def _member(self, consumer: str) -> str:
        return self.live[consumer].name

    async def _converge(self, epoch: int) -> None:
        assert self.engine is not None
        observed = await self.engine.observe()
        p = plan(shards=self.shards, members=list(self.live), previous=observed.assignment)
        await self.engine.apply(p.balance.assignment, members=self.live, epoch=epoch,
                                observed=observed)  # fmt: skip
        self.assignment = {c: tuple(s) for c, s in p.balance.assignment.items() if s}
        # The engine names each consumer it makes <member id>_g<generation>.
        now = await self.engine.observe()
        self.names = {m: st.name for m, st in now.consumers.items() if m in self.assignment}

    async def setup(self, js: JetStreamContext, workers: Workers) -> None:
        await self._converge(1)
        for consumer in self.assignment:
            await workers.start(self._member(consumer), self.names[consumer])

    def owned(self, member: str) -> set[int]:
        return {s for c, shards in self.assignment.items() if self._member(c) == member
                for s in shards}  # fmt: skip

    def shape(self) -> Shape:
        sizes = [len(s) for s in self.assignment.values()]
        return Shape(len(sizes), sum(sizes), max(sizes, default=0), 1)

    def _lane_members(self) -> dict[str, str | None]:
        return {self.names[c]: self._member(c) for c in self.assignment}


@dataclass
class Lanes:
    """Several consumers per member, at most ``per_consumer`` filters each; gains on new ones.

    The unit of ownership is a shard, or a block of ``block`` shards when the
    grammar has a block token (``block`` > 0).
    """

    stream: str
    shards: int
    members: list[str]
    per_consumer: int
    block: int = 0
    transform: bool = False
    """Blocks computed by the server: the publish grammar stays ``<prefix>.<shard>.<id>.<op>``
    and a stream subject transform stores ``<prefix>.b.<shard % K>.<shard>.<id>.<op>``,
    K = shards / block, with ``partition(K)`` of the id (equal to ``shard % K`` when K
    divides N). A block is then the residue class of shards ``b, b + K, ...``."""
    name: str = ""
    replicas: int = 1
    pull_expiry_s: float = 0.1
    """As today's, but 1 s for one consumer per shard (thousands of idle pulls)."""
    _ids: list[str] = field(default_factory=list)
    """One system id per shard (``shard_of(id) == shard``), for server blocks."""
    lanes: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)
    """member → consumer → units it filters."""
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.per_consumer == 1:
            self.pull_expiry_s = 1.0
        if self.transform:
            if self.shards % self.block:
                raise ValueError(f"server blocks need a block size dividing {self.shards}")
            self._ids = ids_per_shard(self.shards)
        if not self.name:
            self.name = (f"server blocks {self.block}" if self.transform
                         else f"blocks {self.block} F{self.per_consumer}" if self.block
                         else "per shard" if self.per_consumer == 1
                         else f"lanes F{self.per_consumer}")  # fmt: skip

    @property
    def shard_token(self) -> int:
        return 4 if self.transform else 3 if self.block else 2

    @property
    def units(self) -> int:
        return math.ceil(self.shards / self.block) if self.block else self.shards

    def subject(self, shard: int, key: int) -> str:
        if self.transform:  # the server reads the block from the id: it must be the shard's
            return f"{PREFIX}.{shard}.{self._ids[shard]}.k{key}"
        if self.block:
            return f"{PREFIX}.{shard // self.block}.{shard}.k{key}.op"
        return f"{PREFIX}.{shard}.k{key}.op"

    def _filter(self, unit: int) -> str:
        if self.transform:
            return f"{PREFIX}.b.{unit}.>"
        return f"{PREFIX}.{unit}.>" if self.block else shard_filter(unit, prefix=PREFIX)

    def _shards(self, unit: int) -> range:
        if not self.block:
            return range(unit, unit + 1)
        if self.transform:
            return range(unit, self.shards, self.units)
        return range(unit * self.block, min((unit + 1) * self.block, self.shards))

    async def create_stream(self, js: JetStreamContext) -> None:
        config: StreamConfig = stream_config(name=self.stream, subject_prefix=PREFIX,
                                             shards=self.shards, replicas=self.replicas,
                                             duplicate_window_s=120)  # fmt: skip
        if self.transform:
            k, w = self.units, "{{wildcard(%d)}}"
            dest = f"{PREFIX}.b.{{{{partition({k},2)}}}}." + ".".join(w % i for i in (1, 2, 3))
            transform = SubjectTransform(src=f"{PREFIX}.*.*.*", dest=dest)
            config = dataclasses.replace(config, subject_transform=transform)
        elif self.block:
            subjects = [f"{PREFIX}.{s // self.block}.{s}.*.*" for s in range(self.shards)]
            config = dataclasses.replace(config, subjects=subjects)
        if self.per_consumer == 1:
            # One consumer per shard: past nats-server's default of 1000 per stream.
            config = dataclasses.replace(config, max_consumers=self.shards + 2 * len(self.members))
        await js.add_stream(config)

    def _new_lanes(self, member: str, units: Iterable[int]) -> list[tuple[str, list[int]]]:
        """New consumers of ``member`` for ``units``, F at a time (recorded, not created)."""
        self.epoch += 1
        made = []
        for k, run in enumerate(chunks(units, self.per_consumer)):
            consumer = f"{member}-e{self.epoch}-{k}"
            self.lanes.setdefault(member, {})[consumer] = tuple(run)
            made.append((consumer, run))
        return made

    def _config(self, member: str, consumer: str, run: list[int]) -> ConsumerConfig:
        return consumer_config(name=consumer, filter_subjects=[self._filter(u) for u in run],
                               ack_wait_s=30, max_ack_pending=1000, max_deliver=20,
                               metadata=_metadata(member))  # fmt: skip

    async def setup(self, js: JetStreamContext, workers: Workers) -> None:
        p = plan(shards=self.units, members=self.members, previous={})
        made = [(m, c, run) for m, units in p.balance.assignment.items()
                for c, run in self._new_lanes(m, units)]  # fmt: skip
        for member, consumer, run in made:
            await js.add_consumer(self.stream, self._config(member, consumer, run))
        for member, consumer, _ in made:  # only now, so the backlog waits for all of them
            await workers.start(member, consumer)

    def _assignment(self) -> dict[str, tuple[int, ...]]:
        return {m: tuple(sorted(u for run in lanes.values() for u in run))
                for m, lanes in self.lanes.items()}  # fmt: skip

    def owned(self, member: str) -> set[int]:
        units = self._assignment().get(member, ())
        return {s for u in units for s in self._shards(u)}

    def shape(self) -> Shape:
        sizes = [len(run) for lanes in self.lanes.values() for run in lanes.values()]
        per_member = [len(lanes) for lanes in self.lanes.values()]
        return Shape(len(sizes), sum(sizes), max(sizes, default=0), max(per_member, default=0))

    def consumers_of(self, members: Iterable[str]) -> list[str]:
        return [c for m in members for c in self.lanes.get(m, {})]

    async def hand_off(
        self, js: JetStreamContext, victim: str, req: Requests, workers: Workers
    ) -> None:
        before = self._assignment()
        dead = self.lanes.pop(victim, {})
        # The fence: the dead member's consumers go first, all at once.
        await asyncio.gather(*(req.timed("delete_consumer", c, js.delete_consumer(self.stream, c))
                               for c in dead))  # fmt: skip
        previous = {m: u for m, u in before.items() if m != victim}
        p = plan(shards=self.units, members=sorted(previous), previous=previous)
        grants = []
        for member, units in p.balance.assignment.items():
            gained = set(units) - set(previous.get(member, ()))
            if gained:
                grants += [(member, c, run) for c, run in self._new_lanes(member, gained)]
        for member, consumer, _ in grants:
            workers.expect(consumer, member)
        await asyncio.gather(*(
            req.timed("create_consumer", c,
                      js.add_consumer(self.stream, self._config(m, c, run)))
            for m, c, run in grants))  # fmt: skip


@dataclass
class EngineBlocks(_EngineDriven):
    """The product's engine on a blocks stream: lanes granted on a crash, learned from
    the consumer-created advisory by the workers."""

    name: str = "engine"
    shard_token: int = 4
    """``<prefix>.b.<block>.<shard>.<id>.<op>``: the stored form."""
    pull_expiry_s: float = 0.1
    lanes: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    """Lane name → (member id, shards)."""
    filters: dict[str, int] = field(default_factory=dict)
    """Lane name → its filter (block) count."""
    _ids: list[str] = field(default_factory=list)
    stream_layout: ClassVar[StreamLayout] = "blocks"
    sweep_first: bool = False
    """Sweep the stream for strays before the pass, as every pass did before the sweep
    moved after the grants (``engine-sweep-first``: that order, measured beside)."""

    def __post_init__(self) -> None:
        self._ids = ids_per_shard(self.shards)

    def subject(self, shard: int, key: int) -> str:
        return f"{PREFIX}.{shard}.{self._ids[shard]}.k{key}"

    async def _converge(self, epoch: int) -> None:
        assert self.engine is not None
        if self.sweep_first:
            await self.engine.sweep_strays()
        await run_pass(self.engine, shards=self.shards, members=self.live, epoch=epoch)
        observed = await self.engine.observe()
        self.lanes = {n: (observed.owner(n), c.shards) for n, c in observed.consumers.items()}
        self.filters = {n: len(c.blocks) for n, c in observed.consumers.items()}

    def _member_of(self, lane: str) -> str | None:
        stem = lane.rsplit("_g", 1)[0]
        info = self.live.get(stem)
        return info.name if info is not None else None

    async def setup(self, js: JetStreamContext, workers: Workers) -> None:
        await self._converge(1)
        for lane in self.lanes:
            member = self._member_of(lane)
            assert member is not None
            await workers.start(member, lane)
        workers.resolve = self._member_of

    def owned(self, member: str) -> set[int]:
        ids = {mid for mid, info in self.live.items() if info.name == member}
        return {s for mid, shards in self.lanes.values() if mid in ids for s in shards}

    def shape(self) -> Shape:
        filters = list(self.filters.values())
        per: dict[str, int] = {}
        for mid, _ in self.lanes.values():
            per[mid] = per.get(mid, 0) + 1
        most = max(per.values(), default=0)
        return Shape(len(filters), sum(filters), max(filters, default=0), most)

    def _lane_members(self) -> dict[str, str | None]:
        return {n: self._member_of(n) for n in self.lanes}


def layout_named(
    name: str, *, stream: str, shards: int, members: list[str], replicas: int = 1
) -> Layout:
    """``today``, ``engine``, ``lanes16``, ``blocks16``, ``xblocks16``, ``pershard`` → a
    fresh layout, its stream of ``replicas`` replicas."""
    r = replicas
    if name == "today":
        return Today(stream, shards, members, replicas=r)
    if name == "engine":
        return EngineBlocks(stream, shards, members, replicas=r)
    if name == "engine-sweep-first":
        return EngineBlocks(stream, shards, members, replicas=r, name=name, sweep_first=True)
    if name == "pershard":
        return Lanes(stream, shards, members, per_consumer=1, replicas=r)
    if name.startswith("lanes"):
        return Lanes(stream, shards, members, per_consumer=int(name[5:]), replicas=r)
    if name.startswith("xblocks"):
        return Lanes(stream, shards, members, per_consumer=64, block=int(name[7:]),
                     transform=True, replicas=r)  # fmt: skip
    if name.startswith("blocks"):
        return Lanes(stream, shards, members, per_consumer=64, block=int(name[6:]), replicas=r)
    raise ValueError(
        f"unknown layout {name!r}: today, engine, engine-sweep-first, lanesF, blocksB, "
        "xblocksB or pershard"
    )
