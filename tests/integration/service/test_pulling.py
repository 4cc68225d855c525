"""The worker's hand-made pull requests against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from coordshard_service.pulling import Puller, PullError

pytestmark = pytest.mark.integration

CONSUMER = "c"
ROUNDS = 20


@pytest.fixture
async def puller(nc: Client, js: JetStreamContext, stream_name: str) -> AsyncIterator[Puller]:
    await js.add_stream(
        StreamConfig(
            name=stream_name, subjects=[f"{stream_name}.>"], retention=RetentionPolicy.WORK_QUEUE
        )
    )
    await js.add_consumer(
        stream_name, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT)
    )
    p = Puller(nc, stream=stream_name, consumer=CONSUMER)
    await p.start()
    yield p
    await p.stop()


async def test_waiting_messages_come_in_order_one_batch_at_a_time(
    js: JetStreamContext, stream_name: str, puller: Puller
) -> None:
    for i in range(25):
        await js.publish(f"{stream_name}.s.{i % 3}", str(i).encode())
    first = await puller.fetch(10, timeout=5)
    second = await puller.fetch(10, timeout=5)
    third = await puller.fetch(10, timeout=5)
    got = [int(m.data) for m in first + second + third]
    assert [len(first), len(second), len(third)] == [10, 10, 5]
    assert got == list(range(25))
    assert all(m.metadata.sequence.stream == n + 1 for n, m in enumerate(first + second + third))


async def test_a_lone_arrival_is_handed_over_without_waiting_for_the_batch_or_expiry(
    js: JetStreamContext, stream_name: str, puller: Puller
) -> None:
    waiting = asyncio.create_task(puller.fetch(100, timeout=60))
    await asyncio.sleep(0)  # let the request go out before the message does
    await js.publish(f"{stream_name}.s.1", b"lone")
    got = await asyncio.wait_for(waiting, 20)  # a lingering pull would hold it for 60 s
    assert [m.data for m in got] == [b"lone"]


async def test_nothing_waiting_gives_an_empty_batch_and_the_next_request_works(
    js: JetStreamContext, stream_name: str, puller: Puller
) -> None:
    assert await puller.fetch(10, timeout=0.2) == []
    await js.publish(f"{stream_name}.s.1", b"after")
    assert [m.data for m in await puller.fetch(10, timeout=5)] == [b"after"]


async def test_a_delivery_with_a_status_header_is_still_a_delivery(
    js: JetStreamContext, stream_name: str, puller: Puller
) -> None:
    await js.publish(
        f"{stream_name}.s.1",
        b"forged",
        headers={"Status": "409", "Description": "Consumer Deleted"},
    )
    got = await puller.fetch(10, timeout=5)
    assert [m.data for m in got] == [b"forged"]


async def test_a_deleted_consumer_is_reported_not_waited_on(
    js: JetStreamContext, stream_name: str, puller: Puller
) -> None:
    open_request = asyncio.create_task(puller.fetch(10, timeout=60))
    # The consumer goes while it holds our request (one deleted before the server
    # registered it would be lost silently, and end at the local deadline).
    deadline = asyncio.get_running_loop().time() + 20
    while (await js.consumer_info(stream_name, CONSUMER)).num_waiting != 1:
        assert asyncio.get_running_loop().time() < deadline, "request never registered"
        await asyncio.sleep(0.01)
    await js.delete_consumer(stream_name, CONSUMER)
    with pytest.raises(PullError) as cut:
        await asyncio.wait_for(open_request, 20)
    assert cut.value.status == "409"
    with pytest.raises(PullError) as refused:
        await asyncio.wait_for(puller.fetch(10, timeout=60), 20)
    assert refused.value.status == "503"  # no consumer answers the next request


async def test_a_fetch_cancelled_as_its_answer_arrives_is_cancelled(
    nc: Client, js: JetStreamContext, stream_name: str, puller: Puller
) -> None:
    """A lane's task is cancelled to end it (an error, a cancelled worker). On Python 3.11
    ``asyncio.wait_for`` returns the result instead when what it waits on finishes in the
    same turn of the loop as the cancel, and the lane then runs on, so the worker's wait
    for it never ends. Here the cancel comes from a callback on the same delivery."""
    fetching: asyncio.Task[list[Any]] | None = None
    cancels: list[bool] = []
    seen = asyncio.Event()

    async def cancel_it(msg: Any) -> None:
        if fetching is not None and msg.reply:  # a delivery, not a status or a publish ack
            await asyncio.sleep(0)  # a turn later: the puller has had it too
            cancels.append(fetching.cancel())  # False: the fetch had already returned
            seen.set()

    swallowed = 0
    for i in range(ROUNDS):
        p = Puller(nc, stream=stream_name, consumer=CONSUMER)  # nothing left from the last
        await p.start()
        spy = await nc.subscribe("_INBOX.>", cb=cancel_it)
        seen.clear()
        fetching = asyncio.create_task(p.fetch(1, timeout=30))
        await asyncio.sleep(0)  # the request goes out first
        await js.publish(f"{stream_name}.s.{i}", b"x")
        done, _ = await asyncio.wait([fetching], timeout=10)
        assert done, "the fetch neither answered nor ended"
        await asyncio.wait_for(seen.wait(), 10)
        swallowed += cancels[-1] and not fetching.cancelled()
        await spy.unsubscribe()
        await p.stop()
    assert sum(cancels) >= ROUNDS // 10, f"only {sum(cancels)} cancels came while it waited"
    assert swallowed == 0, f"{swallowed} of {sum(cancels)} cancels were swallowed"
