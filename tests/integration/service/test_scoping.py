"""A store knows which group and which stream instance it serves.

Two groups on one database use the same system ids, shard numbers and stream
sequences; a stream re-created under a kept store restarts its sequences at 1.
Neither may be answered from the other's rows.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import sqlalchemy as sa
from nats.aio.client import Client
from nats.js import JetStreamContext

from coordshard_client import CoordinateClient, CoordinateNotFoundError, Point, Translate
from coordshard_client.messages import Command, CreatePoint, MovePoint, Outcome
from coordshard_client.subjects import shard_of
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service.cache import Cache
from coordshard_service.commands import Incoming, apply_batch, fingerprint
from coordshard_service.metrics import Metrics
from coordshard_service.migrations import upgrade
from coordshard_service.store import Store, metadata

from .conftest import (
    PREFIX,
    SHARDS,
    STREAM_KEY,
    Provisioner,
    RunningWorker,
    start_worker,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.integration

BILLING_GROUP = "billing"
BILLING_PREFIX = "billing.cmd"
BILLING_SHARDS = 6


async def _seed(client: CoordinateClient, *, name: str, points: int) -> list[tuple[str, str]]:
    """Systems sys-0..3 (the same ids in every group) with ``points`` points each."""
    made = [(f"sys-{i}", f"p{j}") for i in range(4) for j in range(points)]
    await asyncio.gather(
        *(client.create_system(system_id=f"sys-{i}", name=name, dimension=2) for i in range(4))
    )
    await asyncio.gather(
        *(client.create_point(system_id=s, point_id=p, coordinates=(0, 0)) for s, p in made)
    )
    return made


def _moves(
    client: CoordinateClient, points: list[tuple[str, str]], n: int, delta: tuple[float, float]
) -> tuple[list[tuple[str, str]], list[asyncio.Task[Point]]]:
    targets = [points[k % len(points)] for k in range(n)]
    tasks = [
        asyncio.create_task(
            client.move_point(system_id=s, point_id=p, moves=[Translate(delta=delta)])
        )
        for s, p in targets
    ]
    return targets, tasks


def _check_answers(
    targets: list[tuple[str, str]],
    answers: list[Point],
    *,
    delta: tuple[float, float],
    before: int = 0,
) -> None:
    """Each move was answered with its own point, one step further than the answer
    before it; ``before``: moves each point had already had."""
    versions: dict[tuple[str, str], list[int]] = {}
    for (system_id, point_id), point in zip(targets, answers, strict=True):
        assert (point.system_id, point.point_id) == (system_id, point_id)
        steps = point.version - 1
        assert point.coordinates == (delta[0] * steps, delta[1] * steps), point
        versions.setdefault((system_id, point_id), []).append(point.version)
    counts = Counter(targets)
    for key, seen in versions.items():
        assert sorted(seen) == list(range(before + 2, before + 2 + counts[key])), (key, seen)


async def _final(
    client: CoordinateClient, points: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[tuple[float, ...], int]]:
    got = await asyncio.gather(*(client.get_point(system_id=s, point_id=p) for s, p in points))
    return {(p.system_id, p.point_id): (p.coordinates, p.version) for p in got}


async def test_two_groups_sharing_one_database_each_get_their_own_answers_and_rows(
    nats_server: NatsServer,
    nc: Client,
    js: JetStreamContext,
    provisioner: Provisioner,
    database_url: str,
) -> None:
    billing = Provisioner(
        js,
        provisioner.stream + "B",
        prefix=BILLING_PREFIX,
        group=BILLING_GROUP,
        shards=BILLING_SHARDS,
    )
    await billing.create_stream()
    await provisioner.assign(member="w1", incarnation="i1", shards=list(range(SHARDS)))
    await billing.assign(member="w1", incarnation="i1", shards=list(range(BILLING_SHARDS)))
    workers: list[RunningWorker] = []
    try:
        for p, group, shards in (
            (provisioner, "coordinate", SHARDS),
            (billing, BILLING_GROUP, BILLING_SHARDS),
        ):
            settings = worker_settings(
                nats_server,
                stream=p.stream,
                database_url=database_url,
                member="w1",
                incarnation="i1",
                group=group,
                prefix=p.prefix,
                shards=shards,
            )
            workers.append(await start_worker(settings))
        await wait_until(lambda: all(w.worker.bound for w in workers))
        async with (
            CoordinateClient(nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream) as orders,
            CoordinateClient(
                nc, shards=BILLING_SHARDS, prefix=BILLING_PREFIX, stream=billing.stream
            ) as bills,
        ):
            orders_points, bills_points = await asyncio.gather(
                _seed(orders, name="orders", points=3), _seed(bills, name="billing", points=2)
            )
            await orders.create_system(system_id="only-orders", name="orders", dimension=2)
            # Interleaved: both groups' moves in flight together, their stream sequences
            # overlapping (both streams count from 1).
            o_targets, o_tasks = _moves(orders, orders_points, 90, (1, 0))
            b_targets, b_tasks = _moves(bills, bills_points, 80, (0, 2))
            o_answers = await asyncio.gather(*o_tasks)
            b_answers = await asyncio.gather(*b_tasks)
            _check_answers(o_targets, o_answers, delta=(1, 0))
            _check_answers(b_targets, b_answers, delta=(0, 2))

            for client, points, targets, delta in (
                (orders, orders_points, o_targets, (1, 0)),
                (bills, bills_points, b_targets, (0, 2)),
            ):
                counts = Counter(targets)
                final = await _final(client, points)
                assert final == {
                    key: ((delta[0] * counts[key], delta[1] * counts[key]), 1 + counts[key])
                    for key in points
                }
            assert (await orders.get_system(system_id="sys-0")).name == "orders"
            assert (await bills.get_system(system_id="sys-0")).name == "billing"
            with pytest.raises(CoordinateNotFoundError):
                await bills.get_system(system_id="only-orders")
            page = await bills.list_points(system_id="sys-1")
            assert [p.point_id for p in page.points] == ["p0", "p1"]
            deleted = await bills.delete_system(system_id="sys-1")
            assert deleted.points_deleted == 2
            page = await orders.list_points(system_id="sys-1")
            assert [p.point_id for p in page.points] == ["p0", "p1", "p2"]
    finally:
        for w in workers:
            await w.shutdown()
    for w in workers:
        assert w.worker.metrics.late_applies._value.get() == 0


async def test_a_stream_recreated_under_a_kept_store_is_applied_afresh_not_answered_from_the_old(
    js: JetStreamContext,
    provisioner: Provisioner,
    one_worker: RunningWorker,
    client: CoordinateClient,
) -> None:
    # What a server that lost its JetStream storage looks like to the workers: the
    # same stream name, sequences from 1 again, and the store still holding the
    # marks and outcomes of the old stream's sequences.
    points = [(f"sys-{i}", f"p{j}") for i in range(3) for j in range(4)]
    for i in range(3):
        await client.create_system(system_id=f"sys-{i}", name="kept", dimension=2)
    for s, p in points:
        await client.create_point(system_id=s, point_id=p, coordinates=(0, 0))
    first, tasks = _moves(client, points, 120, (1, 0))
    _check_answers(first, await asyncio.gather(*tasks), delta=(1, 0))
    worker = one_worker.worker
    old = worker.status().get("stream")

    await js.delete_stream(provisioner.stream)  # our consumer goes with it: a fence
    await wait_until(lambda: worker.metrics.fenced._value.get() == 1)
    await provisioner.create_stream()
    await provisioner.assign(member="w1", incarnation="i1", shards=list(range(SHARDS)))
    await wait_until(lambda: worker.bound)

    # New commands, new keys, on the kept points: every one applied, once.
    second, tasks = _moves(client, points, 120, (1, 0))
    _check_answers(second, await asyncio.gather(*tasks), delta=(1, 0), before=10)
    final = await _final(client, points)
    assert final == {key: ((20.0, 0.0), 21) for key in points}
    assert worker.metrics.dedupe_hits._value.get() == 0
    # The worker noticed, and says so.
    assert worker.metrics.stream_instances._value.get() == 1
    assert worker.status()["stream"] not in (None, old)


def test_a_store_at_0002_with_data_moves_to_group_and_stream_keys(database_url: str) -> None:
    """Migration 0003: the old rows go to the first group that migrates, the old marks
    go (nobody recorded their stream), and the old outcomes still answer by key."""
    shard = shard_of("s1", SHARDS)
    created = CreatePoint(system_id="s1", point_id="p1", coordinates=(1, 2))
    stored = Outcome(
        ok=True,
        result=Point(system_id="s1", point_id="p1", coordinates=(1, 2), version=1),
        stream_seq=17,
    )
    old = Store(database_url, group="billing")
    try:
        upgrade(old.engine, revision="0002")
        with old.engine.begin() as conn:
            for statement, values in (
                ("INSERT INTO systems VALUES ('s1', :shard, 'old', 2, 'm', NULL)", {}),
                ("INSERT INTO points VALUES ('s1', 'p1', '[1, 2]', 1)", {}),
                ("INSERT INTO shard_marks VALUES (:shard, 17)", {}),
                (
                    "INSERT INTO outcomes VALUES ('k1', :shard, 17, :outcome, :now, :fp)",
                    {
                        "outcome": stored.model_dump_json(),
                        "now": time.time(),
                        "fp": fingerprint(created),
                    },
                ),
                (
                    "INSERT INTO dead_letters (stream_seq, subject, reason, headers, data,"
                    " consumer, created_at) VALUES (3, 'x', 'bad', '{}', :data, 'c', 0)",
                    {"data": b"?"},
                ),
            ):
                conn.execute(sa.text(statement), {"shard": shard, **values})
        old.migrate()
        _assert_schema_is_the_models(old)
    finally:
        old.dispose()

    billing, other = Store(database_url, group="billing"), Store(database_url, group="other")
    try:
        other.migrate()  # a later group's first start claims nothing
        with other.transaction(stream=STREAM_KEY) as tx:
            assert tx.system("s1") is None and tx.outcomes_by_keys(["k1"]) == {}
        assert other.dead_letters() == []
        assert [(d.stream, d.stream_seq) for d in billing.dead_letters()] == [("", 3)]
        with billing.transaction(stream=STREAM_KEY) as tx:
            assert tx.system("s1") is not None and tx.point("s1", "p1") is not None
            assert tx.lock_marks([shard]) == {shard: 0}
            assert tx.outcome_by_seq(shard, 17) is None

        def incoming(seq: int, key: str, command: Command) -> Incoming:
            return Incoming(
                stream_seq=seq,
                subject=f"{PREFIX}.{shard}.s1.{command.op}",
                shard=shard,
                key=key,
                reply=None,
                command=command,
                published_at=time.time(),
            )

        move = MovePoint(system_id="s1", point_id="p1", moves=(Translate(delta=(1, 0)),))
        moved, retried = apply_batch(
            billing,
            Cache(10),
            [incoming(17, "fresh", move), incoming(18, "k1", created)],
            shards=SHARDS,
            stream=STREAM_KEY,
            consumer="c",
            metrics=Metrics(),
        )
        # Sequence 17 of the new instance is applied, not answered from the old 17;
        # the retry of key k1 is answered from its stored outcome.
        assert not moved.replayed and isinstance(moved.result, Point)
        assert moved.result.coordinates == (2.0, 2.0) and moved.result.version == 2
        assert retried.replayed and retried.result == stored.result
    finally:
        billing.dispose()
        other.dispose()


def _assert_schema_is_the_models(store: Store) -> None:
    """The migrated tables have the model's columns, keys and indexes (``store.metadata``)."""
    with store.engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in metadata.sorted_tables:
            columns = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
            assert columns == {c.name: c.nullable for c in table.columns}, table.name
            key = inspector.get_pk_constraint(table.name)["constrained_columns"]
            assert key == [c.name for c in table.primary_key.columns], table.name
            indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(table.name)}
            assert indexes == {i.name: [c.name for c in i.columns] for i in table.indexes}, (
                table.name
            )
