"""The last resort (issue 17 §1): a message its consumer gave up on ends as a dead letter.

A consumer with ``max_deliver`` stops delivering a message after that many
unacked deliveries; on a work-queue stream the message then stays for ever
unless someone moves it. The worker does, on the server's max-deliveries
advisory: the raw message goes into the dead-letter store, then out of the
stream. The subscriber below never acks, as a worker that dies or wedges on
a message would not; it keeps pulling, as a worker does (the server gives up
on a message when it would deliver it again, to a waiting pull).
"""

from __future__ import annotations

import asyncio
import json

import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from coordshard_client import shard_filter
from coordshard_client.naming import member_id
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service.advisories import GiveUps, advisory_subject
from coordshard_service.metrics import Metrics
from coordshard_service.store import Store

from .conftest import GROUP, PREFIX, Provisioner, start_member, wait_until

pytestmark = pytest.mark.integration

POISON = b"\xff\xfe not json, not UTF-8 \x00"


async def stream_messages(js: JetStreamContext, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


async def test_a_message_never_acked_ends_as_a_dead_letter_and_leaves_the_stream(
    nc: Client, js: JetStreamContext, provisioner: Provisioner, database_url: str
) -> None:
    store = Store(database_url)
    store.migrate()
    name = member_id(group=GROUP, member="w1", incarnation="1")
    await js.add_consumer(
        provisioner.stream,
        ConsumerConfig(
            durable_name=name,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subjects=[shard_filter(0, prefix=PREFIX)],
            ack_wait=0.3,
            max_deliver=2,
        ),
    )
    metrics = Metrics()
    give_ups = GiveUps(nc, stream=provisioner.stream, member=name, store=store, metrics=metrics)
    await give_ups.start()
    try:
        subject = f"{PREFIX}.0.sys-x.get-point"
        ack = await js.publish(subject, POISON, headers={"X-Poison": "yes"})
        psub = await js.pull_subscribe_bind(name, provisioner.stream)
        deliveries = []
        while len(deliveries) < 2:  # each one comes back after ack_wait, never acked
            deliveries += await psub.fetch(1, timeout=5)
        assert [m.metadata.num_delivered for m in deliveries] == [1, 2]
        # The server gives up when it would deliver a third time: to a pull that waits.
        with pytest.raises(nats.errors.TimeoutError):
            await psub.fetch(1, timeout=1)

        async def moved() -> bool:
            return bool(store.dead_letters()) and await stream_messages(js, provisioner.stream) == 0

        deadline = asyncio.get_running_loop().time() + 10
        while not await moved():
            assert asyncio.get_running_loop().time() < deadline, (
                f"still in the stream: {await stream_messages(js, provisioner.stream)} message(s),"
                f" dead letters {store.dead_letters()}"
            )
            await asyncio.sleep(0.02)
        [letter] = store.dead_letters()
        assert (letter.stream_seq, letter.subject, letter.data) == (ack.seq, subject, POISON)
        assert letter.headers.get("X-Poison") == "yes"
        assert "delivered 2 times" in letter.reason
        assert metrics.given_up._value.get() == 1
    finally:
        await give_ups.stop()
        store.dispose()


async def test_the_worker_listens_for_its_consumers_advisories(
    nats_server: NatsServer, nc: Client, provisioner: Provisioner, database_url: str
) -> None:
    """The wiring: a worker run by ``app.run`` moves what the server says it gave up on.

    The advisory is published by hand here (the real one is the test above), for a
    message on a shard this worker does not own, so nothing else can settle it.
    """
    js = nc.jetstream()
    name = await provisioner.assign(member="w1", incarnation="1", shards=[1])
    running = await start_member(
        nats_server, provisioner, database_url=database_url, member="w1", incarnation="1"
    )
    try:
        await wait_until(lambda: running.worker.bound)
        ack = await js.publish(f"{PREFIX}.0.sys-y.get-point", POISON)
        advisory = {"stream": provisioner.stream, "consumer": name, "stream_seq": ack.seq}
        await nc.publish(
            advisory_subject(stream=provisioner.stream, consumer=name),
            json.dumps({**advisory, "deliveries": 20}).encode(),
        )
        deadline = asyncio.get_running_loop().time() + 10
        while await stream_messages(js, provisioner.stream):
            assert asyncio.get_running_loop().time() < deadline, "the message stayed"
            await asyncio.sleep(0.02)
        # Counted just after the delete's answer, which can reach us after the drain.
        await wait_until(lambda: running.worker.metrics.given_up._value.get() == 1)
    finally:
        await running.shutdown()
    store = Store(database_url)
    try:
        assert [(d.stream_seq, d.data) for d in store.dead_letters()] == [(ack.seq, POISON)]
    finally:
        store.dispose()
