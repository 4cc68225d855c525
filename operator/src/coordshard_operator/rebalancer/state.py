"""The engine's vocabulary: a group's config, its members, what NATS holds, what a pass did.

Plain frozen values, shared by the two hand-off executors (``handoff`` for the
"shards" layout, ``lanehandoff`` for "blocks") and re-exported by ``handoff``.

Layouts. ``"blocks"`` (new streams): the stream's subject transform stores each
command under ``<prefix>.b.<block>.<shard>.<id>.<op>``
(``coordshard_client.subjects.block_transform``, K = ``blocks_of(N)`` blocks),
members own whole blocks on lanes of at most ``lanes.LANE_BLOCKS`` filters.
``"shards"``: one consumer per member filtering ``<prefix>.<shard>.>`` per shard,
the layout of every stream made before blocks; a stream without the transform
keeps it (migrating one is not built).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from coordshard_client.naming import (
    DEFAULT_GROUP,
    DEFAULT_STREAM,
    MemberId,
    member_id,
    validate_name,
)
from coordshard_client.subjects import (
    DEFAULT_PREFIX,
    DEFAULT_SHARDS,
    MAX_BLOCKS,
    MAX_SHARDS,
    blocks_of,
    validate_prefix,
)
from coordshard_operator.rebalancer.errors import ConfigError
from coordshard_operator.rebalancer.jetstream import RetryPolicy
from coordshard_operator.rebalancer.lanes import LANE_BLOCKS

__all__ = [
    "MAX_DELIVER",
    "META_EPOCH",
    "META_GROUP",
    "META_INCARNATION",
    "META_MEMBER",
    "Checkpoint",
    "ConsumerState",
    "Fenced",
    "GroupConfig",
    "Layout",
    "MemberInfo",
    "Observed",
    "Report",
    "Undrained",
]

Layout = Literal["blocks", "shards"]

META_GROUP = "coordshard.group"
META_MEMBER = "coordshard.member"
META_INCARNATION = "coordshard.incarnation"
META_EPOCH = "coordshard.epoch"

MAX_DELIVER = 20
"""The last resort against a message no worker can settle (one that kills or wedges
it before the ack). A valid command is redelivered only when its worker stopped or
died before acking it (a held batch is kept with ``in_progress``, which is no new
delivery), so 20 is far past any run of restarts; with the default ``ack_wait`` of
30 s it is at least 10 minutes of tries."""

Checkpoint = Callable[[str], Awaitable[None]]
"""Called with a step name after every protocol step (tests inject crashes here)."""


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """One consumer group over one command stream."""

    stream: str = DEFAULT_STREAM
    """Stream name; default ``COORDINATE``."""
    subject_prefix: str = DEFAULT_PREFIX
    """Commands are on ``<prefix>.<shard>.<system_id>.<op>``; default ``coordinate.cmd``."""
    group: str = DEFAULT_GROUP
    """Group name, the first part of every consumer name; default ``coordinate``."""
    shards: int = DEFAULT_SHARDS
    """Shard count N, fixed for the stream's lifetime; default ``subjects.DEFAULT_SHARDS``.
    With the blocks layout N must be at most 512, or have a divisor from 256 to 512
    (``subjects.blocks_of``): 1024, 2048 and 4096 do, a prime above 512 does not."""
    layout: Layout = "blocks"
    """How a *new* stream stores commands and how members own them; default ``blocks``
    (see the module doc). An existing stream keeps the layout it was made with."""
    replicas: int = 1
    """Stream replicas, 1 or 3; default 1. Consumers inherit it."""
    ack_wait_s: float = 30.0
    """Seconds before an unacked delivery is redelivered; default 30."""
    max_ack_pending: int = 1000
    """Most unacked deliveries per consumer; default 1000."""
    max_deliver: int = MAX_DELIVER
    """Deliveries of one message before its consumer gives up on it; default 20. The
    server then sends its max-deliveries advisory, on which the worker moves the
    message into the dead-letter store (``coordshard_service.advisories``)."""
    duplicate_window_s: float = 120.0
    """Stream duplicate window for ``Nats-Msg-Id`` publisher retries, seconds; default 120."""
    drain_timeout_s: float = 2.0
    """How long a paused consumer may take to reach zero in-flight acks, seconds; default 2.
    Past it the handoff goes on and the report counts the possible duplicates."""
    pause_s: float = 30.0
    """Deadline of every pause, seconds; default 30. Bounds how long a consumer stays
    paused if the engine dies mid-handoff and nothing reconciles again."""
    sweep_retry_s: float = 60.0
    """After a sweep for unowned messages that could not look at everything (the stream
    holds more distinct subjects than one listing returns, or a stray too many to delete
    at once), how long until the next; seconds, default 60. Each such listing reads the
    whole subject index under the stream's lock (0.2 to 0.7 s at 100k subjects), so it must
    not run on every pass."""
    lane_blocks: int = LANE_BLOCKS
    """The most block filters on one lane (F, blocks layout); default ``lanes.LANE_BLOCKS``.
    Fewer lanes per member pull larger batches; a longer filter list costs each lane
    create more (docs/benchmarks.md, "End to end at N = 16 and 4096")."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    """Retries of transient JetStream failures."""

    def __post_init__(self) -> None:
        try:
            validate_name(self.stream, what="stream")
            validate_name(self.group, what="group")
            validate_prefix(self.subject_prefix)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ConfigError(f"shards must be 1..{MAX_SHARDS}, got {self.shards}")
        if self.layout not in ("blocks", "shards"):
            raise ConfigError(f"layout must be blocks or shards, got {self.layout!r}")
        if self.layout == "blocks":
            try:
                blocks_of(self.shards)
            except ValueError as e:
                raise ConfigError(str(e)) from e
        if self.replicas not in (1, 3, 5):
            raise ConfigError(f"replicas must be 1, 3 or 5, got {self.replicas}")
        if self.max_deliver < 2:
            raise ConfigError(f"max_deliver must be at least 2, got {self.max_deliver}")
        if not 1 <= self.lane_blocks <= MAX_BLOCKS:
            raise ConfigError(f"lane_blocks must be 1..{MAX_BLOCKS}, got {self.lane_blocks}")
        if self.drain_timeout_s <= 0 or self.pause_s <= self.drain_timeout_s:
            raise ConfigError("need 0 < drain_timeout_s < pause_s")

    @property
    def blocks(self) -> int:
        """K, the blocks a blocks stream of this group stores under (``subjects.blocks_of``)."""
        return blocks_of(self.shards)


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A live member incarnation."""

    id: MemberId
    """The planner's id for it and the stem of its consumers' names
    (``coordshard_client.naming.member_id``)."""
    name: str
    """The member's own name: its pod's in Kubernetes, its worker's in local mode."""
    incarnation: str
    """What tells two lives of one name apart: the pod's UID, a worker's start."""

    @classmethod
    def of(cls, *, group: str, member: str, incarnation: str) -> MemberInfo:
        """The member with its id derived as workers derive it."""
        mid = member_id(group=group, member=member, incarnation=incarnation)
        return cls(id=mid, name=member, incarnation=incarnation)


@dataclass(frozen=True, slots=True)
class ConsumerState:
    """One of the group's consumers as NATS reports it."""

    name: str
    """The consumer's own name (``<member id>_g<generation>``)."""
    shards: tuple[int, ...]
    member: str
    incarnation: str
    epoch: int
    num_ack_pending: int
    num_pending: int
    ack_floor_seq: int
    delivered_seq: int
    paused: bool
    max_deliver: int = -1
    """As configured; -1 (the server's "unlimited") on consumers made before it was set."""
    generation: int = 0
    """From its name; 0 for a consumer named exactly its member id (made before generations)."""
    blocks: tuple[int, ...] = ()
    """The blocks a lane filters (blocks layout; ``shards`` are then their shards)."""
    member_id: str = ""
    """Its member's id, from its metadata; "" when the metadata names no member."""


@dataclass(frozen=True, slots=True)
class Observed:
    """The group's consumers and the stream's sequence range."""

    consumers: Mapping[str, ConsumerState]
    """Shards layout: member id → its consumer (a consumer with no member of ours is
    keyed by its name). Blocks layout: lane name → lane, every consumer of the group."""
    first_seq: int
    last_seq: int
    layout: Layout = "shards"
    contested: Mapping[str, ConsumerState] = field(default_factory=dict)
    """Consumer name → a consumer that claims a shard an older consumer of the group
    claims too (``overlaps``): left out of ``consumers`` and ``assignment``, and
    retired by ``Engine.apply`` before anything is granted."""
    recreated: bool = False
    """The stream was gone and this reading created it again: what it held is lost."""

    @property
    def generation(self) -> int:
        """The highest generation or epoch any consumer of the group carries."""
        every = [*self.consumers.values(), *self.contested.values()]
        return max((max(c.generation, c.epoch) for c in every), default=0)

    def owner(self, key: str) -> str:
        """The member id ``consumers[key]`` counts for (its own key when unknown)."""
        if self.layout == "shards":
            return key
        return self.consumers[key].member_id or key

    @property
    def assignment(self) -> dict[str, tuple[int, ...]]:
        """Member id → shards: the assignment in force (``plan``'s ``previous``)."""
        owned: dict[str, list[int]] = {}
        for key, c in sorted(self.consumers.items()):
            owned.setdefault(self.owner(key), []).extend(c.shards)
        return {m: tuple(sorted(s)) for m, s in sorted(owned.items())}

    @property
    def pods(self) -> dict[str, str]:
        """Member id → the member (pod) name its consumers' metadata records."""
        return {self.owner(k): c.member for k, c in sorted(self.consumers.items())}


@dataclass(frozen=True, slots=True)
class Fenced:
    """A dead member's consumer, deleted before its shards went elsewhere."""

    consumer: str
    """The member id (``Observed.consumers``' key)."""
    shards: tuple[int, ...]
    in_flight: int
    """Deliveries it had not acked: the most duplicates its shards' new owners can see."""
    duplicate_range: tuple[int, int] | None
    """Stream sequences (first, last) that may be processed twice, or None."""
    name: str = ""
    """The deleted consumer's own name."""


@dataclass(frozen=True, slots=True)
class Undrained:
    """A paused consumer that still had in-flight deliveries when its drain bound ran out."""

    consumer: str
    num_ack_pending: int


@dataclass(frozen=True, slots=True)
class Report:
    """What one reconcile did. Empty (``changed`` false) when already converged."""

    epoch: int
    fenced: tuple[Fenced, ...] = ()
    narrowed: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Live consumer → shards taken from it (emptied ones are also in ``removed``)."""
    grown: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Consumer → shards given to it (created consumers included)."""
    created: tuple[str, ...] = ()
    """Member ids given a new consumer (its name is in ``created_names``)."""
    created_names: tuple[str, ...] = ()
    """The names of the consumers created, in ``created``'s order."""
    removed: tuple[str, ...] = ()
    """Live consumers deleted because their member has no shards left."""
    retired: tuple[str, ...] = ()
    """Blocks layout: the names of the live lanes paused, drained and deleted."""
    undrained: tuple[Undrained, ...] = ()
    resumed: tuple[str, ...] = ()
    contested: tuple[str, ...] = ()
    """The names of the consumers retired first because an older consumer of the group
    claimed a shard of theirs (``overlaps``)."""
    consumer_updates: int = 0
    """Consumer-changing JetStream requests sent (0 when converged)."""
    duration_s: float = 0.0

    @property
    def moved_shards(self) -> tuple[int, ...]:
        return tuple(sorted({s for shards in self.grown.values() for s in shards}))

    @property
    def changed(self) -> bool:
        return self.consumer_updates > 0
