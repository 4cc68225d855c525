"""A worker connects to a secured NATS with credentials and TLS from files.

In a pod these files are mounted Secrets. Real servers (the ``secured``
fixture): one admits only an nkey user, one speaks TLS only, one demands a
client certificate too (mutual TLS). The worker must
bind and serve with the right files, and fail fast and clearly without them.
"""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from coordshard_client import CoordinateClient
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service import app
from coordshard_service.errors import NatsUnavailableError
from coordshard_service.settings import ServiceSettings

from .conftest import (
    PREFIX,
    SHARDS,
    Provisioner,
    Secured,
    start_worker,
    worker_settings,
)

pytestmark = pytest.mark.integration


def member_settings(server: NatsServer, tmp_path: Path, **files: str) -> ServiceSettings:
    """A worker's settings; ``files`` are its ``nats_*`` credentials and TLS settings."""
    return worker_settings(
        server,
        stream="SECURED",
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        member="w",
        incarnation="1",
        **files,
    )


async def test_a_worker_with_the_files_binds_and_serves(secured: Secured, tmp_path: Path) -> None:
    nc = await nats.connect(secured.server.url, max_reconnect_attempts=1, **secured.connect)
    try:
        provisioner = Provisioner(nc.jetstream(), "SECURED")
        await provisioner.create_stream()
        await provisioner.assign(member="w", incarnation="1", shards=list(range(SHARDS)))
        settings = member_settings(secured.server, tmp_path, **secured.worker_files)
        running = await start_worker(settings)
        try:
            async with CoordinateClient(
                nc, shards=SHARDS, prefix=PREFIX, stream="SECURED", timeout=10
            ) as client:
                system = await client.create_system(system_id="s1", name="secured", dimension=2)
            assert system.system_id == "s1" and running.worker.bound
        finally:
            await running.shutdown()
    finally:
        await nc.close()


async def test_a_worker_without_them_fails_fast_and_says_why(
    secured: Secured, tmp_path: Path
) -> None:
    settings = member_settings(secured.server, tmp_path)  # no credentials, no certificate
    with pytest.raises(NatsUnavailableError, match="connecting to nats://"):
        await app.run(settings, handle_signals=False)
