"""The benchmarks' stand-in worker binds every lane of its member that exists when it
starts, past the first page of the consumer list.

nats-py's ``consumers_info`` returns the first page (256 consumers) only, so a
``SimWorker`` started beside more lanes than that (a member of a 512-member
group restarting, or 300 lanes of one member here) served 256 and left the
rest's messages waiting for ever.
"""

from __future__ import annotations

import pytest
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from coordshard_client.naming import consumer_name, member_id
from coordshard_operator.benchmarks.workload import Ledger, SimWorker
from coordshard_operator.testing.cluster import wait_until

from .conftest import Fleet

pytestmark = pytest.mark.integration

LANES = 300


async def test_a_simworker_serves_lanes_past_the_first_page(
    js: JetStreamContext, stream_name: str, fleet: Fleet
) -> None:
    await js.add_stream(
        StreamConfig(name=stream_name, subjects=["t.>"], retention=RetentionPolicy.WORK_QUEUE)
    )
    member = member_id(group="g", member="m", incarnation="1")
    for i in range(LANES):
        name = consumer_name(member, generation=i + 1)
        config = ConsumerConfig(
            durable_name=name, ack_policy=AckPolicy.EXPLICIT, filter_subject=f"t.{i}.>"
        )
        await js.add_consumer(stream_name, config)
    ledger = Ledger()
    for i in range(LANES):
        ledger.published.add((await js.publish(f"t.{i}.x.op", b"m")).seq)
    worker = fleet.add(SimWorker(js, stream=stream_name, consumer=member, ledger=ledger).start())
    await wait_until(lambda: not ledger.missing(), timeout=30, what="every lane's message")
    assert len(worker.lanes) == LANES
