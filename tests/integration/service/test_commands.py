"""Every command and query end to end through the SDK, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig

from coordshard_client import CoordinateClient
from coordshard_client.errors import (
    CoordinateConflictError,
    CoordinateNotFoundError,
    CoordinateTimeoutError,
    CoordinateUnavailableError,
    CoordinateValidationError,
    OutOfBoundsError,
)
from coordshard_client.messages import Bounds, MoveTo, Translate
from coordshard_client.subjects import STREAM_META_SHARDS
from coordshard_operator.local.natsserver import NatsServer

from .conftest import PREFIX, SHARDS, Provisioner, start_member

pytestmark = pytest.mark.integration


async def test_every_command_and_query_round_trips(
    one_worker: object, client: CoordinateClient
) -> None:
    system = await client.create_system(
        system_id="sys-1",
        name="Lab",
        dimension=2,
        units="mm",
        bounds=Bounds(low=(0, 0), high=(100, 100)),
    )
    assert system.system_id == "sys-1" and system.dimension == 2
    assert await client.get_system(system_id="sys-1") == system

    p = await client.create_point(system_id="sys-1", point_id="p1", coordinates=(1, 2))
    assert p.version == 1 and p.coordinates == (1.0, 2.0)
    moved = await client.move_point(
        system_id="sys-1",
        point_id="p1",
        moves=[Translate(delta=(10, 10)), MoveTo(position=(50, 50)), Translate(delta=(1, -1))],
    )
    assert moved.coordinates == (51.0, 49.0) and moved.version == 2
    assert await client.get_point(system_id="sys-1", point_id="p1") == moved

    for i in range(5):
        await client.create_point(system_id="sys-1", point_id=f"q{i}", coordinates=(i, i))
    first = await client.list_points(system_id="sys-1", limit=4)
    assert [p.point_id for p in first.points] == ["p1", "q0", "q1", "q2"]
    rest = await client.list_points(system_id="sys-1", after=first.next_after, limit=4)
    assert [p.point_id for p in rest.points] == ["q3", "q4"] and rest.next_after is None

    deleted = await client.delete_point(system_id="sys-1", point_id="q0")
    assert deleted.point_id == "q0"
    with pytest.raises(CoordinateNotFoundError):
        await client.get_point(system_id="sys-1", point_id="q0")

    gone = await client.delete_system(system_id="sys-1")
    assert gone.points_deleted == 5
    with pytest.raises(CoordinateNotFoundError):
        await client.get_system(system_id="sys-1")
    with pytest.raises(CoordinateNotFoundError):
        await client.get_point(system_id="sys-1", point_id="p1")


async def test_refusals_are_typed_and_change_nothing(
    one_worker: object, client: CoordinateClient
) -> None:
    await client.create_system(
        system_id="box", name="Box", dimension=3, bounds=Bounds(low=(0, 0, 0), high=(1, 1, 1))
    )
    with pytest.raises(CoordinateConflictError):
        await client.create_system(system_id="box", name="Again", dimension=3)
    with pytest.raises(OutOfBoundsError):
        await client.create_point(system_id="box", point_id="far", coordinates=(2, 0, 0))
    with pytest.raises(CoordinateNotFoundError):
        await client.create_point(system_id="nowhere", point_id="p", coordinates=(0, 0))
    with pytest.raises(CoordinateValidationError):
        await client.create_point(system_id="box", point_id="flat", coordinates=(0, 0))
    await client.create_point(system_id="box", point_id="p", coordinates=(0.5, 0.5, 0.5))
    with pytest.raises(OutOfBoundsError):
        await client.move_point(
            system_id="box",
            point_id="p",
            moves=[Translate(delta=(0.1, 0, 0)), Translate(delta=(1, 0, 0))],
        )
    with pytest.raises(CoordinateConflictError):
        await client.move_point(
            system_id="box", point_id="p", moves=[MoveTo(position=(0, 0, 0))], expected_version=7
        )
    unchanged = await client.get_point(system_id="box", point_id="p")
    assert unchanged.coordinates == (0.5, 0.5, 0.5) and unchanged.version == 1


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        pytest.param({"system_id": "a.b", "name": "x", "dimension": 2}, "dot", id="dotted-id"),
        pytest.param({"system_id": "ok", "name": "x", "dimension": 4}, "dim", id="dimension-4"),
        pytest.param({"system_id": "ok", "name": "", "dimension": 2}, "name", id="empty-name"),
    ],
)
async def test_client_side_validation_raises_before_publishing(
    client: CoordinateClient, kwargs: dict[str, object], what: str
) -> None:
    with pytest.raises(CoordinateValidationError):
        await client.create_system(**kwargs)  # type: ignore[arg-type]


async def test_a_timed_out_call_retried_with_its_key_is_applied_once(
    nats_server: NatsServer, provisioner: Provisioner, client: CoordinateClient, database_url: str
) -> None:
    await provisioner.assign(member="late", incarnation="1", shards=list(range(SHARDS)))
    with pytest.raises(CoordinateTimeoutError) as caught:
        await client.create_system(system_id="slow", name="s", dimension=2, timeout=0.3)
    key = caught.value.idempotency_key
    assert key
    worker = await start_member(nats_server, provisioner, database_url=database_url, member="late")
    try:
        made = await client.create_system(
            system_id="slow", name="s", dimension=2, idempotency_key=key
        )
        assert made.system_id == "slow"
        assert worker.worker.metrics.dedupe_hits._value.get() == 1
    finally:
        await worker.shutdown()


async def test_no_stream_for_the_subject_is_unavailable(
    nc: Client, provisioner: Provisioner
) -> None:
    async with CoordinateClient(
        nc, shards=SHARDS, prefix="nobody.listens", stream=provisioner.stream, timeout=2
    ) as lonely:
        with pytest.raises(CoordinateUnavailableError, match="no stream answered") as e:
            await lonely.get_system(system_id="x")
        assert not isinstance(e.value, CoordinateTimeoutError)


async def test_a_publish_the_stream_refuses_is_unavailable(
    nc: Client, client: CoordinateClient
) -> None:
    other = f"{client.stream}-other"
    await nc.jetstream().add_stream(
        StreamConfig(name=other, subjects=["other.>"], metadata={STREAM_META_SHARDS: str(SHARDS)})
    )
    async with CoordinateClient(nc, prefix=PREFIX, stream=other, timeout=2) as confused:
        with pytest.raises(CoordinateUnavailableError, match="stream refused") as e:
            await confused.get_system(system_id="x")
        assert not isinstance(e.value, CoordinateTimeoutError)
