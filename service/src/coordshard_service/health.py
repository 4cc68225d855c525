"""``/healthz``, ``/readyz`` and ``/metrics`` over aiohttp.

Readiness is what the operator watches: ready while the database answers,
NATS is connected and the worker is bound to its consumers (lanes) *or waiting
to be given one*. A worker with no shards has no consumer (the engine deletes
consumers of members without shards), so requiring a consumer for readiness
would keep a new pod from ever being given shards. ``/readyz`` reports the
state and the shards in its body.

Both follow the serving loops themselves (``progress.Progress``, one per lane):
any lane stuck for longer than ``stall_timeout`` — no batch settled while its
consumer has messages for us, no answer from NATS about its consumer, or its
loop not coming round — makes the worker not ready (the body's ``stuck`` says
why, naming the lane), so the rebalancer's grace period moves its shards;
stuck for twice that, ``/healthz`` fails too, so a liveness probe restarts the
process.
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

READY_STATES = ("waiting", "bound")


class HealthServer:
    """A small HTTP server; ``port`` holds the bound port after ``start``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        metrics: Metrics,
        status: Callable[[], dict[str, object]],
        db_ok: Callable[[], bool],
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.host = host
        self.port = port
        self._metrics = metrics
        self._status = status
        self._db_ok = db_ok
        self._alive = alive
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
        if self._alive():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "stuck", **self._status()}, status=503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        body = dict(self._status())
        body["database"] = await asyncio.to_thread(self._db_ok)
        ready = (
            body["database"]
            and body.get("nats")
            and body.get("state") in READY_STATES
            and "stuck" not in body
        )
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics_view(self, _request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
