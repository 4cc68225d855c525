"""A worker whose NATS connection is lost for good exits non-zero, to be restarted.

nats-py gives a connection up for good on a server's ``-ERR`` (a control line
over the limit, as a 5,000-byte reply subject once caused), and retries for
ever a reconnect the server refuses. A worker left with either sat alive and
deaf, and nothing restarted it.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import nats
import pytest

from coordshard_client import CoordinateClient
from coordshard_operator.local.natsserver import NatsServer, start_server
from coordshard_operator.testing.users import authorization, new_user_seed
from coordshard_service.errors import NatsUnavailableError

from .conftest import (
    PREFIX,
    SHARDS,
    Provisioner,
    spawn_worker,
    start_worker,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.integration

EXIT_BOUND = 10.0
"""Seconds within which the worker must exit once its connection is closed."""


async def _exited(process: subprocess.Popen[bytes], *, timeout: float) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while process.poll() is None:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"worker still running {timeout}s after its connection closed")
        await asyncio.sleep(0.05)
    return process.returncode


async def test_a_worker_whose_connection_nats_py_closed_stops_with_an_error(
    nats_server: NatsServer, provisioner: Provisioner, tmp_path: Path
) -> None:
    await provisioner.assign(member="w", incarnation="1", shards=list(range(SHARDS)))
    settings = worker_settings(
        nats_server,
        stream=provisioner.stream,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        member="w",
        incarnation="1",
    )
    running = await start_worker(settings)
    try:
        await wait_until(lambda: running.worker.bound)
        # A PUB control line over the server's 4096 bytes: nats-server answers
        # -ERR 'Maximum Control Line Exceeded' and closes; nats-py gives up for good.
        await running.worker.nc.publish("_INBOX." + "x" * 5000, b"")
        with pytest.raises(NatsUnavailableError, match="NATS connection closed for good"):
            await asyncio.wait_for(running.task, EXIT_BOUND)
    finally:
        if not running.task.done():
            await running.shutdown()


async def test_a_worker_whose_reconnect_is_refused_exits_non_zero(tmp_path: Path) -> None:
    """The server stops admitting the worker's user (a credentials rotation, reloaded
    by SIGHUP): it drops the connection and refuses every reconnect."""
    worker_seed, admin_seed = new_user_seed(), new_user_seed()
    (tmp_path / "worker.nk").write_bytes(worker_seed)
    server = start_server(tmp_path / "nats", extra_config=authorization(worker_seed, admin_seed))
    nc = await nats.connect(server.url, nkeys_seed_str=admin_seed.decode())
    log = tmp_path / "worker.log"
    process = None
    try:
        provisioner = Provisioner(nc.jetstream(), "CLOSED")
        await provisioner.create_stream()
        await provisioner.assign(member="w", incarnation="1", shards=list(range(SHARDS)))
        process = spawn_worker(
            server,
            stream="CLOSED",
            database_url=f"sqlite:///{tmp_path / 'store.db'}",
            member="w",
            log=log,
            extra=["--nats-nkey-seed", str(tmp_path / "worker.nk")],
        )
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream="CLOSED", timeout=20
        ) as client:
            await client.create_system(system_id="s1", name="served", dimension=2)

        server.extra_config = authorization(admin_seed)  # the worker's user is gone
        server.reload()

        code = await _exited(process, timeout=EXIT_BOUND)
        assert code != 0
        text = log.read_text()
        assert "worker failed: NATS connection closed for good" in text
        assert "Traceback" not in text
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        await nc.close()
        server.kill()
