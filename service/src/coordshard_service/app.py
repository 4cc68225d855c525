"""Wiring: settings → store, cache, metrics, NATS, worker, health server; then run.

Nothing here decides anything; it builds the parts, connects them and owns
their lifetimes (start in order, stop in reverse).

A NATS connection lost for good ends the worker with an error (exit 1), so its
supervisor (the kubelet, local mode) restarts it: nats-py gives a connection up
on a server's ``-ERR`` (a control line over the limit, an authorization
violation), and a reconnect the server refuses is retried for ever in vain.
Either way the worker would sit alive and deaf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client

from coordshard_client.credentials import refused
from coordshard_client.serverversion import announced_version, server_version_problem
from coordshard_client.tasks import cancel_and_wait
from coordshard_service.advisories import GiveUps
from coordshard_service.cache import Cache
from coordshard_service.errors import NatsServerTooOldError, NatsUnavailableError
from coordshard_service.health import HealthServer
from coordshard_service.metrics import Metrics
from coordshard_service.natsconnect import WorkerClient, connect_options
from coordshard_service.settings import ServiceSettings
from coordshard_service.store import Store
from coordshard_service.worker import Worker

__all__ = ["Services", "run"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """The running parts, handed to whoever embeds the worker (tests, local mode)."""

    worker: Worker
    health: HealthServer | None
    give_ups: GiveUps


CLOSED_FOR_GOOD = "NATS connection closed for good"
"""How the error that ends a worker whose connection is lost for good begins."""


async def _connect(
    settings: ServiceSettings,
    options: dict[str, Any],
    stop: asyncio.Event,
    *,
    lost: asyncio.Future[str],
) -> Client | None:
    """Connect, retrying an unreachable NATS for ever (pods may start before it), but
    giving up at once when the server refuses us, so a wrong Secret is a clear failure
    and not a silent retry loop. None if ``stop`` is set first.

    Once connected, ``lost`` gets the reason when the connection is gone for good:
    nats-py closed it, or the server refused a reconnect."""
    refusal: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def on_error(e: Exception) -> None:
        if refused(e):
            if not refusal.done():
                refusal.set_result(e)
            elif attempt.done() and not lost.done():
                lost.set_result(f"{CLOSED_FOR_GOOD}: the server refused a reconnect: {e!r}")
        logger.warning("NATS: %r", e)

    async def on_closed() -> None:
        if attempt.done() and not lost.done():
            lost.set_result(f"{CLOSED_FOR_GOOD}: {nc.last_error!r}")

    nc = WorkerClient()
    attempt = asyncio.ensure_future(
        nc.connect(
            servers=settings.servers,
            name=settings.member_id,
            max_reconnect_attempts=-1,
            ping_interval=10,
            error_cb=on_error,
            closed_cb=on_closed,
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
        attempt.result()
    except (OSError, nats.errors.Error) as e:
        raise NatsUnavailableError(f"connecting to {settings.nats_url}: {e!r}") from e
    finally:
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
    return nc


async def _check_server(nc: Client) -> None:
    """Close ``nc`` and raise NatsServerTooOldError if its server lacks a feature we use
    (a 2.9 server would hand us a consumer that filters nothing, and we would wait on)."""
    problem = server_version_problem(announced_version(nc.connected_server_version))
    if problem is not None:
        await nc.close()
        raise NatsServerTooOldError(problem)


PARENT_POLL_S = 0.5
"""Seconds between looks at whether our parent (``parent_pid``) still is."""


async def _stop_when_orphaned(parent: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once ``parent`` is no longer our parent (it died: we were re-parented)."""
    while not stop.is_set():
        if os.getppid() != parent:
            logger.warning("our parent (pid %d) is gone: stopping", parent)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PARENT_POLL_S):
                await stop.wait()


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

    orphaned = None
    if settings.parent_pid is not None:
        orphaned = asyncio.create_task(_stop_when_orphaned(settings.parent_pid, stop))
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
            alive=lambda: worker is None or worker.alive(),
        )
        await health.start()
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    try:
        nc = await _connect(settings, options, stop, lost=lost)
        if nc is not None:
            await _check_server(nc)
    except NatsServerTooOldError:
        nc = None
        raise
    finally:
        if nc is None:  # refused, too old, or stopped while connecting
            if health is not None:
                await health.stop()
            store.dispose()
            if orphaned is not None:
                orphaned.cancel()
    if nc is None:
        logger.info("worker %s stopped before NATS answered", settings.pod_name)
        return
    worker = Worker(settings, nc=nc, store=store, cache=cache, metrics=metrics)
    give_ups = GiveUps(
        nc, stream=settings.stream, member=settings.member_id, store=store, metrics=metrics
    )
    logger.info(
        "worker %s starting: stream=%s member=%s shards=%d loop=%s",
        settings.pod_name,
        settings.stream,
        settings.member_id,
        settings.shards,
        type(asyncio.get_running_loop()).__module__.split(".")[0],
    )
    if started is not None:
        started.set_result(Services(worker, health, give_ups))
    serving: asyncio.Future[None] | None = None
    try:
        await give_ups.start()
        serving = asyncio.ensure_future(worker.run(stop))
        either: set[asyncio.Future[Any]] = {serving, lost}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not serving.done():
            # Deaf for good: what it holds is unacked, delivered again after ack_wait.
            await cancel_and_wait(serving)
            raise NatsUnavailableError(lost.result())
        serving.result()
    finally:
        if serving is not None and not serving.done():  # run() itself was cancelled
            serving.cancel()
        await give_ups.stop()
        if health is not None:
            await health.stop()
        if lost.done() or nc.is_closed:
            # nats-py's close() may trip over the dead socket; nothing is left to flush.
            with contextlib.suppress(OSError, RuntimeError, nats.errors.Error):
                await nc.close()
        else:
            await nc.drain()
        store.dispose()
        if orphaned is not None:
            orphaned.cancel()
        logger.info("worker %s stopped", settings.pod_name)
