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
from collections.abc import Iterable, Mapping
from dataclasses import replace

from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, StreamConfig, StreamInfo

from coordshard_client.naming import consumer_name, generation_of, member_id
from coordshard_client.subjects import (
    parse_block_filter,
    shard_filter,
    shards_of_block,
    shards_of_filters,
)
from coordshard_operator.rebalancer.balancing import AssignmentLike
from coordshard_operator.rebalancer.errors import (
    ConfigError,
    JetStreamApiError,
    JetStreamUnavailableError,
    StreamMissingError,
)
from coordshard_operator.rebalancer.jetstream import (
    CONSUMER_NOT_FOUND,
    JetStreamApi,
    check_stream,
    consumer_config,
    stream_config,
    stream_layout,
)
from coordshard_operator.rebalancer.lanehandoff import apply_lanes, drain, lane_states, want_blocks
from coordshard_operator.rebalancer.lanes import plan_lanes, release_order
from coordshard_operator.rebalancer.overlaps import Claim, contested
from coordshard_operator.rebalancer.planning import plan_handoff
from coordshard_operator.rebalancer.state import (
    MAX_DELIVER,
    META_EPOCH,
    META_GROUP,
    META_INCARNATION,
    META_MEMBER,
    Checkpoint,
    ConsumerState,
    Fenced,
    GroupConfig,
    Layout,
    MemberInfo,
    Observed,
    Report,
    Undrained,
)
from coordshard_operator.rebalancer.strays import Swept, sweep

__all__ = [
    "MAX_DELIVER",
    "META_EPOCH",
    "META_GROUP",
    "META_INCARNATION",
    "META_MEMBER",
    "Checkpoint",
    "ConsumerState",
    "Engine",
    "Fenced",
    "GroupConfig",
    "Layout",
    "MemberInfo",
    "Observed",
    "Report",
    "Undrained",
]

logger = logging.getLogger(__name__)

REWIND_ATTEMPTS = 3
"""Resets sent before a consumer whose cursor will not go back is given up on."""
OVERLAP_READS = 3
"""Readings of the consumers, in all, before two that claim one shard are believed."""
OVERLAP_REREAD_S = 0.25
"""Seconds between two of those readings: a new leader applies what it missed in less."""


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
        self._sweep_after = 0.0
        """Monotonic time before which no sweep runs (set after an incomplete one)."""
        self._stream_subjects: list[str] | None = None
        """The stream's subjects as the last ``observe`` read them."""
        self._generation = 0
        """The highest generation this engine has created or observed."""
        self.layout: Layout | None = None
        """The layout of the stream as last read (None before the first read): an
        existing stream keeps the one it was made with, whatever ``config.layout`` says."""

    @property
    def blocks(self) -> int | None:
        """K when the stream stores under blocks (the planner's ``blocks=``), else None."""
        return self.config.blocks if self._layout() == "blocks" else None

    def _layout(self) -> Layout:
        return self.layout or self.config.layout

    def _read_layout(self, stream: StreamInfo) -> None:
        c = self.config
        blocks = c.blocks if c.layout == "blocks" or stream.config.subject_transform else None
        found = stream_layout(stream.config, subject_prefix=c.subject_prefix, blocks=blocks)
        if found != self.layout and found != c.layout:
            logger.warning(
                "stream %s has no block transform: it keeps the shards layout (one consumer "
                "per member, a filter per shard); migrating an existing stream is not built",
                c.stream,
            )
        self.layout = found

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
            blocks=c.blocks if self._layout() == "blocks" else None,
        )

    async def ensure_stream(self) -> None:
        """Create the stream if missing, or rewrite its subjects to the shards' own.

        A server older than the protocol needs raises NatsServerTooOldError before
        anything is created. An incompatible stream (retention, a recorded shard
        count other than ours), or a rewrite the server refuses, raises
        StreamMismatchError; a stream that records no shard count gets ours. After a
        write the next ``sweep_strays`` looks for messages stored under the old subjects.
        A new stream gets ``config.layout``; an existing one keeps its own (no transform
        is ever added to a stream that may hold messages).
        """
        try:
            existing = await self.api.stream_info(self.config.stream)
        except StreamMissingError:
            self.layout = None
        else:
            check_stream(existing.config, self._stream_config())
            self._read_layout(existing)
        info, written = await self.api.ensure_stream(self._stream_config())
        self._read_layout(info)
        self._stream_subjects = info.config.subjects
        if written:
            self._swept = False
            self._sweep_after = 0.0

    async def sweep_strays(self) -> Swept | None:
        """Keep the stream's subjects the shards' own, and remove messages no shard owns.

        Level-based and cheap when nothing is wrong: the subjects read by the last
        ``observe`` are compared (a stream rewritten by hand is put back), and the
        stream is listed only until one sweep after the last write found it clean
        (``strays``); after a sweep that could not see everything, not again for
        ``config.sweep_retry_s``. None when no sweep ran.
        """
        if self._stream_subjects != self._stream_config().subjects:
            await self.ensure_stream()
        if self._swept or time.monotonic() < self._sweep_after:
            return None
        c = self.config
        swept = await sweep(
            self.api, stream=c.stream, prefix=c.subject_prefix, shards=c.shards, blocks=self.blocks
        )
        self._swept = swept.complete
        if not swept.complete:
            self._sweep_after = time.monotonic() + c.sweep_retry_s
        return swept

    def _state(self, info: ConsumerInfo) -> ConsumerState | None:
        cfg = info.config
        meta = cfg.metadata or {}
        if meta.get(META_GROUP) != self.config.group:
            return None
        filters = cfg.filter_subjects or ([cfg.filter_subject] if cfg.filter_subject else [])
        blocks: tuple[int, ...] = ()
        if self._layout() == "blocks":
            found = [parse_block_filter(f, prefix=self.config.subject_prefix) for f in filters]
            blocks = tuple(sorted(b for b in found if b is not None))
            k = self.config.blocks
            shards: tuple[int, ...] | None = None
            if filters and len(blocks) == len(found) and all(b < k for b in blocks):
                shards = tuple(sorted(s for b in blocks
                                      for s in shards_of_block(b, shards=self.config.shards,
                                                               blocks=k)))  # fmt: skip
        else:
            shards = shards_of_filters(filters, prefix=self.config.subject_prefix)
        if shards is None:
            logger.warning("consumer %s has filters we did not write: %s", info.name, filters)
            return None
        member = meta.get(META_MEMBER, "")
        incarnation = meta.get(META_INCARNATION, "")
        generation = 0
        stem = ""
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
            blocks=blocks,
            member_id=stem,
        )

    async def observe(self) -> Observed:
        """The group's consumers (by metadata), keyed by member id, and the stream's range.

        A consumer whose metadata names no member, or a second consumer of one
        member (the older generation), is keyed by its own name: no live member
        has that id, so ``apply`` fences it. On a blocks stream every lane is keyed
        by its own name (``Observed.owner`` gives its member id).

        A reading in which two consumers claim one shard is taken again, up to
        ``OVERLAP_READS`` times in all (a list answered across a leader change can
        show a consumer already deleted); an overlap still there is the server's
        own, and its newer consumers are ``Observed.contested`` (``overlaps``).

        A stream this engine has read before and that is gone now is created again
        (``ensure_stream``, in ``config.layout``) and read empty: ``Observed.recreated``;
        one it never read is StreamMissingError.
        """
        recreated = False
        for attempt in range(1, OVERLAP_READS + 1):
            try:
                stream, states = await self._read()
            except StreamMissingError:
                if recreated or self.layout is None:
                    raise  # never there for this engine: ensure_stream's to make
                # The stream went (deleted by hand, or a server that lost its storage):
                # make it again, in config.layout, so publishers and workers can go on.
                # Its messages and consumers are gone; every shard is planned afresh.
                logger.warning(
                    "stream %s is gone; creating it again (what it held is lost)",
                    self.config.stream,
                )
                await self.ensure_stream()
                recreated = True
                stream, states = await self._read()
            losers = contested(Claim(s.name, s.shards, s.generation, s.epoch) for s in states)
            if not losers or attempt == OVERLAP_READS:
                break
            logger.info("consumers %s overlap older ones; reading again", list(losers))
            await asyncio.sleep(OVERLAP_REREAD_S)  # backoff: no event says a list is current
        if losers:
            logger.warning(
                "stream %s holds consumers that claim shards older ones claim: %s; "
                "retiring them before anything is granted",
                self.config.stream,
                list(losers),
            )
        extra = {s.name: s for s in states if s.name in losers}
        states = [s for s in states if s.name not in extra]
        if self._layout() == "blocks":
            lanes = Observed(
                consumers={s.name: s for s in sorted(states, key=lambda s: s.name)},
                first_seq=stream.state.first_seq,
                last_seq=stream.state.last_seq,
                layout="blocks",
                contested=extra,
                recreated=recreated,
            )
            self._generation = max(self._generation, lanes.generation)
            return lanes
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
            contested=extra,
            recreated=recreated,
        )
        self._generation = max(self._generation, observed.generation)
        return observed

    async def _read(self) -> tuple[StreamInfo, list[ConsumerState]]:
        """One reading: the stream's info, then every consumer of the group."""
        stream = await self.api.stream_info(self.config.stream)
        self._read_layout(stream)
        infos = await self.api.consumers(self.config.stream)
        self._stream_subjects = stream.config.subjects
        return stream, [s for s in map(self._state, infos) if s is not None]

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
            if info.id != name:
                raise ConfigError(f"members key {name} differs from its consumer {info.id}")
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
                    META_MEMBER: member.name,
                    META_INCARNATION: member.incarnation,
                    META_EPOCH: str(epoch),
                },
            ),
        )

    async def _drain(self, member: str, name: str) -> Undrained | None:
        """Wait (bounded) until a paused consumer has no delivery left unacked."""
        c = self.config
        return await drain(self.api, c.stream, name, member_id=member, timeout_s=c.drain_timeout_s)

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
        """The group's consumers whose settings differ from the config's (not their filters).

        Always none on a blocks stream: its lanes are all made by this engine with
        today's settings (a lane is replaced, never updated)."""
        if observed.layout == "blocks":
            return []
        return sorted(
            name
            for name, c in observed.consumers.items()
            if c.max_deliver != self.config.max_deliver
        )

    def release_order(self, observed: Observed) -> dict[str, list[int]] | None:
        """The planner's ``release_order`` (blocks layout: smallest lanes first), or None."""
        if observed.layout != "blocks":
            return None
        return release_order(lane_states(observed))

    def settled(self, observed: Observed, desired: AssignmentLike) -> bool:
        """Whether ``apply(desired)`` would send nothing: no consumer paused or drifted,
        and on a blocks stream no lane to fence, retire, create or merge."""
        if observed.contested:
            return False
        if any(c.paused for c in observed.consumers.values()) or self.drifted(observed):
            return False
        if observed.layout != "blocks":
            return True
        want = want_blocks({m: tuple(s) for m, s in desired.items()}, config=self.config)
        planned = plan_lanes(
            lane_states(observed), want, live=desired, per_lane=self.config.lane_blocks
        )
        return planned.converged

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
        order: retire contested consumers (``overlaps``) → fence dead members →
        pause and drain losers and gainers → narrow losers (delete those left with
        nothing) → reset, grow and reset again each existing gainer, create new
        ones → resume everything of the group that is paused (a blocks stream:
        ``lanehandoff``, after the same first step). ``observed``: the pass's own
        reading of the consumers (read here when not given), so one pass reads
        them once. Nothing is done on a server
        too old for the protocol (NatsServerTooOldError).
        """
        self.api.check_server()
        started = time.perf_counter()
        before = self.api.mutations
        want = self._validate(desired, members)
        if observed is None:
            observed = await self.observe()
        contested_undrained = await self._retire_contested(observed)
        if observed.layout == "blocks":
            report = await self._apply_lanes(want, members, epoch, observed, started, before)
        else:
            report = await self._apply_shards(want, members, epoch, observed, started, before)
        if not observed.contested:
            return report
        return replace(
            report,
            contested=tuple(sorted(observed.contested)),
            undrained=(*contested_undrained, *report.undrained),
        )

    async def _retire_contested(self, observed: Observed) -> tuple[Undrained, ...]:
        """Pause, drain and delete every consumer ``observe`` found contested.

        Before anything else: they deliver shards an older consumer delivers too. One
        already gone (the reading was stale after all) counts as retired.
        """
        names = sorted(observed.contested)
        if not names:
            return ()
        stream = self.config.stream
        await asyncio.gather(*(self._pause_if_there(n) for n in names))
        drained = await asyncio.gather(
            *(self._drain(observed.contested[n].member_id or n, n) for n in names)
        )
        await asyncio.gather(*(self.api.delete_consumer(stream, n) for n in names))
        logger.info("retired %d contested consumer(s): %s", len(names), names)
        await self._step("contested")
        return tuple(u for u in drained if u is not None)

    async def _pause_if_there(self, name: str) -> None:
        try:
            await self.api.pause_consumer(self.config.stream, name, for_s=self.config.pause_s)
        except JetStreamApiError as e:
            if e.err_code != CONSUMER_NOT_FOUND:
                raise

    async def _apply_shards(
        self,
        want: Mapping[str, frozenset[int]],
        members: Mapping[str, MemberInfo],
        epoch: int,
        observed: Observed,
        started: float,
        before: int,
    ) -> Report:
        """``apply`` on a stream of the shards layout."""
        stream = self.config.stream
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

    async def _apply_lanes(
        self,
        want: Mapping[str, frozenset[int]],
        members: Mapping[str, MemberInfo],
        epoch: int,
        observed: Observed,
        started: float,
        before: int,
    ) -> Report:
        """``apply`` on a blocks stream (``lanehandoff``)."""
        blocks = want_blocks({m: tuple(sorted(s)) for m, s in want.items()}, config=self.config)
        done = await apply_lanes(
            self.api,
            self.config,
            observed,
            blocks,
            members=members,
            epoch=epoch,
            next_generation=self._next_generation,
            step=self._step,
        )
        report = Report(
            epoch=epoch,
            fenced=done.fenced,
            narrowed=done.narrowed,
            grown=done.grown,
            created=tuple(m for m, _ in done.created),
            created_names=tuple(n for _, n in done.created),
            retired=done.retired,
            undrained=done.undrained,
            resumed=done.resumed,
            consumer_updates=self.api.mutations - before,
            duration_s=time.perf_counter() - started,
        )
        if report.changed:
            logger.info(
                "epoch %d: fenced %d lane(s), retired %d, created %d; moved %d shard(s) in %.1f ms",
                epoch,
                len(done.fenced),
                len(done.retired),
                len(done.created),
                len(report.moved_shards),
                report.duration_s * 1000,
            )
        return report

    async def remove_group(self) -> None:
        """Delete every consumer of the group; the stream and its messages stay."""
        observed = await self.observe()
        every = [*observed.consumers.values(), *observed.contested.values()]
        for c in sorted(every, key=lambda c: c.name):
            await self.api.delete_consumer(self.config.stream, c.name)
