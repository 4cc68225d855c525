"""A worker connects to a secured NATS with credentials and TLS from files.

In a pod these files are mounted Secrets. Two real servers: one admits only
an nkey user, one demands a client certificate (mutual TLS). The worker must
bind and serve with the right files, and fail fast and clearly without them.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from coordshard_client import CoordinateClient
from coordshard_operator.local.natsserver import NatsServer, start_server
from coordshard_operator.testing.certs import TestCa, server_tls
from coordshard_operator.testing.users import authorization, new_user_seed
from coordshard_service import app
from coordshard_service.errors import NatsUnavailableError
from coordshard_service.settings import ServiceSettings

from .conftest import (
    PREFIX,
    SHARDS,
    Provisioner,
    start_worker,
    worker_settings,
)

pytestmark = pytest.mark.integration


@dataclass
class Secured:
    """A server, the connect options that get into it, and the worker settings that do."""

    server: NatsServer
    connect: dict[str, Any]
    worker: dict[str, str]


@pytest.fixture(params=["nkey", "mutual-tls"])
async def secured(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Secured]:
    if request.param == "nkey":
        seed = new_user_seed()
        (tmp_path / "user.nk").write_bytes(seed)
        server = start_server(tmp_path / "nats", extra_config=authorization(seed))
        yield Secured(
            server,
            {"nkeys_seed_str": seed.decode()},
            {"nats_nkey_seed": str(tmp_path / "user.nk")},
        )
    else:
        ca = TestCa()
        client = ca.issue("worker")
        (tmp_path / "tls.crt").write_bytes(client.cert)
        (tmp_path / "tls.key").write_bytes(client.key)
        server = start_server(tmp_path / "nats", extra_config=server_tls(ca, tmp_path, verify=True))
        ctx = ssl.create_default_context(cadata=ca.cert.decode())
        ctx.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
        yield Secured(
            server,
            {"tls": ctx},
            {
                "nats_tls_ca": str(tmp_path / "ca.crt"),
                "nats_tls_cert": str(tmp_path / "tls.crt"),
                "nats_tls_key": str(tmp_path / "tls.key"),
            },
        )
    server.kill()


def member_settings(server: NatsServer, tmp_path: Path, **files: str) -> ServiceSettings:
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
        settings = member_settings(secured.server, tmp_path, **secured.worker)
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
