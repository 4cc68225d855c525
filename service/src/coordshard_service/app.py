"""Wiring: settings → store, cache, metrics, NATS, worker, health server; then run.

Nothing here decides anything; it builds the parts, connects them and owns
their lifetimes (start in order, stop in reverse).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import nats
import nats.errors

from coordshard_service.cache import Cache
from coordshard_service.consuming import Worker
from coordshard_service.errors import NatsUnavailableError
from coordshard_service.health import HealthServer
from coordshard_service.metrics import Metrics
from coordshard_service.settings import ServiceSettings
from coordshard_service.store import Store

__all__ = ["Services", "run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """The running parts, handed to whoever embeds the worker (tests, local mode)."""

    worker: Worker
    health: HealthServer | None


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

    store = Store(
        settings.database_url,
        idle_transaction_timeout=settings.store_idle_transaction_timeout,
    )
    await asyncio.to_thread(store.migrate)
    metrics = Metrics()
    cache = Cache(settings.cache_size)
    try:
        nc = await nats.connect(
            servers=settings.servers,
            name=settings.consumer,
            max_reconnect_attempts=-1,
            ping_interval=10,
        )
    except (OSError, nats.errors.Error) as e:
        raise NatsUnavailableError(f"connecting to {settings.nats_url}: {e!r}") from e
    worker = Worker(settings, nc=nc, store=store, cache=cache, metrics=metrics)
    health = None
    if settings.http_enabled:
        health = HealthServer(
            host=settings.http_host,
            port=settings.http_port,
            metrics=metrics,
            status=lambda: {**worker.status(), "nats": nc.is_connected and not stop.is_set()},
            db_ok=store.ping,
        )
        await health.start()
    logger.info(
        "worker %s starting: stream=%s consumer=%s shards=%d",
        settings.pod_name,
        settings.stream,
        settings.consumer,
        settings.shards,
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
