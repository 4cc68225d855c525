"""``CoordinateClient.start()`` names a configuration mistake instead of timing out on
every call (issue 15 §3): no such stream, a shard count other than the group's, a
server that is down.
"""

from __future__ import annotations

import logging
import time

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig

from coordshard_client import (
    CoordinateClient,
    CoordinateConfigError,
    CoordinateUnavailableError,
)
from coordshard_client.subjects import STREAM_META_SHARDS, stream_subjects
from coordshard_operator.local.natsserver import NatsServer, free_port

from .conftest import PREFIX, SHARDS, Provisioner

pytestmark = pytest.mark.integration


async def test_a_stream_that_does_not_exist_is_a_configuration_error_naming_it(
    nats_server: NatsServer, js: JetStreamContext
) -> None:
    with pytest.raises(CoordinateConfigError, match=r"stream 'NOPE' does not exist") as refused:
        async with CoordinateClient.connect(servers=[nats_server.url], stream="NOPE", timeout=2):
            pass
    assert refused.value.stream == "NOPE"
    assert not isinstance(refused.value, CoordinateUnavailableError)  # not a retryable one


async def test_shards_other_than_the_recorded_count_are_refused(
    nc: Client, js: JetStreamContext, stream_name: str
) -> None:
    await js.add_stream(
        StreamConfig(
            name=stream_name,
            subjects=stream_subjects(SHARDS, prefix=PREFIX),
            retention=RetentionPolicy.WORK_QUEUE,
            metadata={STREAM_META_SHARDS: str(SHARDS)},
        )
    )
    client = CoordinateClient(nc, shards=SHARDS * 2, prefix=PREFIX, stream=stream_name)
    with pytest.raises(CoordinateConfigError, match=rf"shards={SHARDS * 2}.*group of {SHARDS}"):
        await client.start()
    async with CoordinateClient(nc, prefix=PREFIX, stream=stream_name) as taken:
        assert taken.shards == SHARDS  # shards= left out: the stream's


async def test_a_stream_made_before_the_count_was_recorded_gives_it_by_its_subjects(
    nc: Client, provisioner: Provisioner
) -> None:
    # The provisioner's stream has no metadata, only the shards' subjects.
    async with CoordinateClient(nc, prefix=PREFIX, stream=provisioner.stream) as client:
        assert client.shards == SHARDS
    with pytest.raises(CoordinateConfigError, match=rf"group of {SHARDS} shards"):
        async with CoordinateClient(nc, shards=3, prefix=PREFIX, stream=provisioner.stream):
            pass


async def test_connecting_to_a_closed_port_fails_within_the_timeout_without_a_traceback(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(CoordinateUnavailableError, match=r"no connection within 1.0s"):
        async with CoordinateClient.connect(servers=[url], timeout=1.0):
            pass
    took = time.monotonic() - started
    assert took < 3.0, took
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    assert all(r.exc_info is None for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
