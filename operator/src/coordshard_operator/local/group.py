"""The local rebalancer: worker processes in, the planner and engine applied.

It is level-based like the operator: on every change of a worker's state, and
at least once a second, it observes the consumers in NATS, plans from them
and the live members, and lets the engine do the difference. An engine that
crashed mid-handoff is finished by the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from coordshard_client.naming import MemberId
from coordshard_operator.local.membership import held, members, next_change
from coordshard_operator.local.workers import WorkerProcess
from coordshard_operator.rebalancer.errors import CoordshardError
from coordshard_operator.rebalancer.handoff import Engine, MemberInfo
from coordshard_operator.rebalancer.passes import run_pass

__all__ = ["Change", "LocalGroup"]

logger = logging.getLogger(__name__)

RESYNC_S = 1.0
"""Longest pause between two passes when nothing changes, seconds."""


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change of the assignment."""

    at: float
    """Monotonic time the pass started."""
    epoch: int
    reason: str
    moved: int
    fenced: int
    duration_ms: float
    """From the start of the pass to the engine's last step."""


class LocalGroup:
    """Keeps one group's consumers matched to the live worker processes."""

    def __init__(
        self,
        engine: Engine,
        workers: Mapping[str, WorkerProcess],
        *,
        shards: int,
        group: str,
        grace: float,
        wake: asyncio.Event,
    ) -> None:
        self.engine = engine
        self.workers = workers
        self.shards = shards
        self.group = group
        self.grace = grace
        self.wake = wake
        self.epoch = 0
        self.rebalances: list[Change] = []
        self.assignment: dict[str, tuple[int, ...]] = {}
        self.live: list[str] = []
        self.errors = 0

    def _member_infos(self, live: list[str]) -> dict[str, MemberInfo]:
        by_id = {w.member_id: w for w in self.workers.values()}
        return {
            m: MemberInfo(id=MemberId(m), name=by_id[m].name, incarnation=by_id[m].incarnation)
            for m in live
        }

    async def pass_once(self) -> Change | None:
        """One observe → plan → apply pass; returns what changed, if anything."""
        started = time.monotonic()
        states = [w.state for w in self.workers.values() if w.member_id]
        live = members(states, now=started, grace=self.grace)
        self.live = live
        done = await run_pass(
            self.engine,
            shards=self.shards,
            members=self._member_infos(live),
            epoch=self.epoch + 1,
            hold=held(states, now=started, grace=self.grace),
        )
        before = set(done.observed.assignment)
        self.assignment = dict(done.plan.balance.assignment)
        report = done.report
        if report is None or not report.changed:
            return None
        self.epoch += 1
        names = {w.member_id: w.name for w in self.workers.values()}
        lost = sorted(names.get(m, m) for m in before - set(live))
        joined = sorted(names.get(m, m) for m in set(live) - before)
        reason = "; ".join(
            part
            for part in (
                f"lost {', '.join(lost)}" if lost else "",
                f"joined {', '.join(joined)}" if joined else "",
            )
            if part
        )
        change = Change(
            at=started,
            epoch=self.epoch,
            reason=reason or "resync",
            moved=len(report.moved_shards),
            fenced=len(report.fenced),
            duration_ms=(time.monotonic() - started) * 1000,
        )
        self.rebalances.append(change)
        logger.info(
            "rebalanced epoch=%d reason=%r moved=%d in %.1f ms",
            change.epoch,
            change.reason,
            change.moved,
            change.duration_ms,
        )
        return change

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile on every worker change and at least every RESYNC_S, until ``stop``."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.pass_once()
            except CoordshardError as e:
                # NATS trouble (a restart, an election) must not end local mode: the
                # next pass resumes where this one stopped.
                self.errors += 1
                logger.warning("reconcile failed, retrying: %s", e)
            now = time.monotonic()
            due = next_change(
                [w.state for w in self.workers.values() if w.member_id], now=now, grace=self.grace
            )
            wait = RESYNC_S if due is None else max(0.0, min(RESYNC_S, due - now + 0.001))
            waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
