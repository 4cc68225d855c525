"""Wiring: settings → store, cache, metrics, NATS, worker, health server; then run.

Nothing here decides anything; it builds the parts, connects them and owns
their lifetimes (start in order, stop in reverse).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from coordshard_service.cache import Cache
from coordshard_service.consuming import Worker
from coordshard_service.errors import NatsUnavailableError
from coordshard_service.health import HealthServer
from coordshard_service.metrics import Metrics
from coordshard_service.natsconnect import connect_options
from coordshard_service.settings import ServiceSettings
from coordshard_service.store import Store

__all__ = ["Services", "run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """The running parts, handed to whoever embeds the worker (tests, local mode)."""

    worker: Worker
    health: HealthServer | None


def refused(e: BaseException) -> bool:
    """A connect error no retry fixes: credentials or a certificate the server refuses
    (it answers ``-ERR 'Authorization Violation'``, which nats-py raises as a plain
    ``Error`` while connecting), or a server certificate we do not trust."""
    if isinstance(e, nats.errors.AuthorizationError | ssl.SSLError):
        return True
    return isinstance(e, nats.errors.Error) and "authorization violation" in str(e).lower()


async def _connect(
    settings: ServiceSettings, options: dict[str, Any], stop: asyncio.Event
) -> Client | None:
    """Connect, retrying an unreachable NATS for ever (pods may start before it), but
    giving up at once when the server refuses us, so a wrong Secret is a clear failure
    and not a silent retry loop. None if ``stop`` is set first."""
    refusal: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def on_error(e: Exception) -> None:
        # Once connected nobody waits on ``refusal``: a later refusal is only logged.
        if refused(e) and not refusal.done():
            refusal.set_result(e)
        logger.warning("NATS: %r", e)

    attempt = asyncio.ensure_future(
        nats.connect(
            servers=settings.servers,
            name=settings.consumer,
            max_reconnect_attempts=-1,
            ping_interval=10,
            error_cb=on_error,
            **options,
        )
    )
    try:
        stopped = asyncio.ensure_future(stop.wait())
        waiting: set[asyncio.Future[Any]] = {attempt, refusal, stopped}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not attempt.done() and stop.is_set():
            return None
        if refusal.done():
            raise NatsUnavailableError(
                f"connecting to {settings.nats_url}: refused: {refusal.result()!r}"
            )
        nc = attempt.result()
    except (OSError, nats.errors.Error) as e:
        raise NatsUnavailableError(f"connecting to {settings.nats_url}: {e!r}") from e
    finally:
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
    return nc


async def run(
    settings: ServiceSettings,
    *,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    started: asyncio.Future[Services] | None = None,
) -> None:
    """Run one worker until SIGTERM/SIGINT (or ``stop``); in-flight work is acked first.

    ``started`` (if given) receives the parts once they are wired, which lets an
    embedding program (or a test) watch ``worker.bound`` and its metrics.
    """
    stop = stop or asyncio.Event()
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    options = connect_options(settings)  # a bad credentials setting fails before anything starts
    store = Store(
        settings.database_url,
        group=settings.group,
        idle_transaction_timeout=settings.store_idle_transaction_timeout,
    )
    await asyncio.to_thread(store.migrate)
    metrics = Metrics()
    cache = Cache(settings.cache_size)
    nc: Client | None = None
    worker: Worker | None = None

    def status() -> dict[str, object]:
        if nc is None or worker is None:
            return {"state": "connecting", "nats": False}
        return {**worker.status(), "nats": nc.is_connected and not stop.is_set()}

    health = None
    if settings.http_enabled:
        # Up before NATS is: while an unreachable NATS is retried, /healthz answers
        # (no liveness restarts) and /readyz says "connecting".
        health = HealthServer(
            host=settings.http_host,
            port=settings.http_port,
            metrics=metrics,
            status=status,
            db_ok=store.ping,
        )
        await health.start()
    try:
        nc = await _connect(settings, options, stop)
    finally:
        if nc is None:  # refused, or stopped while connecting
            if health is not None:
                await health.stop()
            store.dispose()
    if nc is None:
        logger.info("worker %s stopped before NATS answered", settings.pod_name)
        return
    worker = Worker(settings, nc=nc, store=store, cache=cache, metrics=metrics)
    logger.info(
        "worker %s starting: stream=%s consumer=%s shards=%d loop=%s",
        settings.pod_name,
        settings.stream,
        settings.consumer,
        settings.shards,
        type(asyncio.get_running_loop()).__module__.split(".")[0],
    )
    if started is not None:
        started.set_result(Services(worker, health))
    try:
        await worker.run(stop)
    finally:
        if health is not None:
            await health.stop()
        await nc.drain()
        store.dispose()
        logger.info("worker %s stopped", settings.pod_name)
