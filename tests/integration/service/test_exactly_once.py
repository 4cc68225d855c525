"""Retries and redeliveries apply once: same idempotency key, and kill -9 of a worker mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from coordshard_client import (
    CoordinateClient,
    CoordinateConflictError,
    CoordinateNotFoundError,
    Translate,
)
from coordshard_client.messages import (
    Command,
    CreatePoint,
    CreateSystem,
    GetPoint,
    MovePoint,
    Outcome,
    Point,
)
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service.cache import Cache
from coordshard_service.commands import Incoming, apply_batch
from coordshard_service.decoding import decode
from coordshard_service.metrics import Metrics
from coordshard_service.store import Store

from ..conftest import process_stopped
from .conftest import (
    PREFIX,
    SHARDS,
    STREAM_KEY,
    MoveLoad,
    Provisioner,
    RunningWorker,
    delivery,
    spawn_worker,
    start_member,
    start_worker,
    stream_key,
    wait_settled,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.integration


async def test_a_retry_with_the_same_key_is_applied_once_and_answered_alike(
    one_worker: RunningWorker, client: CoordinateClient
) -> None:
    create = CreateSystem(system_id="s1", name="one", dimension=2)
    first = await client.send(create, idempotency_key="create-s1")
    again = await client.send(create, idempotency_key="create-s1")
    assert not first.replayed and again.replayed
    assert again.result == first.result and again.stream_seq == first.stream_seq

    await client.create_point(system_id="s1", point_id="p", coordinates=(0, 0))
    move = MovePoint(system_id="s1", point_id="p", moves=(Translate(delta=(1, 0)),))
    outcomes = [await client.send(move, idempotency_key="move-1") for _ in range(3)]
    assert {o.result for o in outcomes} == {outcomes[0].result}
    point = await client.get_point(system_id="s1", point_id="p")
    assert point.version == 2 and point.coordinates == (1.0, 0.0)
    assert one_worker.worker.metrics.dedupe_hits._value.get() >= 3


async def test_a_key_reused_for_a_different_command_is_refused_and_changes_nothing(
    one_worker: RunningWorker, client: CoordinateClient
) -> None:
    await client.create_system(system_id="r1", name="one", dimension=2)
    await client.create_point(system_id="r1", point_id="p", coordinates=(0, 0))
    right = MovePoint(system_id="r1", point_id="p", moves=(Translate(delta=(1, 0)),))
    left = MovePoint(system_id="r1", point_id="p", moves=(Translate(delta=(-5, 0)),))
    moved = await client.send(right, idempotency_key="reused")
    with pytest.raises(CoordinateConflictError, match="different command"):
        await client.send(left, idempotency_key="reused")
    with pytest.raises(CoordinateConflictError, match="different command"):
        await client.send(
            CreateSystem(system_id="r2", name="two", dimension=2), idempotency_key="reused"
        )
    again = await client.send(right, idempotency_key="reused")
    assert again.replayed and again.result == moved.result
    point = await client.get_point(system_id="r1", point_id="p")
    assert point.coordinates == (1.0, 0.0) and point.version == 2
    with pytest.raises(CoordinateNotFoundError):
        await client.get_system(system_id="r2")


async def test_a_query_after_an_outcome_sees_its_effect(
    one_worker: RunningWorker, client: CoordinateClient
) -> None:
    await client.create_system(system_id="q", name="q", dimension=2)
    await client.create_point(system_id="q", point_id="p", coordinates=(0, 0))
    for i in range(1, 20):
        moved = await client.move_point(
            system_id="q", point_id="p", moves=[Translate(delta=(1, 0))]
        )
        seen = await client.get_point(system_id="q", point_id="p")
        assert seen == moved and seen.version == i + 1


async def test_kill_9_mid_stream_then_handoff_applies_every_command_exactly_once(
    nats_server: NatsServer,
    nc: Client,
    provisioner: Provisioner,
    database_url: str,
    tmp_path: Path,
) -> None:
    dead = await provisioner.assign(member="a", incarnation="1", shards=list(range(SHARDS)))
    proc = spawn_worker(
        nats_server,
        stream=provisioner.stream,
        database_url=database_url,
        member="a",
        log=tmp_path / "a.log",
    )
    b: RunningWorker | None = None
    try:
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=60
        ) as client:
            load = await MoveLoad.seed(client, systems=4, per_system=4)
            # Enough moves that the kill lands mid-stream: the worker got fast enough
            # to finish 600 between two polls of the condition below.
            load.launch(3000)
            await wait_until(lambda: load.done() >= 60, timeout=30)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert load.done() < 3000, "worker finished before the kill"

            # The engine's crash handoff: fence the dead consumer, give its shards to a survivor.
            await provisioner.delete(dead)
            await provisioner.assign(member="b", incarnation="1", shards=list(range(SHARDS)))
            b = await start_member(
                nats_server, provisioner, database_url=database_url, member="b", incarnation="1"
            )
            await load.check_applied_once()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if b is not None:
            await b.shutdown()


async def test_sigterm_finishes_in_flight_work_and_exits_zero(
    nats_server: NatsServer, nc: Client, provisioner: Provisioner, database_url: str, tmp_path: Path
) -> None:
    await provisioner.assign(member="t", incarnation="1", shards=list(range(SHARDS)))
    proc = spawn_worker(
        nats_server,
        stream=provisioner.stream,
        database_url=database_url,
        member="t",
        log=tmp_path / "t.log",
    )
    try:
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=30
        ) as client:
            await client.create_system(system_id="t", name="t", dimension=2)
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 10)
        assert code == 0, (tmp_path / "t.log").read_text()
        info = await nc.jetstream().stream_info(provisioner.stream)
        assert info.state.messages == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def test_a_batch_committed_but_never_acked_is_answered_from_stored_outcomes(
    nats_server: NatsServer, nc: Client, provisioner: Provisioner, database_url: str
) -> None:
    """The crash window that kill -9 only sometimes hits, made deterministic: the test
    plays a worker that commits a batch and dies before replying or acking."""
    zombie = await provisioner.assign(member="z", incarnation="1", shards=list(range(SHARDS)))
    store = Store(database_url)
    store.migrate()
    async with CoordinateClient(
        nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=30
    ) as client:
        calls = [
            asyncio.create_task(client.create_system(system_id="zs", name="z", dimension=2)),
        ]
        calls += [
            asyncio.create_task(
                client.create_point(system_id="zs", point_id=f"p{i}", coordinates=(i, 0))
            )
            for i in range(5)
        ]
        js = nc.jetstream()
        await wait_until(lambda: client_pending(calls) == 0, timeout=5)
        psub = await js.pull_subscribe_bind(durable=zombie, stream=provisioner.stream)
        fetched: list[Msg] = []
        while len(fetched) < 6:
            fetched += await psub.fetch(6 - len(fetched), timeout=5)
        key = await stream_key(js, provisioner.stream)
        items = [
            decode(m, prefix=PREFIX, shards=SHARDS, max_payload=65536, stream=key) for m in fetched
        ]
        committed = apply_batch(
            store, Cache(100), items, shards=SHARDS, stream=key, consumer=zombie,
            metrics=Metrics(),
        )  # fmt: skip
        assert all(o.ok for o in committed)
        await psub.unsubscribe()

        await provisioner.delete(zombie)
        await provisioner.assign(member="b", incarnation="1", shards=list(range(SHARDS)))
        b = await start_member(
            nats_server, provisioner, database_url=database_url, member="b", incarnation="1"
        )
        try:
            _system, *made = await asyncio.gather(*calls)
            assert b.worker.metrics.dedupe_hits._value.get() == 6
            page = await client.list_points(system_id="zs")
            assert [p.version for p in page.points] == [1] * 5
            assert {p.point_id for p in made} == {f"p{i}" for i in range(5)}
        finally:
            await b.shutdown()
            store.dispose()


def client_pending(calls: list[asyncio.Task[object]]) -> int:
    """Calls that already finished (none should, before anyone serves them)."""
    return sum(c.done() for c in calls)


async def test_acks_that_fail_while_the_consumer_lives_are_retried_not_taken_for_a_fence(
    nats_server: NatsServer, nc: Client, one_worker: RunningWorker, client: CoordinateClient
) -> None:
    # The consumer's server stops answering right after a batch was applied (as
    # while a consumer leader dies or moves): its acks time out, but the consumer
    # lives on. Before this was handled, the worker dropped the batch as fenced,
    # and the consumer held it until ack_wait while delivering later messages.
    load = await MoveLoad.seed(client, systems=4, per_system=4)
    assert nats_server.process is not None
    pid = nats_server.process.pid
    worker = one_worker.worker
    lane = worker.lanes[worker.consumer]
    settle = lane.settle
    frozen: list[asyncio.Task[None]] = []

    async def thaw_later() -> None:
        try:
            await asyncio.sleep(3.0)  # the outage: longer than an ack_sync waits
        finally:
            os.kill(pid, signal.SIGCONT)

    async def settle_then_freeze(msg: Msg, *args: object, **kw: object) -> None:
        if not frozen:
            os.kill(pid, signal.SIGSTOP)
            frozen.append(asyncio.create_task(thaw_later()))
            # SIGSTOP lands asynchronously: the ack must not go out before it has.
            await wait_until(lambda: process_stopped(pid), timeout=2)
        await settle(msg, *args, **kw)  # type: ignore[arg-type]

    lane.settle = settle_then_freeze  # type: ignore[method-assign]
    try:
        load.launch(64)
        await asyncio.wait_for(load.check_applied_once(), 20)  # ack_wait is 30 s
    finally:
        if frozen:
            await frozen[0]
    assert worker.metrics.ack_retries._value.get() >= 1
    assert worker.metrics.fenced._value.get() == 0
    # Nothing left waiting for ack_wait (30 s) on the consumer.
    js = nc.jetstream()
    pending: list[int] = []

    async def ack_pending() -> int:
        info = await js.consumer_info(worker.settings.stream, worker.consumer)
        return int(info.num_ack_pending or 0)

    deadline = asyncio.get_running_loop().time() + 10
    while (n := await ack_pending()) and asyncio.get_running_loop().time() < deadline:
        pending.append(n)
        await asyncio.sleep(0.1)
    assert await ack_pending() == 0, pending


async def test_a_batch_whose_consumer_was_reset_under_it_is_left_to_the_redelivery(
    nc: Client, one_worker: RunningWorker, client: CoordinateClient
) -> None:
    # The engine resets a gainer's consumer while the gainer may hold a batch: an
    # ack for a delivery made before a reset gets no answer, so retrying it would
    # wait for ever. The worker must leave the batch to the redelivery (answered
    # from the stored outcomes) and go on serving.
    load = await MoveLoad.seed(client, systems=4, per_system=4)
    js = nc.jetstream()
    worker = one_worker.worker
    lane = worker.lanes[worker.consumer]
    settle = lane.settle
    reset: list[int] = []

    async def reset_then_settle(msg: Msg, *args: object, **kw: object) -> None:
        if not reset:
            first = (await js.stream_info(worker.settings.stream)).state.first_seq
            await js.reset_consumer(worker.settings.stream, worker.consumer, seq=first)
            reset.append(first)
        await settle(msg, *args, **kw)  # type: ignore[arg-type]

    lane.settle = reset_then_settle  # type: ignore[method-assign]
    load.launch(64)
    await asyncio.wait_for(load.check_applied_once(), 20)  # ack_wait is 30 s
    assert reset and worker.metrics.fenced._value.get() == 0
    assert worker.metrics.dedupe_hits._value.get() >= 1  # the batch came again, replayed
    await wait_settled(js, worker.settings.stream, worker.consumer)


async def test_a_batch_the_store_refuses_is_held_and_applied_in_order_once_it_is_back(
    database_url: str,
    one_worker: RunningWorker,
    client: CoordinateClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A store outage: another writer holds SQLite's lock longer than the worker
    # waits for it. Were the refused batch nak'ed, the batches fetched behind it
    # would be applied first and move the shards' marks past it, and it would
    # then be refused as "applied already": lost commands.
    if not database_url.startswith("sqlite"):
        pytest.skip("the outage is made by holding SQLite's write lock")
    monkeypatch.setattr("coordshard_service.store.SQLITE_LOCK_TIMEOUT", 0.1)
    load = await MoveLoad.seed(client, systems=4, per_system=4)
    holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        load.launch(64)
        worker = one_worker.worker
        await wait_until(lambda: worker.metrics.store_retries._value.get() >= 3)
        assert load.done() == 0  # nothing answered while the store is down
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await asyncio.wait_for(load.check_applied_once(), 30)
    assert worker.metrics.fenced._value.get() == 0


def test_a_late_delivery_below_the_mark_is_applied_once_an_old_unknown_one_refused(
    database_url: str,
) -> None:
    # JetStream redelivers a lost delivery behind later messages of its shard. Its
    # seq is then below the shard's mark, but no outcome says it was applied, and
    # it is younger than the outcome retention: apply it, once. One as old as the
    # retention may have had its outcome pruned: refuse it (conflict), never
    # risk applying it twice.
    store = Store(database_url)
    store.migrate()
    metrics = Metrics()
    sid = "late"
    now = time.time()

    def incoming(seq: int, command: Command, *, age: float = 0.0) -> Incoming:
        return delivery(sid, seq, command, published_at=now - age)

    def apply(*items: Incoming) -> list[Outcome]:
        return apply_batch(
            store, Cache(100), list(items), shards=SHARDS, stream=STREAM_KEY, consumer="c",
            metrics=metrics, retention=3600,
        )  # fmt: skip

    try:
        apply(
            incoming(1, CreateSystem(system_id=sid, name="l", dimension=2)),
            incoming(2, CreatePoint(system_id=sid, point_id="p", coordinates=(0, 0))),
            incoming(9, MovePoint(system_id=sid, point_id="p", moves=(Translate(delta=(1, 0)),))),
        )
        move = MovePoint(system_id=sid, point_id="p", moves=(Translate(delta=(10, 0)),))
        (late,) = apply(incoming(5, move))
        assert late.ok and not late.replayed and metrics.late_applies._value.get() == 1
        (again,) = apply(incoming(5, move))  # its redelivery: answered, not applied
        assert again.replayed and again.result == late.result
        (old,) = apply(incoming(4, move, age=3600))
        assert not old.ok and old.error is not None and "applied already" in old.error.message
        (point,) = apply(incoming(10, GetPoint(system_id=sid, point_id="p")))
        assert isinstance(point.result, Point)
        assert point.result.coordinates == (11.0, 0.0) and point.result.version == 3
    finally:
        store.dispose()


async def test_a_redelivery_at_its_shards_mark_after_its_outcome_was_pruned_is_not_applied_again(
    nats_server: NatsServer, nc: Client, provisioner: Provisioner, database_url: str
) -> None:
    # The test plays a worker that commits a batch and dies before acking; the
    # outcomes are then pruned and the batch is redelivered to a real worker, old
    # enough that no outcome of it could still be stored. The last command of the
    # batch sits exactly at its shard's mark: it was applied, and must not be again.
    zombie = await provisioner.assign(member="z", incarnation="1", shards=list(range(SHARDS)))
    store = Store(database_url)
    store.migrate()
    b: RunningWorker | None = None
    try:
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=30
        ) as client:
            calls: list[asyncio.Task[object]] = [
                asyncio.create_task(client.create_system(system_id="m", name="m", dimension=2)),
                asyncio.create_task(
                    client.create_point(system_id="m", point_id="p", coordinates=(0, 0))
                ),
                asyncio.create_task(
                    client.move_point(system_id="m", point_id="p", moves=[Translate(delta=(1, 0))])
                ),
            ]
            psub = await nc.jetstream().pull_subscribe_bind(
                durable=zombie, stream=provisioner.stream
            )
            fetched: list[Msg] = []
            while len(fetched) < 3:
                fetched += await psub.fetch(3 - len(fetched), timeout=5)
            published = time.time()
            key = await stream_key(nc.jetstream(), provisioner.stream)
            items = [
                decode(m, prefix=PREFIX, shards=SHARDS, max_payload=65536, stream=key)
                for m in fetched
            ]
            assert [i.command.op for i in items if i.command] == [
                "create-system",
                "create-point",
                "move-point",
            ]
            committed = apply_batch(
                store, Cache(100), items, shards=SHARDS, stream=key, consumer=zombie,
                metrics=Metrics(),
            )  # fmt: skip
            assert all(o.ok for o in committed)
            await psub.unsubscribe()
            with store.transaction(stream=key) as tx:
                assert tx.lock_marks([items[-1].shard]) == {items[-1].shard: items[-1].stream_seq}
            retention = 0.5
            # Past the retention (and the clock margin) since the stream stored them.
            await asyncio.sleep(max(0.0, published + retention - time.time()))
            assert store.prune_outcomes(older_than=0) == 3

            await provisioner.delete(zombie)
            await provisioner.assign(member="b", incarnation="1", shards=list(range(SHARDS)))
            b = await start_worker(
                worker_settings(
                    nats_server,
                    stream=provisioner.stream,
                    database_url=database_url,
                    member="b",
                    incarnation="1",
                    outcome_retention=retention,
                )
            )
            answers = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(a, CoordinateConflictError) for a in answers), answers
            point = await client.get_point(system_id="m", point_id="p")
            assert (point.coordinates, point.version) == ((1.0, 0.0), 2)
    finally:
        if b is not None:
            await b.shutdown()
        store.dispose()
