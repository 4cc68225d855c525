"""Fixtures for the Coordinate Service tests: a store per database, a stream and
consumers provisioned the way the rebalancing engine does, and workers run
in-process (fast) or as subprocesses (for kill -9).

``Provisioner`` stands in for the engine: a WorkQueue stream over the shards'
own subjects (``stream_subjects``) and one durable pull consumer per worker incarnation, explicit
ack, ``filter_subjects`` = the shards it owns. Workers never create consumers.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig

from coordshard_client import CoordinateClient, Translate, shard_filter
from coordshard_client.messages import Command
from coordshard_client.naming import member_id
from coordshard_client.subjects import shard_of, stream_subjects
from coordshard_operator.benchmarks.scratchdb import scratch_database
from coordshard_operator.local.natsserver import NatsServer, start_server
from coordshard_operator.testing.certs import TestCa, server_tls
from coordshard_operator.testing.cluster import wait_until as poll
from coordshard_operator.testing.users import authorization, new_user_seed
from coordshard_service import app, consumerstate
from coordshard_service.commands import Incoming
from coordshard_service.health import HealthServer
from coordshard_service.settings import ServiceSettings
from coordshard_service.worker import Worker

from ..conftest import missing_service

PREFIX = "coordinate.cmd"
SHARDS = 8
GROUP = "coordinate"
STREAM_KEY = "TEST@2000-01-01T00:00:00.000000Z"
"""A stream instance key for store tests that fetch from no stream."""
PG_ADMIN = os.environ.get("COORDSHARD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def delivery(system_id: str, seq: int, command: Command, **fields: Any) -> Incoming:
    """``command`` as the worker decodes it from stream sequence ``seq``: on ``system_id``'s
    shard of ``SHARDS``, keyed ``k-<seq>``, no reply; ``fields``: other ``Incoming`` fields."""
    shard = shard_of(system_id, SHARDS)
    return Incoming(
        stream_seq=seq,
        subject=f"{PREFIX}.{shard}.{system_id}.{command.op}",
        shard=shard,
        key=f"k-{seq}",
        reply=None,
        command=command,
        **fields,
    )


def require_postgres() -> None:
    """Skip (fail under ``CI=true``) unless PostgreSQL answers at ``PG_ADMIN``."""
    try:
        with psycopg.connect(PG_ADMIN, connect_timeout=2):
            return
    except psycopg.Error as e:
        missing_service(
            f"PostgreSQL not reachable at {PG_ADMIN}: {e}".strip(),
            how="as root, `bash scripts/services.sh` starts one; "
            "or point COORDSHARD_TEST_POSTGRES at yours",
        )


async def stream_key(js: JetStreamContext, stream: str) -> str:
    """The key of a stream's current instance, as a worker bound to it has it."""
    return (await consumerstate.stream_instance(js, stream)).key


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    require_postgres()
    admin = PG_ADMIN.replace("postgresql://", "postgresql+psycopg://", 1)
    with scratch_database(admin, prefix="cs_") as url:
        yield url


@dataclass
class Secured:
    """A secured server, the connect options that get into it, and the credentials and
    TLS files that do (as the SDK's ``connect()`` keywords; ``worker_files`` as the
    worker's ``nats_*`` settings)."""

    server: NatsServer
    connect: dict[str, Any]
    files: dict[str, str]

    @property
    def worker_files(self) -> dict[str, str]:
        return {f"nats_{k}": v for k, v in self.files.items()}


@pytest.fixture(params=["nkey", "tls", "mutual-tls"])
async def secured(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Secured]:
    """A real nats-server that admits only an nkey user, or speaks only TLS (a CA and
    server certificate made here), or demands a client certificate too."""
    if request.param == "nkey":
        seed = new_user_seed()
        (tmp_path / "user.nk").write_bytes(seed)
        server = start_server(tmp_path / "nats", extra_config=authorization(seed))
        yield Secured(
            server, {"nkeys_seed_str": seed.decode()}, {"nkey_seed": str(tmp_path / "user.nk")}
        )
    else:
        mutual = request.param == "mutual-tls"
        ca = TestCa()
        tls = server_tls(ca, tmp_path, verify=mutual)  # writes ca.crt
        server = start_server(tmp_path / "nats", extra_config=tls)
        ctx = ssl.create_default_context(cadata=ca.cert.decode())
        files = {"tls_ca": str(tmp_path / "ca.crt")}
        if mutual:
            client = ca.issue("worker")
            (tmp_path / "tls.crt").write_bytes(client.cert)
            (tmp_path / "tls.key").write_bytes(client.key)
            ctx.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
            files |= {"tls_cert": str(tmp_path / "tls.crt"), "tls_key": str(tmp_path / "tls.key")}
        yield Secured(server, {"tls": ctx}, files)
    server.kill()


@dataclass
class Provisioner:
    """Does what the engine does for these tests: the stream and per-worker consumers."""

    js: JetStreamContext
    stream: str
    consumers: dict[str, str] = field(default_factory=dict)
    prefix: str = PREFIX
    group: str = GROUP
    shards: int = SHARDS

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            subjects=stream_subjects(self.shards, prefix=self.prefix),
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=120.0,
        )

    async def create_stream(self) -> None:
        await self.js.add_stream(self.stream_config())

    async def assign(
        self,
        *,
        member: str,
        incarnation: str,
        shards: list[int],
        ack_wait: float = 30.0,
        max_deliver: int = -1,
    ) -> str:
        """Create or rewrite a member's consumer to own exactly ``shards``."""
        name = member_id(group=self.group, member=member, incarnation=incarnation)
        filters = [shard_filter(s, prefix=self.prefix) for s in shards]
        await self.put_consumer(name, filters, ack_wait=ack_wait, max_deliver=max_deliver)
        self.consumers[member] = name
        return name

    async def put_consumer(
        self, name: str, filters: list[str], *, ack_wait: float = 30.0, max_deliver: int = -1
    ) -> None:
        """Create (or rewrite) the durable pull consumer ``name`` over ``filters``, deliver
        all, explicit ack: the kind the engine makes."""
        await self.js.add_consumer(
            self.stream,
            ConsumerConfig(
                durable_name=name,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                filter_subjects=filters or None,
                ack_wait=ack_wait,
                max_deliver=max_deliver,
                max_ack_pending=10_000,
            ),
        )

    async def delete(self, name: str) -> None:
        await self.js.delete_consumer(self.stream, name)


@pytest.fixture
async def provisioner(js: JetStreamContext, stream_name: str) -> Provisioner:
    p = Provisioner(js, stream_name)
    await p.create_stream()
    return p


def worker_settings(
    server: NatsServer,
    *,
    stream: str,
    database_url: str,
    member: str,
    incarnation: str,
    group: str = GROUP,
    prefix: str = PREFIX,
    shards: int = SHARDS,
    **extra: object,
) -> ServiceSettings:
    return ServiceSettings(
        nats_url=server.url,
        stream=stream,
        group=group,
        prefix=prefix,
        shards=shards,
        pod_name=member,
        pod_uid=incarnation,
        database_url=database_url,
        http_enabled=False,
        fetch_timeout=0.2,
        bind_poll=0.05,
        **extra,  # type: ignore[arg-type]
    )


@dataclass
class RunningWorker:
    worker: Worker
    health: HealthServer | None
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


def spawn_worker(
    server: NatsServer,
    *,
    stream: str,
    database_url: str,
    member: str,
    log: Path,
    incarnation: str = "1",
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """A worker as a subprocess (``python -m coordshard_service``), for kill -9;
    ``extra``: more flags."""
    args = [
        sys.executable, "-m", "coordshard_service",
        "--nats-url", server.url, "--stream", stream, "--prefix", PREFIX,
        "--shards", str(SHARDS), "--pod-name", member, "--pod-uid", incarnation,
        "--database-url", database_url, "--no-http-enabled",
        "--fetch-timeout", "0.2", "--bind-poll", "0.05", "--batch-size", "64",
        *extra,
    ]  # fmt: skip
    with log.open("wb") as sink:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=sink)


async def start_worker(settings: ServiceSettings) -> RunningWorker:
    """Run a worker in this event loop; returns once it is wired (maybe not yet bound)."""
    stop = asyncio.Event()
    started: asyncio.Future[app.Services] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(app.run(settings, stop=stop, handle_signals=False, started=started))
    done, _ = await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    services = started.result()
    return RunningWorker(services.worker, services.health, stop, task)


async def start_member(
    server: NatsServer,
    provisioner: Provisioner,
    *,
    database_url: str,
    member: str,
    incarnation: str = "1",
) -> RunningWorker:
    """Start an in-process worker for ``member`` on the provisioner's stream."""
    settings = worker_settings(
        server,
        stream=provisioner.stream,
        database_url=database_url,
        member=member,
        incarnation=incarnation,
    )
    return await start_worker(settings)


@dataclass
class MoveLoad:
    """Many single-step moves in flight over a set of points, and the check that
    each one was applied exactly once."""

    client: CoordinateClient
    points: list[tuple[str, str]]
    moves: list[tuple[str, str]] = field(default_factory=list)
    tasks: list[asyncio.Task[object]] = field(default_factory=list)

    @classmethod
    async def seed(cls, client: CoordinateClient, *, systems: int, per_system: int) -> MoveLoad:
        points = [(f"sys-{i}", f"p{j}") for i in range(systems) for j in range(per_system)]
        for i in range(systems):
            await client.create_system(system_id=f"sys-{i}", name="load", dimension=2)
        for system_id, point_id in points:
            await client.create_point(system_id=system_id, point_id=point_id, coordinates=(0, 0))
        return cls(client, points)

    def launch(self, n: int) -> None:
        self.moves = [self.points[k % len(self.points)] for k in range(n)]
        self.tasks = [
            asyncio.create_task(
                self.client.move_point(system_id=s, point_id=p, moves=[Translate(delta=(1, 0))])
            )
            for s, p in self.moves
        ]

    def done(self) -> int:
        return sum(t.done() for t in self.tasks)

    async def check_applied_once(self) -> None:
        await asyncio.gather(*self.tasks)
        for system_id, point_id in self.points:
            count = self.moves.count((system_id, point_id))
            point = await self.client.get_point(system_id=system_id, point_id=point_id)
            assert (point.coordinates, point.version) == ((float(count), 0.0), 1 + count)


async def wait_until(predicate: Callable[[], object], *, timeout: float = 10.0) -> None:
    """Poll a condition with a deadline."""
    await poll(predicate, timeout=timeout)


@pytest.fixture
async def one_worker(
    nats_server: NatsServer, provisioner: Provisioner, database_url: str
) -> AsyncIterator[RunningWorker]:
    """One worker owning every shard, bound and ready."""
    await provisioner.assign(member="w1", incarnation="i1", shards=list(range(SHARDS)))
    running = await start_member(
        nats_server, provisioner, database_url=database_url, member="w1", incarnation="i1"
    )
    await wait_until(lambda: running.worker.bound)
    yield running
    await running.shutdown()


@pytest.fixture
async def client(nc: Client, provisioner: Provisioner) -> AsyncIterator[CoordinateClient]:
    async with CoordinateClient(
        nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=10
    ) as c:
        yield c


async def wait_drained(js: JetStreamContext, stream: str, *, timeout: float = 5.0) -> None:
    """Wait until ``stream`` holds no message: a worker replies before it acks, so an
    answer can arrive a moment before its message leaves the work queue."""

    async def drained() -> bool:
        return not (await js.stream_info(stream)).state.messages

    await poll(drained, timeout=timeout, what=f"stream {stream} to drain")


async def wait_settled(
    js: JetStreamContext, stream: str, consumer: str, *, timeout: float = 5.0
) -> None:
    """Wait until ``consumer`` has nothing pending and nothing unacked: the answer to
    the last command can arrive a moment before the server has taken its ack."""

    async def settled() -> bool:
        info = await js.consumer_info(stream, consumer)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await poll(settled, timeout=timeout, what=f"consumer {consumer} to settle")


class RawPublisher:
    """Publishes raw bytes as subjects over a bare TCP connection, as a hostile client
    would: nats-py takes only str subjects (and reads every one as strict UTF-8)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def publish(
        self,
        subject: bytes,
        body: bytes,
        *,
        reply: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """PUB, or HPUB when ``headers`` is given (even empty); ``reply`` gets the stream's
        PubAck."""
        to = b" " + reply.encode() if reply else b""
        if headers is None:
            line = b"PUB %s%s %d\r\n" % (subject, to, len(body))
            self.writer.write(line + body + b"\r\n")
        else:
            head = b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
            head += b"\r\n"
            line = b"HPUB %s%s %d %d\r\n" % (subject, to, len(head), len(head) + len(body))
            self.writer.write(line + head + body + b"\r\n")
        await self.writer.drain()

    async def flush(self) -> None:
        """PING, then the server's PONG: it has read every publish before it."""
        self.writer.write(b"PING\r\n")
        await self.writer.drain()
        assert await asyncio.wait_for(self.reader.readline(), 5) == b"PONG\r\n"


@asynccontextmanager
async def raw_publisher(server: NatsServer) -> AsyncIterator[RawPublisher]:
    """A ``RawPublisher`` connected to ``server`` (headers on), closed afterwards."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert (await reader.readline()).startswith(b"INFO ")
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"headers":true}\r\n')
        yield RawPublisher(reader, writer)
    finally:
        writer.close()
        await writer.wait_closed()
