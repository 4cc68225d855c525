"""cancel_and_wait ends a task even when one cancel is swallowed (3.11's wait_for)."""

from __future__ import annotations

import asyncio

from coordshard_client.tasks import cancel_and_wait


async def _swallows_cancels(times: int, swallowed: list[int]) -> None:
    """Carries on after its first ``times`` cancels, as a loop around 3.11's wait_for
    does when the cancel meets the arrival it waited for."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if len(swallowed) == times:
                raise
            swallowed.append(1)


async def test_a_task_that_swallows_cancels_still_ends() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(_swallows_cancels(1, swallowed))
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every=0.01), 2)
    assert task.cancelled()
    assert len(swallowed) == 1


async def test_one_cancel_and_an_await_waits_for_ever_on_such_a_task() -> None:
    """The premise: what ``cancel(); await task`` does with it."""
    swallowed: list[int] = []
    task = asyncio.create_task(_swallows_cancels(1, swallowed))
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=0.2)
    assert not done
    await cancel_and_wait(task, every=0.01)
    assert task.cancelled()


async def test_results_and_errors_are_dropped_and_done_tasks_left_alone() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    done = asyncio.create_task(asyncio.sleep(0, result=7))
    failing = asyncio.create_task(fails())
    await asyncio.sleep(0.01)
    running = asyncio.create_task(asyncio.sleep(3600))
    await cancel_and_wait(done, failing, running)
    assert done.result() == 7
    assert isinstance(failing.exception(), RuntimeError)
    assert running.cancelled()


async def test_no_tasks_is_nothing_to_wait_for() -> None:
    await cancel_and_wait()


async def test_a_task_cleaning_up_gets_the_interval_before_the_next_cancel() -> None:
    finished: list[str] = []

    async def cleans_up() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.05)  # the clean-up a second cancel would cut
            finished.append("clean-up")

    task = asyncio.create_task(cleans_up())
    await asyncio.sleep(0)
    await cancel_and_wait(task, every=1.0)
    assert finished == ["clean-up"]
