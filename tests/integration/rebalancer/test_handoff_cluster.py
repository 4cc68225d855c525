"""The engine on a 3-node cluster with an R3 stream, including kill -9 of the
stream leader in the middle of a handoff (Raft re-elects in ~5 s; the engine
retries through it and nothing is lost)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from coordshard_operator.benchmarks.workload import Ledger, Publisher, SimWorker
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.rebalancer.errors import JetStreamApiError, TransientError
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, Layout, MemberInfo
from coordshard_operator.rebalancer.jetstream import RetryPolicy
from coordshard_operator.rebalancer.passes import run_pass
from coordshard_operator.rebalancer.planning import plan

from .conftest import Fleet

pytestmark = pytest.mark.integration

PREFIX = "t.cmd"
SHARDS = 32
NO_SUITABLE_PEERS = 10005


@pytest.fixture
async def cluster_nc(nats_cluster: list[NatsServer]) -> AsyncIterator[Client]:
    client = await nats.connect(
        [n.url for n in nats_cluster],
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        ping_interval=1,
    )
    yield client
    await client.close()


async def wait_until(condition: object, *, timeout: float = 30.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def wait_for_cluster(js: JetStreamContext, *, timeout: float = 30.0) -> None:
    """Wait until a fresh cluster has elected a meta leader."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await js.account_info()
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def ensure_stream(engine: Engine, *, timeout: float = 30.0) -> None:
    """Create the R3 stream once all three peers are known to the meta leader.

    Until then the create fails with "no suitable peers for placement", which
    a loaded machine shows after the meta leader is already answering.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await engine.ensure_stream()
            return
        except JetStreamApiError as e:
            if e.err_code != NO_SUITABLE_PEERS or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.mark.parametrize(("layout", "kill_at"), [("shards", "reset"), ("blocks", "fenced")])
async def test_r3_churn_and_a_leader_kill_during_a_handoff_lose_nothing(
    cluster_nc: Client, nats_cluster: list[NatsServer], fleet: Fleet, layout: Layout, kill_at: str
) -> None:
    js = cluster_nc.jetstream(timeout=2)
    await wait_for_cluster(js)
    config = GroupConfig(
        stream="R3",
        subject_prefix=PREFIX,
        group="g",
        shards=SHARDS,
        replicas=3,
        drain_timeout_s=1.0,
        layout=layout,
        retry=RetryPolicy(deadline_s=30.0),
    )
    killed: list[str] = []

    async def kill_leader(step: str) -> None:
        if killed or not step.startswith(kill_at):
            return
        info = await js.stream_info("R3")
        assert info.cluster is not None and info.cluster.leader
        leader = next(n for n in nats_cluster if n.name == info.cluster.leader)
        leader.kill()
        killed.append(leader.name)

    engine = Engine(js, config, checkpoint=kill_leader)
    await ensure_stream(engine)
    ledger = Ledger()
    rng = random.Random(3)
    generation = 0
    live: dict[str, MemberInfo] = {}
    workers: dict[str, SimWorker] = {}

    def join(name: str) -> None:
        nonlocal generation
        generation += 1
        info = MemberInfo.of(group="g", member=name, incarnation=str(generation))
        live[info.id] = info
        workers[info.id] = fleet.add(
            SimWorker(js, stream="R3", consumer=info.id, ledger=ledger).start()
        )

    for name in ("a", "b", "c"):
        join(name)
    bound = 0
    undrained = 0

    async def converge(epoch: int) -> None:
        nonlocal bound, undrained
        observed = await engine.observe()
        p = plan(
            shards=SHARDS, members=list(live), previous=observed.assignment, blocks=engine.blocks
        )
        report = await engine.apply(
            p.balance.assignment, members=live, epoch=epoch, observed=observed
        )
        bound += sum(f.in_flight for f in report.fenced)
        undrained += sum(u.num_ack_pending for u in report.undrained)
        bound += sum(u.num_ack_pending for u in report.undrained)

    await converge(0)
    publisher = fleet.add(Publisher(js, prefix=PREFIX, shards=SHARDS, ledger=ledger).start())
    for epoch in range(1, 6):
        seen = len(ledger.processed)
        await wait_until(lambda: len(ledger.processed) > seen + 100)  # noqa: B023
        victim = rng.choice(sorted(live))
        await workers.pop(victim).crash()
        name = live.pop(victim).name
        if epoch % 2:
            join(name)  # a restart: same member, new incarnation
        await converge(epoch)
    assert killed, "the leader kill never happened"
    await publisher.stop()
    await wait_until(lambda: not ledger.missing(), timeout=60)
    for w in workers.values():
        await w.stop()
    assert not ledger.missing()
    # A delivery can die with the killed node (its client connection drops with
    # it); JetStream redelivers it only after ack_wait or the next reset, behind
    # the shard's later messages. So order may break, but only by redeliveries:
    # a message first processed late must come from a delivery that was not its
    # first, or be one the engine saw in flight on a consumer it could not drain
    # before it reset that consumer: delivered again after the reset, it can come
    # with a delivery count of 1. A clean CI run saw seq 195 first processed after
    # 763 on its shard, unflagged, with undrained=1 (that run's only stuck
    # delivery). The real
    # worker applies such a message below its shard's mark as long as no stored
    # outcome says it was applied (coordshard_service.commands).
    late = ledger.out_of_order()
    unflagged = [entry for entry in late if entry[-1] not in ledger.redelivered]
    assert len(unflagged) <= undrained, (late, undrained)
    assert ledger.duplicates() <= ledger.crashed_unacked + ledger.failed_acks + bound
    observed = await engine.observe()
    assert sorted(s for shards in observed.assignment.values() for s in shards) == list(
        range(SHARDS)
    )


async def test_a_worker_keeps_its_deliveries_in_order_through_a_consumer_leader_kill(
    cluster_nc: Client, nats_cluster: list[NatsServer], fleet: Fleet
) -> None:
    # The worker processes the first message of a full batch, then the leader of
    # its consumer dies before the ack: the ack fails, the consumer lives on (on
    # a new leader) with the other 15 deliveries pending until ack_wait. A worker
    # that took the failed ack for a fence dropped them and went on with the
    # shards' later messages (the CI failure: shard order broke, and a worker
    # deduping by high-water mark would have refused the stragglers).
    js = cluster_nc.jetstream(timeout=2)
    await wait_for_cluster(js)
    config = GroupConfig(
        stream="R3K",
        subject_prefix=PREFIX,
        group="g",
        shards=SHARDS,
        replicas=3,
        ack_wait_s=10.0,
        retry=RetryPolicy(deadline_s=30.0),
    )
    engine = Engine(js, config)
    await ensure_stream(engine)
    member = MemberInfo.of(group="g", member="a", incarnation="1")
    await engine.apply({member.id: range(SHARDS)}, members={member.id: member}, epoch=0)
    ledger = Ledger()
    publisher = Publisher(js, prefix=PREFIX, shards=SHARDS, ledger=ledger)
    for _ in range(100):
        await publisher.publish_one()
    killed: list[str] = []

    async def kill_consumer_leader(consumer: str, seq: int) -> None:
        if killed:
            return
        info = await js.consumer_info("R3K", consumer)
        assert info.cluster is not None and info.cluster.leader
        node = next(n for n in nats_cluster if n.name == info.cluster.leader)
        node.kill()
        killed.append(node.name)

    worker = fleet.add(
        SimWorker(
            js,
            stream="R3K",
            consumer=member.id,
            ledger=ledger,
            on_processed=kill_consumer_leader,
        ).start()
    )
    await wait_until(lambda: killed)
    for _ in range(100):
        await publisher.publish_one()
    await wait_until(lambda: not ledger.missing(), timeout=60)
    await worker.stop()
    assert ledger.failed_acks >= 1, "the kill did not make an ack fail"
    assert not ledger.out_of_order()


async def test_a_consumer_list_with_consumers_missing_is_not_taken_for_the_whole_list(
    cluster_nc: Client, nats_cluster: list[NatsServer]
) -> None:
    # A clustered server lists only the consumers whose leaders answer in time and
    # names the others in "missing" (nats-py drops it). Here every lane's leader is
    # down (an R1 stream on the killed node), and the list came back empty, as a
    # success. Under R3 the same happens to the lanes whose leaders are being
    # elected after a kill: a pass read a live member's lane as gone and granted
    # its blocks to another member beside it (refused with "filtered consumer not
    # unique", or, while the stream recovers, made: the R3 chaos test's flake).
    js = cluster_nc.jetstream(timeout=6)
    await wait_for_cluster(js)
    members = {m.id: m for m in (MemberInfo.of(group="g", member=n, incarnation="1")
                                 for n in ("a", "b"))}  # fmt: skip
    config = GroupConfig(
        stream="R1MISS",
        subject_prefix=PREFIX,
        group="g",
        shards=SHARDS,
        retry=RetryPolicy(deadline_s=1.0),
    )
    engine = Engine(js, config)
    await ensure_stream(engine)
    first = await run_pass(engine, shards=SHARDS, members=members, epoch=1)
    assert first.report is not None and len(first.report.created_names) == 2
    info = await js.stream_info("R1MISS")
    assert info.cluster is not None and info.cluster.leader
    host = next(n for n in nats_cluster if n.name == info.cluster.leader)
    host.kill()
    await wait_for_cluster(js)  # a meta leader answers (the killed node may have been it)
    # The stream's own info is gone with its node too, so ask for the list itself,
    # as ``observe`` does once the stream answers (under R3 it goes on answering).
    with pytest.raises(TransientError, match="did not answer"):
        await engine.api.consumers("R1MISS")
