"""The real operator (``coordshard operator``, unmodified kopf, a subprocess)
against the API-server double and a real nats-server.

Pods are objects in the double; their containers are not run here: what is
checked is what the operator owns, the JetStream consumers (names, filters)
and the CR's status and Events, plus that messages published around a crash
are all delivered to the shards' new owner.

The scenarios that run on the real control plane too live in
test_operator_on_both.py; what stays here needs the double's request log or
adds what the double alone can show cheaply (within-grace stillness, the
stream kept after a CR's deletion, raw deliveries around a crash).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerInfo

from coordshard_client.subjects import block_filter, parse_subject, shard_of
from coordshard_operator.kube import crd
from coordshard_operator.local.natsserver import NatsServer, free_port
from coordshard_operator.rebalancer.ranges import parse_ranges
from coordshard_operator.testing.cluster import Cluster, OperatorProcess, member_of, wait_until

pytestmark = pytest.mark.integration

NS = "ns"
STREAM = "COORDINATE"


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)
    yield nc
    await nc.close()


async def consumers(nc: Client) -> dict[str, ConsumerInfo]:
    """Member id -> its consumer, as NATS holds them (the name adds a generation)."""
    js = nc.jetstream()
    try:
        infos = await js.consumers_info(STREAM)
    except nats.js.errors.NotFoundError:
        return {}
    return {member_of(i): i for i in infos}


async def filters(nc: Client) -> dict[str, list[str]]:
    """Member id -> the filter subjects of all its consumers (lanes)."""
    js = nc.jetstream()
    held: dict[str, list[str]] = {}
    for info in await js.consumers_info(STREAM):
        held.setdefault(member_of(info), []).extend(info.config.filter_subjects or [])
    return {m: sorted(f) for m, f in held.items()}


def expected_filters(ranges: str) -> list[str]:
    """A new stream stores under blocks; with N <= 512 a block is one shard."""
    return sorted(block_filter(s) for s in parse_ranges(ranges))


def assigned(cluster: Cluster, name: str = "orders") -> dict[str, str]:
    return cluster.assignment(name)


async def test_ready_pods_get_consumers_with_the_planned_filters(
    cluster: Cluster, operator: Callable[..., OperatorProcess], client: Client
) -> None:
    metrics, health = free_port(), free_port()
    operator(
        args=("--standalone", f"--liveness=http://127.0.0.1:{health}/healthz"),
        env={"COORDSHARD_METRICS_PORT": str(metrics)},
    )
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=8)
    await wait_until(lambda: len(assigned(cluster)) == 2, what="both pods assigned")
    await wait_until(lambda: cluster.condition(crd.CONDITION_READY) == "True", what="Ready")
    status = cluster.status()
    assert status["observedGeneration"] == 1 and status["shards"] == 8
    assert status["memberCount"] == 2 and status["unassignedShards"] == ""
    held = await filters(client)
    assert held == {
        cluster.consumer(pod): expected_filters(ranges)
        for pod, ranges in status["assignment"].items()
    }
    await wait_until(lambda: cluster.events("MembersChanged"), what="a MembersChanged Event")
    pod_reads = [r for r in cluster.api.requests if r.resource == "pods"]
    assert pod_reads and all(r.label_selector == crd.LABEL_WORKER for r in pod_reads)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{health}/healthz") as r:
            assert r.status == 200
        async with http.get(f"http://127.0.0.1:{metrics}/metrics") as r:
            text = await r.text()
    moved = re.search(
        r'coordshard_rebalance_moved_shards_total\{name="orders",namespace="ns"\} (\S+)', text
    )
    assert moved is not None and float(moved.group(1)) >= 8  # 8 at first, more if w-1 came late
    assert 'coordshard_unassigned_shards{name="orders",namespace="ns"} 0.0' in text


async def test_a_deleted_pods_shards_move_and_nothing_published_is_lost(
    cluster: Cluster, operator: Callable[[], Any], client: Client
) -> None:
    operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4)
    await wait_until(lambda: len(assigned(cluster)) == 2, what="both pods assigned")
    js = client.jetstream()
    ids = {shard_of(f"sys-{i}", 4): f"sys-{i}" for i in range(40)}  # the stream's block is the id's
    for shard in range(4):
        await js.publish(f"coordinate.cmd.{shard}.{ids[shard]}.before", b"x")
    survivor = cluster.consumer("w-0")
    epoch = cluster.status()["epoch"]
    cluster.delete_pod("w-1")
    for shard in range(4):
        await js.publish(f"coordinate.cmd.{shard}.{ids[shard]}.during", b"x")
    await wait_until(lambda: list(assigned(cluster)) == ["w-0"], what="w-0 owns everything")
    status = cluster.status()
    assert status["assignment"] == {"w-0": "0-3"} and status["epoch"] > epoch
    assert status["lastRebalance"]["shardsMoved"] == 2
    assert "w-1" in status["lastRebalance"]["reason"]
    assert await filters(client) == {survivor: expected_filters("0-3")}
    await wait_until(  # kopf posts Events from a queue, after the status patch
        lambda: any("from w-1 to w-0" in m for m in cluster.events("ShardsMoved")),
        what="a ShardsMoved Event from w-1 to w-0",
    )
    lanes = [i.name for i in await js.consumers_info(STREAM) if member_of(i) == survivor]
    subs = [await js.pull_subscribe_bind(name, stream=STREAM) for name in lanes]
    got: list[str] = []
    while len(got) < 8:
        for sub in subs:  # its own lane and the lane its gained shards came on
            try:
                batch = await sub.fetch(8, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            got += [str(parse_subject(m.subject)) for m in batch]  # stored under its block
            for m in batch:
                await m.ack()
    assert sorted(got) == sorted(
        f"coordinate.cmd.{s}.{ids[s]}.{op}" for s in range(4) for op in ("before", "during")
    )


async def test_not_ready_within_grace_keeps_shards_and_past_grace_moves_them(
    cluster: Cluster, operator: Callable[[], Any], client: Client
) -> None:
    operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4, grace=3)
    await wait_until(lambda: len(assigned(cluster)) == 2, what="both pods assigned")
    before = assigned(cluster)
    cluster.set_ready("w-1", False)
    await wait_until(
        lambda: any(m["pod"] == "w-1" and not m["ready"] for m in cluster.status()["members"]),
        what="w-1 seen NotReady",
    )
    assert assigned(cluster) == before  # within the grace period nothing moves
    assert cluster.condition(crd.CONDITION_READY) == "True"
    await wait_until(lambda: list(assigned(cluster)) == ["w-0"], what="shards moved past grace")
    await wait_until(
        lambda: any("w-1" in m for m in cluster.events(crd.EVENT_POD_NOT_READY_PAST_GRACE)),
        what="a PodNotReadyPastGrace Event naming w-1",
    )
    assert len(cluster.events(crd.EVENT_POD_NOT_READY_PAST_GRACE)) == 1
    # The pod comes back Ready: a member again, and it gets shards back.
    cluster.set_ready("w-1", True)
    await wait_until(lambda: len(assigned(cluster)) == 2, what="w-1 back")


async def test_deleting_the_cr_removes_consumers_but_keeps_the_stream(
    cluster: Cluster, operator: Callable[[], Any], client: Client
) -> None:
    operator()
    cluster.add_pod("w-0")
    cluster.add_cr(shards=2)
    await wait_until(lambda: assigned(cluster), what="assigned")
    await client.jetstream().publish("coordinate.cmd.0.sys.op", b"x")
    assert crd.FINALIZER in cluster.api.get(cluster.crs, NS, "orders")["metadata"]["finalizers"]
    cluster.api.delete(cluster.crs, NS, "orders")
    await wait_until(lambda: not cluster.api.list(cluster.crs, NS), what="CR gone")
    assert await filters(client) == {}
    info = await client.jetstream().stream_info(STREAM)
    assert info.state.messages == 1
    # The stream is free again for another CoordinateShards.
    cluster.add_cr("successor", shards=2)
    await wait_until(lambda: assigned(cluster, "successor") == {"w-0": "0-1"}, what="successor")


async def test_two_crs_with_different_selectors_are_independent(
    cluster: Cluster, operator: Callable[[], Any], client: Client
) -> None:
    operator()
    cluster.add_pod("w-0")
    other = cluster.add_pod("x-0")
    cluster.api.patch(cluster.pods, NS, "x-0", {"metadata": {"labels": {"app": "x"}}})
    cluster.add_cr("orders", shards=2)
    cluster.api.create(
        cluster.crs,
        NS,
        {
            "metadata": {"name": "billing"},
            "spec": {
                "shards": 3,
                "stream": "BILLING",
                "subjectPrefix": "billing.cmd",
                "selector": {"matchLabels": {"app": "x"}},
            },
        },
    )
    await wait_until(lambda: assigned(cluster, "orders") == {"w-0": "0-1"}, what="orders")
    await wait_until(lambda: assigned(cluster, "billing") == {"x-0": "0-2"}, what="billing")
    assert other["metadata"]["uid"]
    # A third CR on a stream already in use is refused (work-queue filters would overlap).
    cluster.add_cr("clash", shards=2, app="x")
    await wait_until(
        lambda: cluster.condition(crd.CONDITION_READY, "clash") == "False", what="refused"
    )
    reasons = {c["type"]: c["reason"] for c in cluster.status("clash")["conditions"]}
    assert reasons[crd.CONDITION_READY] == crd.REASON_INVALID_SPEC
    assert assigned(cluster, "orders") == {"w-0": "0-1"}


async def test_the_chart_grants_exactly_what_the_operator_uses(
    cluster: Cluster,
    operator: Callable[[], Any],
    client: Client,
    chart_rbac: Callable[..., set[tuple[str, str, str]]],
) -> None:
    """Every request the operator made (the double logs only HTTP requests, and only
    the operator speaks HTTP here) is granted, and nothing granted goes unused."""
    operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4)
    await wait_until(lambda: len(assigned(cluster)) == 2, what="both pods assigned")
    cluster.delete_pod("w-1")
    await wait_until(lambda: cluster.events("ShardsMoved"), what="an Event")
    cluster.api.delete(cluster.crs, NS, "orders")
    await wait_until(lambda: not cluster.api.list(cluster.crs, NS), what="CR gone")
    used = {(r.verb, r.group, r.resource) for r in cluster.api.requests}
    assert used == chart_rbac("operator.readSecrets=false")  # no Secret refs here
