"""Each role works under exactly the permissions ``coordshard_client.permissions`` gives.

One server, three nkey users: the worker, the operator (its JetStream calls,
made through the rebalancer's own ``JetStreamApi``) and a gateway (the SDK).
Every path is used: commands and replies, acks, a dead letter, and the
operator's whole hand-off vocabulary. And the limits hold: the gateway
cannot read a consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from coordshard_client import CoordinateClient, Translate, shard_filter, shard_of
from coordshard_client.messages import HEADER_REPLY, Outcome
from coordshard_client.naming import member_id
from coordshard_client.permissions import (
    gateway_permissions,
    operator_permissions,
    server_config,
    worker_permissions,
)
from coordshard_operator.local.natsserver import NatsServer, start_server
from coordshard_operator.rebalancer.jetstream import JetStreamApi, consumer_config, stream_config
from coordshard_operator.testing.users import new_user_seed, public_key

from .conftest import GROUP, PREFIX, SHARDS, start_worker, wait_until, worker_settings
from .test_bad_reply import dead_letters

pytestmark = pytest.mark.integration

STREAM = "PERMS"


@pytest.fixture
def seeds() -> dict[str, bytes]:
    return {role: new_user_seed() for role in ("worker", "operator", "gateway")}


@pytest.fixture
def secured(tmp_path: Path, seeds: dict[str, bytes]) -> Iterator[NatsServer]:
    config = server_config(
        {
            public_key(seeds["worker"]): worker_permissions(stream=STREAM),
            public_key(seeds["operator"]): operator_permissions(streams=(STREAM,)),
            public_key(seeds["gateway"]): gateway_permissions(prefix=PREFIX, stream=STREAM),
        }
    )
    server = start_server(tmp_path / "nats", extra_config=config)
    yield server
    server.kill()


async def _connect(server: NatsServer, seed: bytes) -> Client:
    return await nats.connect(server.url, nkeys_seed_str=seed.decode(), max_reconnect_attempts=1)


async def test_each_role_serves_everything_under_exactly_its_permissions(
    secured: NatsServer, seeds: dict[str, bytes], tmp_path: Path
) -> None:
    operator_nc = await _connect(secured, seeds["operator"])
    gateway_nc = await _connect(secured, seeds["gateway"])
    (tmp_path / "worker.nk").write_bytes(seeds["worker"])
    try:
        api = JetStreamApi(operator_nc.jetstream())
        await api.ensure_stream(
            stream_config(
                name=STREAM, subject_prefix=PREFIX, replicas=1, duplicate_window_s=60, shards=SHARDS
            )
        )
        name = member_id(group=GROUP, member="w", incarnation="1")
        await api.put_consumer(
            STREAM,
            consumer_config(
                name=name,
                filter_subjects=[shard_filter(s, prefix=PREFIX) for s in range(SHARDS)],
                ack_wait_s=30,
                max_ack_pending=1000,
                max_deliver=20,
                metadata={},
            ),
        )
        settings = worker_settings(
            secured,
            stream=STREAM,
            database_url=f"sqlite:///{tmp_path / 'store.db'}",
            member="w",
            incarnation="1",
            nats_nkey_seed=str(tmp_path / "worker.nk"),
        )
        running = await start_worker(settings)
        try:
            await wait_until(lambda: running.worker.bound)
            async with CoordinateClient(
                gateway_nc, shards=SHARDS, prefix=PREFIX, stream=STREAM, timeout=10
            ) as client:
                await client.create_system(system_id="s1", name="perms", dimension=2)
                await client.create_point(system_id="s1", point_id="p", coordinates=(0, 0))
                moved = await client.move_point(
                    system_id="s1", point_id="p", moves=[Translate(delta=(1, 2))]
                )
                assert moved.coordinates == (1.0, 2.0)

            # A bad command: answered on the gateway's inbox, dead-lettered, terminated.
            answered: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

            async def on_reply(msg: Msg) -> None:
                answered.set_result(Outcome.model_validate_json(msg.data))

            inbox = gateway_nc.new_inbox()
            await gateway_nc.subscribe(inbox, cb=on_reply)
            shard = shard_of("s1", SHARDS)
            await gateway_nc.publish(
                f"{PREFIX}.{shard}.s1.get-system", b"{not json", headers={HEADER_REPLY: inbox}
            )
            outcome = await asyncio.wait_for(answered, 10)
            assert outcome.error is not None and "malformed JSON" in outcome.error.message
            await dead_letters(running.worker.store, count=1, timeout=5)

            # Every message acked or terminated: the stream drains.
            async def drained() -> bool:
                return (await api.stream_info(STREAM)).state.messages == 0

            deadline = asyncio.get_running_loop().time() + 5
            while not await drained():
                assert asyncio.get_running_loop().time() < deadline, "stream did not drain"
                await asyncio.sleep(0.05)

            # The gateway may not read consumers.
            with pytest.raises((TimeoutError, nats.errors.Error)):
                await gateway_nc.jetstream(timeout=1).consumer_info(STREAM, name)

            # The operator's hand-off calls, all of them, on the worker's consumer.
            assert [c.name for c in await api.consumers(STREAM)] == [name]
            assert (await api.consumer_info(STREAM, name)) is not None
            await api.pause_consumer(STREAM, name, for_s=30)
            await api.resume_consumer(STREAM, name)
            await api.reset_consumer(STREAM, name, seq=1)
            await api.delete_consumer(STREAM, name)
            await wait_until(lambda: not running.worker.bound)  # fenced, as in a hand-off
        finally:
            await running.shutdown()
    finally:
        await gateway_nc.close()
        await operator_nc.close()
