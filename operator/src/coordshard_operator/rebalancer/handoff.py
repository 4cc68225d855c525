"""The rebalancer engine: the only code that creates, rewrites and deletes consumers.

It turns a desired assignment (consumer name → shards, from ``planning.plan``)
into JetStream consumer state without losing a message. Both membership
sources (the kopf operator and local mode) use it the same way::

    engine = Engine(js, GroupConfig(stream="COORDINATE", shards=64, replicas=3))
    await engine.ensure_stream()
    observed = await engine.observe()                 # what NATS holds: the assignment in force
    plan = planning.plan(shards=64, members=list(live), previous=observed.assignment)
    report = await engine.apply(plan.balance.assignment, members=live, epoch=n, observed=observed)

(``passes.run_pass`` is exactly this, plus the rules both membership sources
share.)

``live`` maps member id → ``MemberInfo`` for every member that is alive
now. A consumer of the group whose member is not in ``live`` belongs to a dead
member and is fenced (deleted) first.

Member ids and consumer names: the planner, ``Observed`` and ``Report`` speak
of member ids (``coordshard_client.naming.member_id``); the consumers
themselves are named ``<member id>_g<generation>``, and every consumer this
engine creates gets a generation higher than any it has made or seen, so a
member fenced while frozen and alive again gets a consumer under a new name,
which its own late acks (addressed to the old name) cannot reach.

Why the protocol is what it is (docs/handoff.md has the long form; the
measurements are in the JetStream notes):

- One durable pull consumer per member incarnation, ``filter_subjects`` = its
  shards. The stream is a work queue, so the server itself refuses two
  consumers with overlapping filters: every revocation must land before the
  matching grant.
- Growing a filter does not deliver the messages already in the stream on the
  new subjects (and on R3 the server may delete them). So a consumer is
  *reset to the stream's first sequence before its filter grows*, while it is
  paused and drained.
- Deleting a consumer is the only fence against a zombie: its pulls and acks
  stop counting at once. Dead members are fenced before anything else.
- A member with no shards has **no consumer** (an empty filter list means
  "every subject"). Workers wait for their consumer to appear; they never
  create one.

``apply`` is level-based: it reads the consumers that exist and does only
the difference, so a second call with the same input changes nothing, and a
run that died between any two steps is finished by the next call. Pauses are
given a deadline (``GroupConfig.pause_s``) so a consumer paused by a crashed
engine resumes by itself. One engine per group at a time: two concurrent
applies to the same group are not supported (the operator runs one leader).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, StreamConfig

from coordshard_client.naming import (
    DEFAULT_GROUP,
    DEFAULT_STREAM,
    consumer_name,
    generation_of,
    member_id,
    validate_name,
)
from coordshard_client.subjects import (
    DEFAULT_PREFIX,
    DEFAULT_SHARDS,
    MAX_SHARDS,
    shard_filter,
    shards_of_filters,
    validate_prefix,
)
from coordshard_operator.rebalancer.balancing import AssignmentLike
from coordshard_operator.rebalancer.errors import ConfigError, JetStreamUnavailableError
from coordshard_operator.rebalancer.jetstream import (
    JetStreamApi,
    RetryPolicy,
    consumer_config,
    stream_config,
)
from coordshard_operator.rebalancer.planning import plan_handoff
from coordshard_operator.rebalancer.strays import Swept, sweep

__all__ = [
    "MAX_DELIVER",
    "META_EPOCH",
    "META_GROUP",
    "META_INCARNATION",
    "META_MEMBER",
    "ConsumerState",
    "Engine",
    "Fenced",
    "GroupConfig",
    "MemberInfo",
    "Observed",
    "Report",
    "Undrained",
]

logger = logging.getLogger(__name__)

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

REWIND_ATTEMPTS = 3
"""Resets sent before a consumer whose cursor will not go back is given up on."""

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
    """Shard count N, fixed for the stream's lifetime; default ``subjects.DEFAULT_SHARDS``."""
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
        if self.replicas not in (1, 3, 5):
            raise ConfigError(f"replicas must be 1, 3 or 5, got {self.replicas}")
        if self.max_deliver < 2:
            raise ConfigError(f"max_deliver must be at least 2, got {self.max_deliver}")
        if self.drain_timeout_s <= 0 or self.pause_s <= self.drain_timeout_s:
            raise ConfigError("need 0 < drain_timeout_s < pause_s")


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A live member incarnation; ``consumer`` is its member id, the planner's id for it
    and the stem of its consumers' names (``coordshard_client.naming``)."""

    consumer: str
    member: str
    incarnation: str

    @classmethod
    def of(cls, *, group: str, member: str, incarnation: str) -> MemberInfo:
        """The member with its id derived as workers derive it."""
        name = member_id(group=group, member=member, incarnation=incarnation)
        return cls(consumer=name, member=member, incarnation=incarnation)


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


@dataclass(frozen=True, slots=True)
class Observed:
    """The group's consumers and the stream's sequence range."""

    consumers: Mapping[str, ConsumerState]
    """Member id → its consumer (a consumer with no member of ours is keyed by its name)."""
    first_seq: int
    last_seq: int

    @property
    def generation(self) -> int:
        """The highest generation or epoch any consumer of the group carries."""
        return max((max(c.generation, c.epoch) for c in self.consumers.values()), default=0)

    @property
    def assignment(self) -> dict[str, tuple[int, ...]]:
        """Member id → shards: the assignment in force (``plan``'s ``previous``)."""
        return {name: c.shards for name, c in sorted(self.consumers.items())}


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
    undrained: tuple[Undrained, ...] = ()
    resumed: tuple[str, ...] = ()
    consumer_updates: int = 0
    """Consumer-changing JetStream requests sent (0 when converged)."""
    duration_s: float = 0.0

    @property
    def moved_shards(self) -> tuple[int, ...]:
        return tuple(sorted({s for shards in self.grown.values() for s in shards}))

    @property
    def changed(self) -> bool:
        return self.consumer_updates > 0


class Engine:
    """Applies assignments of one group to JetStream with the safe handoff protocol."""

    def __init__(
        self,
        js: JetStreamContext,
        config: GroupConfig,
        *,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.config = config
        self.api = JetStreamApi(js, retry=config.retry)
        self._checkpoint = checkpoint
        self._swept = False
        """Whether a sweep found the stream free of unowned messages since its
        subjects were last written (or since this engine started)."""
        self._stream_subjects: list[str] | None = None
        """The stream's subjects as the last ``observe`` read them."""
        self._generation = 0
        """The highest generation this engine has created or observed."""

    async def _step(self, name: str) -> None:
        if self._checkpoint is not None:
            await self._checkpoint(name)

    def _stream_config(self) -> StreamConfig:
        c = self.config
        return stream_config(
            name=c.stream,
            subject_prefix=c.subject_prefix,
            shards=c.shards,
            replicas=c.replicas,
            duplicate_window_s=c.duplicate_window_s,
        )

    async def ensure_stream(self) -> None:
        """Create the stream if missing, or rewrite its subjects to the shards' own.

        A server older than the protocol needs raises NatsServerTooOldError before
        anything is created. An incompatible stream (retention, a recorded shard
        count other than ours), or a rewrite the server refuses, raises
        StreamMismatchError; a stream that records no shard count gets ours. After a
        write the next ``sweep_strays`` looks for messages stored under the old subjects.
        """
        info, written = await self.api.ensure_stream(self._stream_config())
        self._stream_subjects = info.config.subjects
        if written:
            self._swept = False

    async def sweep_strays(self) -> Swept | None:
        """Keep the stream's subjects the shards' own, and remove messages no shard owns.

        Level-based and cheap when nothing is wrong: the subjects read by the last
        ``observe`` are compared (a stream rewritten by hand is put back), and the
        stream is listed only until one sweep after the last write found it clean
        (``strays``). None when no sweep ran.
        """
        if self._stream_subjects != self._stream_config().subjects:
            await self.ensure_stream()
        if self._swept:
            return None
        c = self.config
        swept = await sweep(self.api, stream=c.stream, prefix=c.subject_prefix, shards=c.shards)
        self._swept = swept.complete
        return swept

    def _state(self, info: ConsumerInfo) -> ConsumerState | None:
        cfg = info.config
        meta = cfg.metadata or {}
        if meta.get(META_GROUP) != self.config.group:
            return None
        filters = cfg.filter_subjects or ([cfg.filter_subject] if cfg.filter_subject else [])
        shards = shards_of_filters(filters, prefix=self.config.subject_prefix)
        if shards is None:
            logger.warning("consumer %s has filters we did not write: %s", info.name, filters)
            return None
        member = meta.get(META_MEMBER, "")
        incarnation = meta.get(META_INCARNATION, "")
        generation = 0
        if member and incarnation:
            stem = member_id(group=self.config.group, member=member, incarnation=incarnation)
            generation = generation_of(info.name, member=stem) or 0
        return ConsumerState(
            name=info.name,
            shards=shards,
            member=member,
            incarnation=incarnation,
            generation=generation,
            epoch=int(meta.get(META_EPOCH, "0")),
            num_ack_pending=info.num_ack_pending or 0,
            num_pending=info.num_pending or 0,
            ack_floor_seq=info.ack_floor.stream_seq if info.ack_floor else 0,
            delivered_seq=info.delivered.stream_seq if info.delivered else 0,
            paused=bool(info.paused),
            max_deliver=cfg.max_deliver if cfg.max_deliver is not None else -1,
        )

    async def observe(self) -> Observed:
        """The group's consumers (by metadata), keyed by member id, and the stream's range.

        A consumer whose metadata names no member, or a second consumer of one
        member (the older generation), is keyed by its own name: no live member
        has that id, so ``apply`` fences it.
        """
        infos = await self.api.consumers(self.config.stream)
        stream = await self.api.stream_info(self.config.stream)
        self._stream_subjects = stream.config.subjects
        states = [s for s in map(self._state, infos) if s is not None]
        consumers: dict[str, ConsumerState] = {}
        for s in sorted(states, key=lambda s: (-s.generation, s.name)):
            key = s.name
            if s.member and s.incarnation:
                mid = member_id(group=self.config.group, member=s.member, incarnation=s.incarnation)
                if mid not in consumers:
                    key = mid
            consumers[key] = s
        observed = Observed(
            consumers=consumers,
            first_seq=stream.state.first_seq,
            last_seq=stream.state.last_seq,
        )
        self._generation = max(self._generation, observed.generation)
        return observed

    def _next_generation(self, epoch: int) -> int:
        """The generation of the consumers one ``apply`` creates: its epoch, or one past
        every generation and epoch this engine has made or seen, if that is higher.

        One per apply, not per consumer: the names differ by member already. The
        epoch comes first so that names read like the reconcile that made them;
        the floor keeps them new when the caller's epochs started again (local
        mode's start at 0 on each ``coordshard up``) or repeat (a run that died
        before its epoch was recorded). What the floor cannot see is a generation
        whose consumers are all deleted *and* was made by an engine that has since
        restarted with a lower epoch: the kopf operator's epoch is in the CR's
        status, so that takes a lost status as well.
        """
        self._generation = max(self._generation + 1, epoch)
        return self._generation

    def _validate(
        self, desired: AssignmentLike, members: Mapping[str, MemberInfo]
    ) -> dict[str, frozenset[int]]:
        owner: dict[int, str] = {}
        want: dict[str, frozenset[int]] = {}
        items: Iterable[tuple[str, Iterable[int]]] = desired.items()
        for name, iterable in items:
            shards = tuple(iterable)
            if name not in members:
                raise ConfigError(f"desired assignment names {name}, which is not a live member")
            for s in shards:
                if not 0 <= s < self.config.shards:
                    raise ConfigError(f"shard {s} of {name} is outside 0..{self.config.shards - 1}")
                if s in owner:
                    raise ConfigError(f"shard {s} is assigned to both {owner[s]} and {name}")
                owner[s] = name
            if shards:
                want[name] = frozenset(shards)
        for name, info in members.items():
            if info.consumer != name:
                raise ConfigError(f"members key {name} differs from its consumer {info.consumer}")
        return want

    async def _put(self, name: str, shards: Iterable[int], member: MemberInfo, epoch: int) -> None:
        c = self.config
        await self.api.put_consumer(
            c.stream,
            consumer_config(
                name=name,
                filter_subjects=[shard_filter(s, prefix=c.subject_prefix) for s in sorted(shards)],
                ack_wait_s=c.ack_wait_s,
                max_ack_pending=c.max_ack_pending,
                max_deliver=c.max_deliver,
                metadata={
                    META_GROUP: c.group,
                    META_MEMBER: member.member,
                    META_INCARNATION: member.incarnation,
                    META_EPOCH: str(epoch),
                },
            ),
        )

    async def _drain(self, member: str, name: str) -> Undrained | None:
        """Wait (bounded) until a paused consumer has no delivery left unacked."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.drain_timeout_s
        while True:
            info = await self.api.consumer_info(self.config.stream, name)
            pending = 0 if info is None else info.num_ack_pending or 0
            if pending == 0:
                return None
            if loop.time() > deadline:
                logger.warning("consumer %s still has %d in flight; going on", name, pending)
                return Undrained(member, pending)
            await asyncio.sleep(0.005)  # polling a condition with a deadline

    async def _rewind(self, name: str, first_seq: int) -> None:
        """Reset a paused consumer to ``first_seq`` and check that its cursor is there.

        The last step before a consumer resumes with gained shards: a cursor past
        ``first_seq`` now would strand the leftovers behind it silently, so it is
        read back (from the consumer's leader) and a reset that did not take,
        e.g. one answered across a leader change, is sent again.
        """
        stream = self.config.stream
        for _ in range(REWIND_ATTEMPTS):
            await self.api.reset_consumer(stream, name, seq=first_seq)
            info = await self.api.consumer_info(stream, name)
            if info is None:  # deleted under us: the next reconcile re-creates it
                return
            cursor = info.delivered.stream_seq if info.delivered else 0
            if cursor <= max(first_seq - 1, 0):  # first_seq is 0 on a stream never written
                return
            logger.warning(
                "consumer %s: cursor at %d after a reset to %d; resetting again",
                name,
                cursor,
                first_seq,
            )
        raise JetStreamUnavailableError(
            f"consumer {name}: a reset to {first_seq} did not take "
            f"after {REWIND_ATTEMPTS} attempts; it stays paused for the next reconcile"
        )

    def drifted(self, observed: Observed) -> list[str]:
        """The group's consumers whose settings differ from the config's (not their filters)."""
        return sorted(
            name
            for name, c in observed.consumers.items()
            if c.max_deliver != self.config.max_deliver
        )

    async def apply(
        self,
        desired: AssignmentLike,
        *,
        members: Mapping[str, MemberInfo],
        epoch: int,
        observed: Observed | None = None,
    ) -> Report:
        """Make the group's consumers match ``desired``; only the difference is done.

        The difference is ``planning.plan_handoff`` of the consumers in force and
        ``desired`` — the steps ``coordshard plan`` prints — executed in this
        order: fence dead members → pause and drain losers and gainers → narrow
        losers (delete those left with nothing) → reset, grow and reset again each
        existing gainer, create new ones → resume everything of the group that is
        paused. ``observed``: the pass's own reading of the consumers (read here
        when not given), so one pass reads them once. Nothing is done on a server
        too old for the protocol (NatsServerTooOldError).
        """
        self.api.check_server()
        started = time.perf_counter()
        before = self.api.mutations
        stream = self.config.stream
        want = self._validate(desired, members)
        if observed is None:
            observed = await self.observe()
        actual = {n: frozenset(c.shards) for n, c in observed.consumers.items()}
        steps = plan_handoff(observed.assignment, want, live=members)
        fence = [st.member for st in steps if st.action == "fence"]
        narrow = {st.member: st for st in steps if st.action == "narrow"}
        grow = {st.member: st for st in steps if st.action == "grow"}
        losers, gainers = list(narrow), list(grow)

        # Member id → consumer name; the steps below speak of members, NATS of names.
        real = {mid: c.name for mid, c in observed.consumers.items()}
        fenced: list[Fenced] = []
        for name in fence:
            c = observed.consumers[name]
            dup = (
                (c.ack_floor_seq + 1, c.delivered_seq)
                if c.delivered_seq > c.ack_floor_seq
                else None
            )
            await self.api.delete_consumer(stream, c.name)
            fenced.append(Fenced(name, c.shards, c.num_ack_pending, dup, name=c.name))
            logger.info("fenced %s (shards %s, %d in flight)", c.name, c.shards, c.num_ack_pending)
            await self._step(f"fenced {name}")
        live = {n: s for n, s in actual.items() if n in members}
        rewound = [n for n in gainers if n in live]
        # A consumer of a live member found paused was left so by a run that died
        # mid-handoff, maybe between a grow and its second rewind: drain and
        # rewind it too (harmless otherwise: it redelivers only unacked messages).
        left_paused = sorted(
            n for n, c in observed.consumers.items() if c.paused and n in members and n in want
        )
        to_pause = sorted({*losers, *rewound, *left_paused})
        await asyncio.gather(
            *(self.api.pause_consumer(stream, real[n], for_s=self.config.pause_s) for n in to_pause)
        )
        if to_pause:
            await self._step("paused")
        drained = await asyncio.gather(*(self._drain(n, real[n]) for n in to_pause))
        undrained = tuple(u for u in drained if u is not None)

        narrowed: dict[str, tuple[int, ...]] = {}
        removed: list[str] = []
        for name, step in narrow.items():
            narrowed[name] = step.changed
            if step.shards:
                await self._put(real[name], step.shards, members[name], epoch)
            else:
                await self.api.delete_consumer(stream, real[name])
                removed.append(name)
            await self._step(f"narrowed {name}")

        grown: dict[str, tuple[int, ...]] = {}
        created: list[str] = []
        generation = 0
        if rewound or left_paused:
            # Read now: every message still in the stream is at or after this.
            first_seq = (await self.api.stream_info(stream)).state.first_seq
        for name, step in grow.items():
            grown[name] = step.changed
            if name in live:
                await self.api.reset_consumer(stream, real[name], seq=first_seq)
                await self._step(f"reset {name}")
            else:
                # Never an old name: see the module doc.
                generation = generation or self._next_generation(epoch)
                real[name] = consumer_name(name, generation=generation)
                created.append(name)
            await self._put(real[name], step.shards, members[name], epoch)
            await self._step(f"grown {name}")
            if name in live:
                # Measured on R3: the filter update itself can move the delivery
                # cursor past the gained shards' leftovers (they stay in the stream,
                # num_pending 0). A second rewind, still paused, picks them up; the
                # first one keeps the ack floor below them meanwhile.
                await self._rewind(real[name], first_seq)
                await self._step(f"rewound {name}")

        # Consumers the plan leaves alone but whose settings are not ours (made
        # before max_deliver was set): the same filters, the current settings.
        for name in self.drifted(observed):
            if name in want and name not in narrow and name not in grow:
                await self._put(real[name], sorted(want[name]), members[name], epoch)
                await self._step(f"refreshed {name}")

        for name in left_paused:  # gainers among them were rewound above
            if name not in gainers:
                await self._rewind(real[name], first_seq)
                await self._step(f"rewound {name}")
        # Resume what we paused, which includes what a dead run left paused.
        resume = sorted(set(to_pause) - set(removed))
        await asyncio.gather(*(self.api.resume_consumer(stream, real[n]) for n in resume))

        report = Report(
            epoch=epoch,
            fenced=tuple(fenced),
            narrowed=narrowed,
            grown=grown,
            created=tuple(created),
            created_names=tuple(real[n] for n in created),
            removed=tuple(removed),
            undrained=undrained,
            resumed=tuple(resume),
            consumer_updates=self.api.mutations - before,
            duration_s=time.perf_counter() - started,
        )
        if report.changed:
            logger.info(
                "epoch %d: fenced %s, moved shards %s in %.1f ms",
                epoch,
                [f.consumer for f in fenced],
                list(report.moved_shards),
                report.duration_s * 1000,
            )
        return report

    async def remove_group(self) -> None:
        """Delete every consumer of the group; the stream and its messages stay."""
        observed = await self.observe()
        for c in sorted(observed.consumers.values(), key=lambda c: c.name):
            await self.api.delete_consumer(self.config.stream, c.name)
