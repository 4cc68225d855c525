"""Bad reply subjects: dead-lettered, never published, and the worker serves on.

The reply header names the subject the worker publishes the outcome to. One
that nats-server would close the connection for (longer than its control-line
limit), one nats-py refuses (whitespace), and one outside the reply prefix
(our own command subjects, another stream's) are each refused at decode:
dead-lettered, not answered. And a reply that fails to go out anyway is
skipped and counted while the message is still acked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from coordshard_client import CoordinateClient, shard_of
from coordshard_client.messages import HEADER_REPLY, Outcome
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service.consuming import settle
from coordshard_service.decoding import decode
from coordshard_service.metrics import Metrics
from coordshard_service.pulling import Puller
from coordshard_service.store import DeadLetter, Store

from .conftest import (
    PREFIX,
    SHARDS,
    Provisioner,
    RunningWorker,
    wait_drained,
    wait_until,
    worker_settings,
)

pytestmark = pytest.mark.integration

_SHARD = shard_of("sys", SHARDS)
_SUBJECT = f"{PREFIX}.{_SHARD}.sys.get-system"
_GET = json.dumps({"v": 1, "command": {"op": "get-system", "system_id": "sys"}}).encode()
_OTHER_STREAM = "OTHERGROUP"
_OTHER_PREFIX = "other.cmd"
DEAD_LETTER_BOUND = 5.0
"""Seconds within which a bad message must be a dead letter."""


def _on_another_shard() -> str:
    return next(f"s{i}" for i in range(100) if shard_of(f"s{i}", SHARDS) != _SHARD)


async def dead_letters(store: Store, *, count: int, timeout: float) -> list[DeadLetter]:
    """The store's dead letters once there are ``count`` of them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        letters = await asyncio.to_thread(store.dead_letters)
        if len(letters) >= count:
            return letters
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(letters)} dead letters within {timeout}s, not {count}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param("_INBOX.abc." + "r" * 5000, id="5000-chars"),
        pytest.param("_INBOX.abc.a b", id="whitespace"),
        pytest.param("_INBOX.abc..x", id="empty-token"),
        pytest.param("_INBOX.abc.>", id="wildcard"),
        pytest.param(_SUBJECT, id="own-command-subject"),
        pytest.param(f"{_OTHER_PREFIX}.0.sys.get-system", id="another-stream"),
    ],
)
async def test_a_bad_reply_is_dead_lettered_not_published_and_the_worker_serves_on(
    one_worker: RunningWorker,
    client: CoordinateClient,
    nc: Client,
    js: JetStreamContext,
    reply: str,
) -> None:
    await js.add_stream(StreamConfig(name=_OTHER_STREAM, subjects=[_OTHER_PREFIX + ".>"]))
    worker = one_worker.worker
    ack = await js.publish(_SUBJECT, _GET, headers={HEADER_REPLY: reply})

    letters = await dead_letters(worker.store, count=1, timeout=DEAD_LETTER_BOUND)
    assert [(d.stream_seq, d.subject) for d in letters] == [(ack.seq, _SUBJECT)]
    assert "bad reply subject" in letters[0].reason and letters[0].data == _GET
    assert letters[0].headers[HEADER_REPLY] == reply

    # The connection lives and every shard is served, this one and the others.
    assert worker.nc.is_connected and worker.bound
    await client.create_system(system_id="sys", name="same shard", dimension=2)
    await client.create_system(system_id=_on_another_shard(), name="other shard", dimension=2)

    # Nothing was published to the bad reply: no outcome in the other group's
    # stream, none back on our own command subject (it would be a second dead letter).
    assert (await js.stream_info(_OTHER_STREAM)).state.messages == 0
    assert len(await asyncio.to_thread(worker.store.dead_letters)) == 1
    await wait_drained(js, worker.settings.stream)
    await wait_until(lambda: worker.metrics.dead_letters._value.get() == 1)


async def test_a_reply_that_cannot_be_sent_is_counted_and_the_message_still_acked(
    nats_server: NatsServer, nc: Client, provisioner: Provisioner, tmp_path: Path
) -> None:
    """The second line of defence: settle skips a reply nats-py refuses, and acks."""
    name = await provisioner.assign(member="w", incarnation="1", shards=list(range(SHARDS)))
    settings = worker_settings(
        nats_server,
        stream=provisioner.stream,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        member="w",
        incarnation="1",
    )
    metrics = Metrics()
    await nc.jetstream().publish(_SUBJECT, _GET)
    puller = Puller(nc, stream=provisioner.stream, consumer=name)
    await puller.start()
    try:
        [msg] = await puller.fetch(1, timeout=5)
    finally:
        await puller.stop()
    item = decode(
        msg, prefix=PREFIX, shards=SHARDS, max_payload=settings.max_payload, stream="S@test"
    )
    item = dataclasses.replace(item, reply="_INBOX.abc.a b")  # as if decode had let it by

    await settle(
        nc, msg, item, Outcome(ok=True, stream_seq=item.stream_seq), metrics=metrics, sync=True
    )

    assert metrics.reply_failures._value.get() == 1
    info = await nc.jetstream().consumer_info(provisioner.stream, name)
    assert (info.num_ack_pending, info.num_pending) == (0, 0)
