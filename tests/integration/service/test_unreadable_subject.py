"""A subject that is not UTF-8: dead-lettered with its raw bytes; the worker hears on.

nats-server stores a message whose subject token holds any bytes, and nats-py
decodes every delivered subject as strict UTF-8: the UnicodeDecodeError ended
the worker's reader task, and the worker, still bound and "ready", heard
nothing more. Published here as raw protocol, as a hostile client would.
"""

from __future__ import annotations

import json

import pytest
from nats.js import JetStreamContext

from coordshard_client import CoordinateClient, shard_of
from coordshard_operator.local.natsserver import NatsServer

from .conftest import PREFIX, SHARDS, RunningWorker, raw_publisher, wait_drained, wait_until
from .test_bad_reply import DEAD_LETTER_BOUND, dead_letters

pytestmark = pytest.mark.integration

_SHARD = shard_of("sys", SHARDS)
_RAW_SUBJECT = f"{PREFIX}.{_SHARD}.".encode() + b"sys\xff\xfe.get-system"
_GET = json.dumps({"v": 1, "command": {"op": "get-system", "system_id": "sys"}}).encode()


async def test_a_subject_that_is_not_utf8_is_dead_lettered_and_the_worker_serves_on(
    one_worker: RunningWorker,
    client: CoordinateClient,
    js: JetStreamContext,
    nats_server: NatsServer,
) -> None:
    worker = one_worker.worker
    async with raw_publisher(nats_server) as raw:
        await raw.publish(_RAW_SUBJECT, _GET)
        await raw.flush()

    letters = await dead_letters(worker.store, count=1, timeout=DEAD_LETTER_BOUND)
    assert letters[0].reason.startswith("subject is not UTF-8")
    assert repr(_RAW_SUBJECT) in letters[0].reason, "the raw subject bytes are kept"
    assert letters[0].subject == _RAW_SUBJECT.decode("utf-8", "backslashreplace")
    assert letters[0].data == _GET

    other = next(f"s{i}" for i in range(100) if shard_of(f"s{i}", SHARDS) != _SHARD)
    await client.create_system(system_id=other, name="other shard", dimension=2)
    await client.create_system(system_id="sys", name="same shard", dimension=2)
    assert worker.nc.is_connected and worker.bound
    await wait_drained(js, worker.settings.stream)
    await wait_until(lambda: worker.metrics.dead_letters._value.get() == 1)
