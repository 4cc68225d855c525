"""A worker waiting for its consumer says what to check.

It may wait for ever with nothing wrong on its side: the rebalancer makes
consumers only for the Ready pods its CoordinateShards selects. The line it
logs on starting to wait tells the two cases apart by what the stream lists:
no consumer of the group at all (is the operator running, for this group and
stream?) or only other members' (do this pod's labels match the selector?).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from coordshard_operator.local.natsserver import NatsServer

from .conftest import SHARDS, Provisioner, start_worker, wait_until, worker_settings

pytestmark = pytest.mark.integration


def waiting_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("waiting for a consumer of")
    ]


@pytest.mark.parametrize(
    ("others", "says"),
    [
        pytest.param(False, "check that the operator (or `coordshard up`) is running", id="none"),
        pytest.param(True, "labels match the CoordinateShards' spec.selector", id="others"),
    ],
)
async def test_a_waiting_worker_says_what_to_check_and_binds_once_its_consumer_comes(
    nats_server: NatsServer,
    provisioner: Provisioner,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    others: bool,
    says: str,
) -> None:
    caplog.set_level(logging.INFO, logger="coordshard_service")
    if others:
        await provisioner.assign(member="other", incarnation="1", shards=list(range(1, SHARDS)))
    settings = worker_settings(
        nats_server,
        stream=provisioner.stream,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        member="w",
        incarnation="1",
    )
    running = await start_worker(settings)
    try:
        await wait_until(lambda: waiting_lines(caplog))
        (line,) = waiting_lines(caplog)
        assert says in line
        assert f"stream {provisioner.stream}" in line and "coordinate" in line
        await provisioner.assign(member="w", incarnation="1", shards=[0])
        await wait_until(lambda: running.worker.bound)
    finally:
        await running.shutdown()
