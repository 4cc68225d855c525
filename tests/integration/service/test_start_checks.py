"""The worker refuses, at start, what it cannot serve (issues 13 §3 and 15 §3).

Against nats-server 2.9 the worker waited for ever with ``shards []`` while the
operator looped; now it exits at once saying which version it found and which
it needs. A stream whose metadata records another shard count than the
worker's would have every command judged by the wrong N: the worker exits
saying which N to set.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig

from coordshard_client.subjects import STREAM_META_SHARDS, stream_subjects
from coordshard_operator.local.natsserver import NatsServer
from coordshard_service import app
from coordshard_service.errors import ConfigError

from .conftest import PREFIX, SHARDS, Provisioner, worker_settings

pytestmark = pytest.mark.integration


def test_a_worker_on_an_old_server_exits_with_a_clear_message(
    old_nats_server: NatsServer, tmp_path: Path
) -> None:
    args = [
        sys.executable, "-m", "coordshard_service",
        "--nats-url", old_nats_server.url, "--stream", "OLD", "--pod-name", "w-0",
        "--database-url", f"sqlite:///{tmp_path / 'store.db'}", "--no-http-enabled",
    ]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1, done.stderr
    assert "worker failed: nats-server 2.9." in done.stderr
    assert "coordshard needs 2.14.0 or later" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_worker_refuses_a_stream_recording_another_shard_count(
    nats_server: NatsServer, js: JetStreamContext, stream_name: str, tmp_path: Path
) -> None:
    await js.add_stream(
        StreamConfig(
            name=stream_name,
            subjects=stream_subjects(SHARDS * 2, prefix=PREFIX),
            retention=RetentionPolicy.WORK_QUEUE,
            metadata={STREAM_META_SHARDS: str(SHARDS * 2)},
        )
    )
    p = Provisioner(js, stream_name)
    await p.assign(member="w-0", incarnation="1", shards=[0, 1])
    settings = worker_settings(
        nats_server,
        stream=stream_name,
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        member="w-0",
        incarnation="1",
    )
    with pytest.raises(ConfigError, match=rf"records {SHARDS * 2} shards.*shards={SHARDS}"):
        await asyncio.wait_for(app.run(settings, handle_signals=False), 20)
