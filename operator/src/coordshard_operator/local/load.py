"""Drive a realistic command mix through the SDK and keep a ledger of what is certain.

Each simulated system has its own coroutine that sends one command at a time
(create the system, create its points, then mostly relative moves with some
reads), so the state its commands imply is exact: a move applied twice, or
never, shows up later as a wrong version. Across systems, many commands are in
flight at once; a token bucket holds the total to ``rate`` per second.

A command whose outcome does not arrive in time is retried with the *same*
idempotency key until it answers or the retry budget runs out; only then is it
counted ``unknown`` and its point excluded from the final check.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coordshard_client import errors as sdk_errors
from coordshard_client.messages import Bounds, Translate
from coordshard_client.publisher import CoordinateClient

__all__ = ["ExpectedPoint", "Ledger", "LoadGenerator"]

T = TypeVar("T")

RETRY_BACKOFF_S = 0.05
"""First pause before retrying a command NATS refused outright; doubles up to 1 s."""
BOUND = 1_000_000.0
"""Systems are boxes of ±BOUND; moves stay well inside, except deliberate ones."""


@dataclass
class ExpectedPoint:
    """What the acknowledged commands imply for one point."""

    coordinates: list[float]
    version: int
    uncertain: bool = False
    """A command on it ended unknown: its true state cannot be derived."""


@dataclass
class Ledger:
    """Counts and the implied state; independent of anything the workers report."""

    published: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    unknown: int = 0
    retries: int = 0
    stale_reads: int = 0
    systems: set[str] = field(default_factory=set)
    points: dict[tuple[str, str], ExpectedPoint] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    recent: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=20_000))
    """(monotonic end time, latency ms) of the latest outcomes, for the live view."""
    in_flight: int = 0


class _TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = 0.0
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self) -> None:
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)  # pacing, not synchronisation


class LoadGenerator:
    """Sends commands for ``systems`` systems at ``rate`` per second in total."""

    def __init__(
        self,
        client: CoordinateClient,
        *,
        rate: float,
        systems: int = 64,
        points_per_system: int = 6,
        seed: int = 0,
        retry_for: float = 30.0,
        prefix: str = "sys",
    ) -> None:
        self.client = client
        self.rate = rate
        self.n_systems = systems
        self.points_per_system = points_per_system
        self.rng = random.Random(seed)
        self.retry_for = retry_for
        self.prefix = prefix
        self.ledger = Ledger()
        self._bucket = _TokenBucket(rate)

    async def run(self, stop: asyncio.Event) -> Ledger:
        """Run until ``stop`` is set; then let every system finish its command."""
        seeds = [self.rng.randrange(2**32) for _ in range(self.n_systems)]
        await asyncio.gather(
            *(
                self._system_loop(f"{self.prefix}-{i}", random.Random(seeds[i]), stop)
                for i in range(self.n_systems)
            )
        )
        return self.ledger

    async def _call(self, op: str, fn: Callable[..., Awaitable[T]], **kwargs: Any) -> T | None:
        """One command with retries under one idempotency key; None if refused or unknown.

        Raises the SDK's refusal errors to the caller after counting them.
        """
        led = self.ledger
        key = uuid.uuid4().hex
        deadline = time.monotonic() + self.retry_for
        led.published += 1
        led.in_flight += 1
        start = time.monotonic()
        backoff = RETRY_BACKOFF_S
        try:
            while True:
                try:
                    result = await fn(idempotency_key=key, **kwargs)
                except sdk_errors.CoordinateTimeoutError:
                    # The wait itself was the back-off: retry at once, same key.
                    if time.monotonic() > deadline:
                        led.unknown += 1
                        return None
                    led.retries += 1
                    continue
                except sdk_errors.CoordinateUnavailableError:
                    # Refused at once (no responders, a stream without a leader):
                    # back off exponentially instead of spinning.
                    if time.monotonic() > deadline:
                        led.unknown += 1
                        return None
                    led.retries += 1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                except sdk_errors.CoordinateError as e:
                    led.failed[type(e).__name__] += 1
                    raise
                led.succeeded += 1
                return result
        finally:
            led.in_flight -= 1
            end = time.monotonic()
            led.latencies_ms.append((end - start) * 1000)
            led.recent.append((end, (end - start) * 1000))

    async def _system_loop(self, system_id: str, rng: random.Random, stop: asyncio.Event) -> None:
        led = self.ledger
        await self._bucket.take()
        bounds = Bounds(low=(-BOUND, -BOUND), high=(BOUND, BOUND))
        try:
            created = await self._call(
                "create-system",
                self.client.create_system,
                system_id=system_id,
                name=f"system {system_id}",
                dimension=2,
                bounds=bounds,
            )
        except sdk_errors.CoordinateError:
            return
        if created is None:
            return
        led.systems.add(system_id)
        points: list[str] = []
        while not stop.is_set():
            await self._bucket.take()
            if stop.is_set():
                break
            roll = rng.random()
            try:
                if len(points) < self.points_per_system and (roll < 0.3 or not points):
                    await self._create_point(system_id, f"p{len(points)}", rng, points)
                elif roll < 0.8:
                    await self._move(system_id, rng.choice(points), rng)
                elif roll < 0.82:
                    await self._move(system_id, rng.choice(points), rng, outside=True)
                else:
                    await self._read(system_id, rng.choice(points))
            except sdk_errors.CoordinateError:
                continue

    async def _create_point(
        self, system_id: str, point_id: str, rng: random.Random, points: list[str]
    ) -> None:
        coords = [float(rng.randint(-1000, 1000)), float(rng.randint(-1000, 1000))]
        result = await self._call(
            "create-point",
            self.client.create_point,
            system_id=system_id,
            point_id=point_id,
            coordinates=coords,
        )
        points.append(point_id)
        self.ledger.points[(system_id, point_id)] = ExpectedPoint(
            coords, 1, uncertain=result is None
        )

    async def _move(
        self, system_id: str, point_id: str, rng: random.Random, *, outside: bool = False
    ) -> None:
        expected = self.ledger.points[(system_id, point_id)]
        # Integer deltas keep float sums exact, so a double-applied move is visible.
        delta = (float(rng.randint(-50, 50)), float(rng.randint(-50, 50)))
        if outside:
            delta = (3 * BOUND, 0.0)
        try:
            result = await self._call(
                "move-point",
                self.client.move_point,
                system_id=system_id,
                point_id=point_id,
                moves=[Translate(delta=delta)],
            )
        except sdk_errors.OutOfBoundsError:
            return  # refused as a whole: no change expected
        if result is None:
            expected.uncertain = True
            return
        expected.coordinates = [c + d for c, d in zip(expected.coordinates, delta, strict=True)]
        expected.version += 1

    async def _read(self, system_id: str, point_id: str) -> None:
        expected = self.ledger.points[(system_id, point_id)]
        point = await self._call(
            "get-point", _no_key(self.client.get_point), system_id=system_id, point_id=point_id
        )
        if point is None or expected.uncertain:
            return
        if point.version != expected.version or list(point.coordinates) != expected.coordinates:
            self.ledger.stale_reads += 1


def _no_key(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Queries take no idempotency key: drop it."""

    async def call(*, idempotency_key: str, **kwargs: Any) -> T:
        return await fn(**kwargs)

    return call
