"""A message on its last delivery is dead-lettered before it is processed.

The max-deliveries advisory (test_given_up.py) is a core NATS message: sent
while no worker of the consumer is connected, it is lost, and the message,
past ``max_deliver``, stays in the work queue with no owner. So the worker does
not wait for it: a delivery whose count has reached the consumer's
``max_deliver`` is kept as a dead letter and terminated before anything else
of its batch is done, valid or not.

Here the earlier deliveries go to a raw pull that never acks while the one
worker is stopped (SIGSTOP, so it is not bound anew: a new bind would rewind
the consumer, which starts the delivery counts afresh). No advisory is ever
sent: the worker gets the last delivery itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from coordshard_client import CoordinateClient, CoordinateNotFoundError, command_subject
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service.store import Store

from ..conftest import process_stopped
from .conftest import (
    PREFIX,
    SHARDS,
    Provisioner,
    spawn_worker,
    wait_drained,
    wait_until,
)

pytestmark = pytest.mark.integration

MAX_DELIVER = 3
SYSTEM = "last"
_CREATE = json.dumps(
    {"v": 1, "command": {"op": "create-system", "system_id": SYSTEM, "name": "n", "dimension": 2}}
).encode()
_POISON = b"\xff\xfe not json, not UTF-8 \x00"


async def consumer_waiting(js: JetStreamContext, stream: str, consumer: str) -> int:
    """Pull requests the consumer holds (a bound worker keeps one open)."""
    return int((await js.consumer_info(stream, consumer)).num_waiting or 0)


@pytest.mark.parametrize(
    "payload",
    [pytest.param(_CREATE, id="valid"), pytest.param(_POISON, id="unreadable")],
)
async def test_a_last_delivery_is_dead_lettered_unprocessed_and_the_stream_drains(
    nats_server: NatsServer,
    nc: Client,
    js: JetStreamContext,
    provisioner: Provisioner,
    database_url: str,
    tmp_path: Path,
    payload: bytes,
) -> None:
    stream = provisioner.stream
    name = await provisioner.assign(
        member="w",
        incarnation="1",
        shards=list(range(SHARDS)),
        ack_wait=0.5,
        max_deliver=MAX_DELIVER,
    )
    log = tmp_path / "w.log"
    proc = spawn_worker(nats_server, stream=stream, database_url=database_url, member="w", log=log)
    try:
        await wait_until(lambda: consumer_waiting(js, stream, name), timeout=20)  # it pulls
        os.kill(proc.pid, signal.SIGSTOP)
        await wait_until(lambda: process_stopped(proc.pid), timeout=2)
        # Its last pull expires (fetch timeout 0.2 s): nothing more can reach it.
        await wait_until(lambda: not_waiting(js, stream, name), timeout=5)

        subject = str(command_subject(system_id=SYSTEM, op="create-system", shards=SHARDS))
        ack = await js.publish(subject, payload)
        raw = await js.pull_subscribe_bind(name, stream)
        counts: list[int] = []
        while len(counts) < MAX_DELIVER - 1:  # each comes back after ack_wait, never acked
            counts += [m.metadata.num_delivered for m in await raw.fetch(1, timeout=5)]
        assert counts == list(range(1, MAX_DELIVER))
        await raw.unsubscribe()

        os.kill(proc.pid, signal.SIGCONT)  # the worker takes the last delivery
        await wait_drained(js, stream, timeout=10)
        store = Store(database_url)
        try:
            letters = store.dead_letters()
        finally:
            store.dispose()
        assert [(d.stream_seq, d.subject, d.data) for d in letters] == [
            (ack.seq, subject, payload)
        ], log.read_text()[-2000:]
        assert letters[0].reason == f"given up after {MAX_DELIVER} deliveries"
        async with CoordinateClient(
            nc, shards=SHARDS, prefix=PREFIX, stream=stream, timeout=10
        ) as client:
            with pytest.raises(CoordinateNotFoundError):  # it was not applied
                await client.get_system(system_id=SYSTEM)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)


async def not_waiting(js: JetStreamContext, stream: str, consumer: str) -> bool:
    return await consumer_waiting(js, stream, consumer) == 0
