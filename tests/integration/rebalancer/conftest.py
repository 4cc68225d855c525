"""Fixtures for the engine tests: ``fleet`` stops every simulated worker and
publisher a test started, whether the test passed or failed.

Stopping them only at a test's end left them running when an assertion
failed; the event loop's teardown then sat in their cancellation (nats-py can
swallow one on Python 3.11) and one run hung for 20 minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

import pytest

from coordshard_operator.benchmarks.workload import Publisher, SimWorker

STOP_TIMEOUT_S = 10.0
"""How long one worker or publisher may take to stop, seconds."""

_Started = TypeVar("_Started", SimWorker, Publisher)


class Fleet:
    """What a test started; ``stop_all`` stops publishers first, then workers."""

    def __init__(self) -> None:
        self._started: list[SimWorker | Publisher] = []

    def add(self, started: _Started) -> _Started:
        """Register a started worker or publisher; returns it."""
        self._started.append(started)
        return started

    async def stop_all(self) -> None:
        order = sorted(self._started, key=lambda s: not isinstance(s, Publisher))
        hung = []
        for started in order:
            try:
                await asyncio.wait_for(started.stop(), STOP_TIMEOUT_S)
            except TimeoutError:
                hung.append(started)
        self._started.clear()
        assert not hung, f"would not stop within {STOP_TIMEOUT_S} s: {hung}"


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    """Ask for it after the client, so that its members stop before the client closes."""
    started = Fleet()
    try:
        yield started
    finally:
        await started.stop_all()
