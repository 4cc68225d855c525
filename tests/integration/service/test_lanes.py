"""A worker serves every consumer ("lane") of its member, on a stream that stores blocks.

The stream here is made the way the block layout makes it: commands published
on ``<prefix>.<shard>.<id>.<op>``, stored by the stream's subject transform as
``<prefix>.b.<block>.<shard>.<id>.<op>``, N recorded in its metadata. The lanes
are made by hand (``add_consumer``), as the rebalancer makes them: each named
``<member id>_g<generation>``, filtering whole blocks, never edited, only
created and deleted. N = K = 64, so a block is one shard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, RetentionPolicy, StreamConfig, SubjectTransform

from coordshard_client import CoordinateClient
from coordshard_client.messages import HEADER_REPLY, Outcome
from coordshard_client.naming import consumer_name, member_id
from coordshard_client.subjects import (
    STREAM_META_SHARDS,
    block_filter,
    block_transform,
    blocks_of,
    shard_filter,
    shard_of,
)
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service.decoding import owned_shards

from ..conftest import sqlite_write_lock
from .conftest import (
    GROUP,
    PREFIX,
    MoveLoad,
    Provisioner,
    RunningWorker,
    start_worker,
    wait_drained,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.integration

N = 64
K = blocks_of(N)
MEMBER = member_id(group=GROUP, member="w", incarnation="1")
THIRDS = [range(0, 21), range(21, 42), range(42, 64)]
"""The blocks of the member's three lanes."""
NO_POLL = 60.0
"""A bind poll far longer than any test: a lane bound in time was heard of by advisory."""


def system_on(shard: int) -> str:
    """A system id that lands on ``shard`` of N."""
    return next(f"s{shard}-{k}" for k in range(10_000) if shard_of(f"s{shard}-{k}", N) == shard)


@dataclass
class Lanes(Provisioner):
    """The engine's part for the block layout: the block stream (N = K = 64) and a
    member's lanes, each a new consumer (``<member id>_g<generation>``)."""

    shards: int = N
    generation: int = 0
    names: list[str] = field(default_factory=list)

    def stream_config(self) -> StreamConfig:
        src, dest = block_transform(K, prefix=self.prefix)
        return dataclasses.replace(
            super().stream_config(),
            subject_transform=SubjectTransform(src=src, dest=dest),
            metadata={STREAM_META_SHARDS: str(N)},
        )

    async def add(self, blocks: range, *, member: str = MEMBER) -> str:
        """A new lane of ``member`` over ``blocks`` (deliver all, as a gainer's)."""
        self.generation += 1
        name = consumer_name(member, generation=self.generation)
        await self.put_consumer(name, [block_filter(b, prefix=self.prefix) for b in blocks])
        self.names.append(name)
        return name


@pytest.fixture
async def lanes(js: JetStreamContext, stream_name: str) -> Lanes:
    made = Lanes(js, stream_name)
    await made.create_stream()
    return made


@pytest.fixture
async def block_client(nc: Client, lanes: Lanes) -> AsyncIterator[CoordinateClient]:
    async with CoordinateClient(nc, shards=N, prefix=PREFIX, stream=lanes.stream, timeout=10) as c:
        yield c


async def start(
    server: NatsServer, lanes: Lanes, database_url: str, **extra: object
) -> RunningWorker:
    settings = worker_settings(
        server,
        stream=lanes.stream,
        database_url=database_url,
        member="w",
        incarnation="1",
        shards=N,
    )
    return await start_worker(settings.model_copy(update=extra))


async def answers(client: CoordinateClient, shards: range | list[int]) -> None:
    """Every shard of ``shards`` answers: one system created on each."""
    await asyncio.gather(
        *(client.create_system(system_id=system_on(s), name="lane", dimension=2) for s in shards)
    )


def test_a_lanes_shards_are_its_blocks_shards() -> None:
    def info(filters: list[str]) -> ConsumerConfig:
        return ConsumerConfig(filter_subjects=filters)

    blocks = [block_filter(b, prefix=PREFIX) for b in (5, 7)]
    assert owned_shards(info(blocks), prefix=PREFIX, shards=64) == {5, 7}
    # N = 4096 stores under K = 512 blocks: block 5 holds shards 5, 517, ..., 3589.
    assert owned_shards(info(blocks[:1]), prefix=PREFIX, shards=4096) == set(range(5, 4096, 512))
    old = [shard_filter(s, prefix=PREFIX) for s in (1, 3)]
    assert owned_shards(info(old), prefix=PREFIX, shards=64) == {1, 3}
    # Someone else's filters, and a block the stream has not, select nothing.
    others = ["other.b.1.>", f"{PREFIX}.b.01.>", f"{PREFIX}.b.64.>", f"{PREFIX}.b.x.>"]
    assert owned_shards(info(others), prefix=PREFIX, shards=64) == set()


async def test_a_worker_serves_commands_on_every_lane_of_its_member(
    nats_server: NatsServer, lanes: Lanes, block_client: CoordinateClient, database_url: str
) -> None:
    for blocks in THIRDS:
        await lanes.add(blocks)
    running = await start(nats_server, lanes, database_url)
    try:
        await asyncio.wait_for(answers(block_client, range(N)), 20)
        worker = running.worker
        assert sorted(worker.lanes) == sorted(lanes.names)
        assert worker.shards == set(range(N))
        assert worker.metrics.dead_letters._value.get() == 0
        assert worker.metrics.lanes._value.get() == 3
        await wait_drained(lanes.js, lanes.stream)
    finally:
        await running.shutdown()


async def test_a_lane_made_while_the_worker_runs_is_bound_from_its_advisory(
    nats_server: NatsServer, lanes: Lanes, block_client: CoordinateClient, tmp_path: Path
) -> None:
    first = await lanes.add(THIRDS[0])
    running = await start(
        nats_server, lanes, f"sqlite:///{tmp_path / 'store.db'}", bind_poll=NO_POLL
    )
    try:
        await wait_until(lambda: running.worker.bound)
        later = await lanes.add(THIRDS[1])
        await wait_until(lambda: later in running.worker.lanes, timeout=5)
        await asyncio.wait_for(answers(block_client, [*THIRDS[0], *THIRDS[1]]), 20)
        assert sorted(running.worker.lanes) == [first, later]
    finally:
        await running.shutdown()


async def test_a_deleted_lane_is_replaced_while_the_other_lanes_serve_on(
    nats_server: NatsServer,
    lanes: Lanes,
    block_client: CoordinateClient,
    database_url: str,
) -> None:
    kept = [await lanes.add(THIRDS[0]), await lanes.add(THIRDS[1])]
    moving = await lanes.add(THIRDS[2])
    running = await start(nats_server, lanes, database_url, bind_poll=NO_POLL)
    worker = running.worker
    try:
        await wait_until(lambda: len(worker.lanes) == 3)
        for s in range(N):
            await block_client.create_system(system_id=system_on(s), name="load", dimension=2)
        load = MoveLoad(block_client, [(system_on(s), "p") for s in range(N)])
        for system_id, point_id in load.points:
            await block_client.create_point(
                system_id=system_id, point_id=point_id, coordinates=(0, 0)
            )
        load.launch(2000)
        await wait_until(lambda: load.done() >= 200, timeout=20)
        await lanes.delete(moving)  # under traffic, deliveries in hand
        await wait_until(lambda: worker.shards == set(range(42)), timeout=5)
        assert moving not in worker.lanes
        # The moved shards left the cache; the kept ones' entries stay.
        assert worker.cache.shards() and worker.cache.shards() <= set(range(42))
        # The kept lanes' shards answer while the moved ones have no consumer at all.
        for s in (0, 41):
            await asyncio.wait_for(block_client.get_point(system_id=system_on(s), point_id="p"), 5)
        replacement = await lanes.add(THIRDS[2])
        await asyncio.wait_for(load.check_applied_once(), 60)
        assert sorted(worker.lanes) == sorted([*kept, replacement])
        assert worker.metrics.lanes_ended._value.get() == 1
        assert worker.metrics.fenced._value.get() == 0
        await wait_drained(lanes.js, lanes.stream)
    finally:
        await running.shutdown()


async def test_a_worker_whose_last_lane_is_deleted_waits_then_binds_a_new_one(
    nats_server: NatsServer, lanes: Lanes, block_client: CoordinateClient, tmp_path: Path
) -> None:
    only = await lanes.add(range(N))
    running = await start(
        nats_server, lanes, f"sqlite:///{tmp_path / 'store.db'}", bind_poll=NO_POLL
    )
    worker = running.worker
    try:
        await asyncio.wait_for(answers(block_client, range(0, N, 7)), 20)
        await lanes.delete(only)
        await wait_until(lambda: worker.state == "waiting", timeout=5)
        assert worker.metrics.fenced._value.get() == 1
        assert (worker.shards, len(worker.cache)) == (set(), 0)
        again = await lanes.add(range(N))
        await wait_until(lambda: worker.bound, timeout=5)
        await asyncio.wait_for(answers(block_client, range(1, N, 7)), 20)
        assert list(worker.lanes) == [again]
    finally:
        await running.shutdown()


async def probe(running: RunningWorker, path: str) -> tuple[int, dict[str, object]]:
    assert running.health is not None
    url = f"http://127.0.0.1:{running.health.port}{path}"
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return r.status, await r.json()


async def test_one_wedged_lane_turns_the_worker_unready(
    nats_server: NatsServer, lanes: Lanes, block_client: CoordinateClient, tmp_path: Path
) -> None:
    for blocks in THIRDS:
        await lanes.add(blocks)
    db = tmp_path / "store.db"
    running = await start(
        nats_server,
        lanes,
        f"sqlite:///{db}",
        http_enabled=True,
        http_port=0,
        http_host="127.0.0.1",
        stall_timeout=1.0,
    )
    try:
        await wait_until(lambda: len(running.worker.lanes) == 3)
        assert (await probe(running, "/readyz"))[0] == 200
        wedged = running.worker.lanes[lanes.names[2]]
        async with sqlite_write_lock(db):  # the store never takes the lane's batch
            call = asyncio.create_task(
                block_client.create_system(system_id=system_on(50), name="h", dimension=2)
            )

            async def unready() -> bool:
                return (await probe(running, "/readyz"))[0] == 503

            await wait_until(unready, timeout=10)
            _, body = await probe(running, "/readyz")
            assert str(body["stuck"]).startswith(f"lane {wedged.consumer}:"), body
        await asyncio.wait_for(call, 20)

        async def ready() -> bool:
            return (await probe(running, "/readyz"))[0] == 200

        await wait_until(ready, timeout=10)
    finally:
        await running.shutdown()


async def test_a_stored_subject_whose_block_is_not_its_shards_is_dead_lettered(
    nats_server: NatsServer, nc: Client, js: JetStreamContext, stream_name: str, tmp_path: Path
) -> None:
    # No server of ours stores a command under another block than its shard's; a
    # stream that takes the stored form as published (here) lets anyone write one.
    await js.add_stream(
        StreamConfig(
            name=stream_name,
            subjects=[f"{PREFIX}.b.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            metadata={STREAM_META_SHARDS: str(N)},
        )
    )
    made = Lanes(js, stream_name)
    await made.add(range(5, 7))
    running = await start(nats_server, made, f"sqlite:///{tmp_path / 'store.db'}")
    replies: asyncio.Queue[Outcome] = asyncio.Queue()

    async def on_reply(msg: Msg) -> None:
        replies.put_nowait(Outcome.model_validate_json(msg.data))

    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=on_reply)
    system_id = system_on(5)
    body = {
        "v": 1,
        "command": {"op": "create-system", "system_id": system_id, "name": "n", "dimension": 2},
    }

    async def send(block: int) -> Outcome:
        subject = f"{PREFIX}.b.{block}.5.{system_id}.create-system"
        await js.publish(subject, json.dumps(body).encode(), headers={HEADER_REPLY: inbox})
        return await asyncio.wait_for(replies.get(), 10)

    try:
        wrong = await send(6)
        assert not wrong.ok and wrong.error is not None
        assert "wrong block" in wrong.error.message
        assert running.worker.metrics.dead_letters._value.get() == 1
        assert (await send(5)).ok
    finally:
        await running.shutdown()


def _histogram(metric: object) -> tuple[float, float]:
    """(count, sum) of a prometheus Histogram."""
    samples = {s.name: s.value for m in metric.collect() for s in m.samples}  # type: ignore[attr-defined]
    return samples[f"{metric._name}_count"], samples[f"{metric._name}_sum"]  # type: ignore[attr-defined]


async def test_the_batches_of_lanes_that_wait_are_applied_in_one_transaction(
    nats_server: NatsServer,
    lanes: Lanes,
    block_client: CoordinateClient,
    js: JetStreamContext,
    database_url: str,
) -> None:
    # At N=4096 a member's shards are on several lanes; one transaction per lane's
    # batch made each transaction small (~27 messages where one lane gets ~120), and a
    # transaction costs something of its own. Batches that wait are joined.
    names = [await lanes.add(blocks) for blocks in THIRDS]
    running = await start(nats_server, lanes, database_url, bind_poll=NO_POLL)
    worker = running.worker
    queue = worker.applier._queue
    try:
        await wait_until(lambda: len(worker.lanes) == 3)
        async with worker.applying:  # the store's turn is taken: the lanes' batches wait
            created = [
                asyncio.create_task(
                    block_client.create_system(system_id=system_on(s), name="n", dimension=2)
                )
                for s in (THIRDS[0][0], THIRDS[1][0])
            ]
            await wait_until(lambda: len(queue) == 2)
            # A bad message on the third lane, queued last: its dead letter names the
            # lane that delivered it, not the first of the transaction.
            bad = system_on(THIRDS[2][0])
            await js.publish(f"{PREFIX}.{THIRDS[2][0]}.{bad}.create-system", b"not json")
            await wait_until(lambda: len(queue) == 3)
            before = _histogram(worker.metrics.store_batch_size)
        systems = await asyncio.wait_for(asyncio.gather(*created), 10)
        assert [s.system_id for s in systems] == [system_on(THIRDS[0][0]), system_on(THIRDS[1][0])]
        await wait_drained(js, lanes.stream)
        count, total = _histogram(worker.metrics.store_batch_size)
        assert (count - before[0], total - before[1]) == (1, 3)  # one transaction, all three
        [letter] = worker.store.dead_letters()
        assert letter.consumer == names[2]
        assert worker.metrics.dead_letters._value.get() == 1
    finally:
        await running.shutdown()
