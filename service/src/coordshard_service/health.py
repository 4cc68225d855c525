"""``/healthz``, ``/readyz`` and ``/metrics`` over aiohttp.

Readiness is what the rebalancer watches to decide membership: ready while
the worker is connected to NATS, not shutting down, and the database answers.
It deliberately does NOT require the worker's consumer to exist: the engine
creates a consumer only for a member that has shards, and a pod becomes a
member only once it is ready, so "ready = bound" would never let a new pod
in. ``bound`` is reported alongside for people. Liveness only says the event
loop runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from coordshard_service.metrics import Metrics

__all__ = ["HealthServer"]

logger = logging.getLogger(__name__)


class HealthServer:
    """A small HTTP server; ``port`` holds the bound port after ``start``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        metrics: Metrics,
        connected: Callable[[], bool],
        db_ok: Callable[[], bool],
        bound: Callable[[], bool] = lambda: False,
    ) -> None:
        self.host = host
        self.port = port
        self._metrics = metrics
        self._connected = connected
        self._bound = bound
        self._db_ok = db_ok
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_view)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
        logger.info("health server on http://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        connected = self._connected()
        db = await asyncio.to_thread(self._db_ok)
        status = 200 if connected and db else 503
        body = {"connected": connected, "database": db, "bound": self._bound()}
        return web.json_response(body, status=status)

    async def _metrics_view(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
