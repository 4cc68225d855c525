"""A worker that exits by itself is restarted, as a kubelet restarts a crashed container."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from coordshard_operator.local.system import LocalSystem, SystemOptions

from .test_chaos import more_successes, until

pytestmark = pytest.mark.integration


async def test_a_crashed_worker_comes_back_as_a_new_incarnation_and_gets_shards(
    tmp_path: Path,
) -> None:
    options = SystemOptions(workers=2, shards=8, systems=8, restart_crashed_s=0.5)
    async with LocalSystem(options, tmp_path) as system:
        assert system.group is not None
        await system.wait_converged()
        worker = system.workers["worker-0"]
        crashed = worker.member_id
        worker.signal(signal.SIGABRT)  # a crash, not a kill by chaos nor a stop
        await until(lambda: crashed not in system.group.assignment, what="the crash handled")
        await until(lambda: worker.generation == 2 and worker.state.ready, what="restarted")
        await system.wait_converged()
        assert worker.member_id != crashed and system.group.assignment.get(worker.member_id)
        assert worker.crashes == 0  # ready again: the back-off starts over
        assert system.kills == []  # not counted as a chaos kill


async def test_a_killed_or_stopped_worker_is_not_restarted_by_the_crash_rule(
    tmp_path: Path,
) -> None:
    options = SystemOptions(workers=2, shards=8, systems=8, restart_crashed_s=0.2)
    async with LocalSystem(options, tmp_path) as system:
        assert system.group is not None
        await system.wait_converged()
        system.kill("worker-0")  # chaos restarts its victims itself, after its own delay
        victim = system.workers["worker-0"]
        await until(lambda: not victim.running, what="the kill")
        await system.workers["worker-1"].stop()
        await until(lambda: system.group is not None and not system.group.assignment, what="none")
        await asyncio.sleep(1.0)  # 5x the restart delay: proving a negative needs a window
        assert victim.generation == 1 and system.workers["worker-1"].generation == 1


async def test_a_worker_restarted_in_place_keeps_its_consumer_and_shards_and_loses_nothing(
    tmp_path: Path,
) -> None:
    # A container restarted inside its pod: the same pod UID, so the same consumer,
    # and within the grace period its shards stay where they are.
    options = SystemOptions(workers=2, shards=8, systems=8, grace_s=30.0)
    async with LocalSystem(options, tmp_path) as system:
        assert system.group is not None
        await system.wait_converged()
        worker = system.workers["worker-0"]
        consumer = worker.member_id
        shards = list(system.group.assignment[consumer])
        load = system.start_load(rate=150.0)
        await more_successes(load, 100)
        system.kill("worker-0")
        await until(lambda: not worker.running, what="the kill")
        await worker.start(in_place=True)
        await until(lambda: worker.state.ready, what="ready again")
        await more_successes(load, 100)
        assert (worker.member_id, worker.generation, worker.restarts) == (consumer, 1, 1)
        assert list(system.group.assignment[consumer]) == shards
        summary = await system.finish()
        assert summary["lost"] == 0 and summary["duplicate_effects"] == 0, summary
        assert summary["succeeded"] > 0


async def test_a_kill_9_the_supervisor_did_not_send_is_restarted(tmp_path: Path) -> None:
    # The OOM killer or a user's kill -9: not chaos, so nobody else restarts it.
    options = SystemOptions(workers=2, shards=8, systems=8, restart_crashed_s=0.2)
    async with LocalSystem(options, tmp_path) as system:
        assert system.group is not None
        await system.wait_converged()
        worker = system.workers["worker-1"]
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
        await until(lambda: worker.generation == 2 and worker.state.ready, what="restarted")
        await system.wait_converged()
        assert system.kills == []
