"""The SDK returns an outcome only if it answers its own command.

The stream's publish ack says where our message was stored; the outcome says
which message produced it. A reply from a worker of another stream or group
(here forged by the test, on the client's real reply subject) is refused with
``CoordinateMismatchError``, and a retry with the same key gets the real answer.

The orderings (the outcome before the ack, a duplicate's replay) cannot be forced
on a real stream, so the second test plays the stream's part itself on a real
server: it receives the publish on a plain subscription and sends the ack and
the outcome in the order each case needs, in the stream's ack format.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg, StreamConfig
from nats.js.errors import NotFoundError

from coordshard_client import CoordinateClient, CoordinateMismatchError, System
from coordshard_client.messages import HEADER_REPLY, Outcome
from coordshard_client.subjects import STREAM_META_SHARDS
from coordshard_operator.local.natsserver import NatsServer

from .conftest import PREFIX, SHARDS, Provisioner, start_member

pytestmark = pytest.mark.integration

SYSTEM = System(system_id="s", name="n", dimension=2, units="m")


def _outcome(seq: int, *, replayed: bool = False) -> bytes:
    answer = Outcome(ok=True, result=SYSTEM, stream_seq=seq, replayed=replayed)
    return answer.model_dump_json(exclude_none=True).encode()


async def test_a_forged_outcome_from_another_stream_is_refused_and_a_retry_gets_the_real_one(
    nats_server: NatsServer,
    nc: Client,
    js: JetStreamContext,
    provisioner: Provisioner,
    database_url: str,
) -> None:
    async with CoordinateClient(
        nc, shards=SHARDS, prefix=PREFIX, stream=provisioner.stream, timeout=10
    ) as client:
        call = asyncio.create_task(
            client.create_system(system_id="s", name="n", dimension=2, idempotency_key="k")
        )
        # No worker yet: the command waits in the stream, where its reply subject is.
        stored = await _first_message(js, provisioner.stream)
        assert stored.headers is not None
        await nc.publish(stored.headers[HEADER_REPLY], _outcome(stored.seq + 40))
        with pytest.raises(CoordinateMismatchError) as refused:
            await call
        assert refused.value.stream_seq == stored.seq + 40
        assert refused.value.expected == (stored.seq,)
        assert refused.value.idempotency_key == "k"

        await provisioner.assign(member="w1", incarnation="i1", shards=list(range(SHARDS)))
        worker = await start_member(
            nats_server, provisioner, database_url=database_url, member="w1", incarnation="i1"
        )
        try:
            again = await client.create_system(
                system_id="s", name="n", dimension=2, idempotency_key="k"
            )
            assert again == SYSTEM
            assert (await client.get_system(system_id="s")) == SYSTEM
        finally:
            await worker.shutdown()


async def _first_message(js: JetStreamContext, stream: str) -> RawStreamMsg:
    """The stream's first message, once it is there."""
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        try:
            return await js.get_msg(stream, seq=1)
        except NotFoundError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.01)


class _Stream:
    """The test in the stream's place: takes each publish, acks and answers it as told."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.received: asyncio.Queue[Msg] = asyncio.Queue()

    async def start(self) -> None:
        await self.nc.subscribe(PREFIX + ".>", cb=self.received.put)

    async def next(self) -> Msg:
        return await asyncio.wait_for(self.received.get(), 5)

    async def ack(self, msg: Msg, seq: int, *, duplicate: bool = False) -> None:
        body = {"stream": "S", "seq": seq} | ({"duplicate": True} if duplicate else {})
        await self.nc.publish(msg.reply, json.dumps(body).encode())
        await self.nc.flush()

    async def answer(self, msg: Msg, body: bytes) -> None:
        assert msg.headers is not None
        await self.nc.publish(msg.headers[HEADER_REPLY], body)
        await self.nc.flush()


@pytest.mark.parametrize(
    ("steps", "accepted"),
    [
        pytest.param([("ack", 7), ("outcome", 7)], True, id="ack-then-own-outcome"),
        pytest.param([("outcome", 7), ("ack", 7)], True, id="own-outcome-before-its-ack"),
        pytest.param([("ack", 7), ("outcome", 9)], False, id="ack-then-other-outcome"),
        pytest.param([("outcome", 9), ("ack", 7)], False, id="other-outcome-before-the-ack"),
        # A retry after the duplicate window, or on an earlier stream: answered from
        # the outcome stored under its key, which names that publish's sequence.
        pytest.param([("ack", 12), ("replayed", 2)], True, id="replayed-from-an-earlier-publish"),
        # A duplicate: the ack names the original, and a replay is published behind it.
        pytest.param(
            [("duplicate", 3), ("ack-replay", 12), ("replayed", 3)], True, id="duplicate-replayed"
        ),
        pytest.param(
            [("duplicate", 3), ("outcome-replay", 12), ("ack-replay", 12)],
            True,
            id="duplicate-whose-replay-was-applied-answered-before-its-ack",
        ),
        pytest.param(
            [("duplicate", 3), ("ack-replay", 12), ("outcome-replay", 13)],
            False,
            id="duplicate-answered-by-another-message",
        ),
    ],
)
async def test_an_outcome_is_taken_only_for_the_sequence_its_command_was_stored_at(
    nc: Client, js: JetStreamContext, steps: list[tuple[str, int]], accepted: bool
) -> None:
    # A real stream "S" for the client's start-up check (it records the shard count);
    # it takes none of the commands' subjects: the test plays that stream's part.
    await js.add_stream(
        StreamConfig(name="S", subjects=["unused.>"], metadata={STREAM_META_SHARDS: str(SHARDS)})
    )
    stream = _Stream(nc)
    await stream.start()
    async with CoordinateClient(nc, shards=SHARDS, prefix=PREFIX, stream="S", timeout=5) as client:
        call = asyncio.create_task(client.create_system(system_id="s", name="n", dimension=2))
        first = await stream.next()
        replay: Msg | None = None
        for step, seq in steps:
            if step == "duplicate":
                await stream.ack(first, seq, duplicate=True)
                replay = await stream.next()
                assert replay.headers is not None and first.headers is not None
                assert replay.headers["Nats-Msg-Id"] != first.headers["Nats-Msg-Id"]
            elif step == "ack":
                await stream.ack(first, seq)
            elif step == "ack-replay":
                assert replay is not None
                await stream.ack(replay, seq)
            elif step == "outcome":
                await stream.answer(first, _outcome(seq))
            elif step == "outcome-replay":
                assert replay is not None
                await stream.answer(replay, _outcome(seq))
            else:
                await stream.answer(replay or first, _outcome(seq, replayed=True))
        if accepted:
            assert await call == SYSTEM
        else:
            with pytest.raises(CoordinateMismatchError):
                await call
