"""Bad input: answered, kept as a dead letter and terminated; the worker serves on."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from coordshard_client import CoordinateClient, shard_of
from coordshard_client.messages import HEADER_REPLY, Outcome
from coordshard_service.store import Store

from .conftest import PREFIX, SHARDS, RunningWorker, wait_until

pytestmark = pytest.mark.integration

_GOOD_SHARD = shard_of("sys", SHARDS)
_OTHER_SHARD = (_GOOD_SHARD + 1) % SHARDS
_VALID = {
    "v": 1,
    "command": {"op": "create-system", "system_id": "sys", "name": "n", "dimension": 2},
}


@pytest.mark.parametrize(
    ("subject", "payload", "reason"),
    [
        pytest.param(
            f"{PREFIX}.{_GOOD_SHARD}.sys.create-system", b"{not json", "malformed JSON", id="json"
        ),
        pytest.param(
            f"{PREFIX}.{_GOOD_SHARD}.sys.explode",
            json.dumps({"v": 1, "command": {"op": "explode", "system_id": "sys"}}).encode(),
            "unknown op",
            id="unknown-op",
        ),
        pytest.param(
            f"{PREFIX}.{_GOOD_SHARD}.sys.create-system",
            json.dumps(
                {"v": 1, "command": {**_VALID["command"], "dimension": 5}}  # type: ignore[dict-item]
            ).encode(),
            "schema-invalid",
            id="schema",
        ),
        pytest.param(
            f"{PREFIX}.{_GOOD_SHARD}.sys.create-system",
            json.dumps({**_VALID, "padding": "x" * 70_000}).encode(),
            "oversize",
            id="oversize",
        ),
        pytest.param(
            f"{PREFIX}.{_OTHER_SHARD}.sys.create-system",
            json.dumps(_VALID).encode(),
            "wrong shard",
            id="wrong-shard",
        ),
        pytest.param(
            f"{PREFIX}.{_GOOD_SHARD}.sys.delete-system",
            json.dumps(_VALID).encode(),
            "subject says delete-system",
            id="subject-mismatch",
        ),
    ],
)
async def test_bad_input_is_answered_dead_lettered_and_terminated(
    one_worker: RunningWorker,
    client: CoordinateClient,
    nc: Client,
    subject: str,
    payload: bytes,
    reason: str,
) -> None:
    answered: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

    async def on_reply(msg: Msg) -> None:
        answered.set_result(Outcome.model_validate_json(msg.data))

    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=on_reply)
    ack = await nc.jetstream().publish(subject, payload, headers={HEADER_REPLY: inbox})

    outcome = await asyncio.wait_for(answered, 10)
    assert not outcome.ok and outcome.error is not None
    assert outcome.error.code == "validation" and reason in outcome.error.message
    assert outcome.stream_seq == ack.seq

    store: Store = one_worker.worker.store
    letters = await asyncio.to_thread(store.dead_letters)
    assert [(d.stream_seq, d.subject) for d in letters] == [(ack.seq, subject)]
    assert reason in letters[0].reason and letters[0].data == payload

    stream = one_worker.worker.settings.stream

    async def drained() -> int:
        return (await nc.jetstream().stream_info(stream)).state.messages

    remaining = -1
    deadline = asyncio.get_running_loop().time() + 5
    while remaining != 0 and asyncio.get_running_loop().time() < deadline:
        remaining = await drained()
    assert remaining == 0, "a terminated message must leave the work queue"

    # The worker keeps serving.
    made = await client.create_system(system_id="after", name="ok", dimension=2)
    assert made.system_id == "after"
    await wait_until(lambda: one_worker.worker.metrics.dead_letters._value.get() == 1)
