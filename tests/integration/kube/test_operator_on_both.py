"""Operator scenarios run twice: on the API-server double and on the real control plane.

One fixture, two backends. On the double, pods are objects the test writes
(``testing.cluster.Cluster``); on the real control plane they are bound to a
Node and moved on by the harness that plays the kubelet
(``testing.kubecluster.KubeCluster``), and the operator runs as the chart's
ServiceAccount (its RBAC applied, a TokenRequest token in a kubeconfig with
``*-data`` fields). Either way the operator is the real ``coordshard
operator`` process, each pod is backed by a real ``coordshard worker``
started with that pod's name and UID, and the SDK's traffic must all arrive.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import nats
import pytest
from nats.aio.client import Client
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from coordshard_client import CoordinateClient
from coordshard_client.subjects import block_filter, parse_subject, shard_of
from coordshard_operator.cli.worker import worker_argv
from coordshard_operator.kube import crd
from coordshard_operator.local.natsserver import NatsServer, free_port
from coordshard_operator.rebalancer.jetstream import JetStreamApi
from coordshard_operator.rebalancer.ranges import parse_ranges
from coordshard_operator.testing.apiserver import ApiError
from coordshard_operator.testing.cluster import Cluster, OperatorProcess, member_of, wait_until
from coordshard_operator.testing.controlplane import ControlPlane
from coordshard_operator.testing.kubecluster import KubeCluster
from coordshard_operator.testing.kuberest import KubeRest, KubeRestError

from .conftest import Helm, Rule, load_peering_crd, rbac_rules
from .test_chart_on_control_plane import RBAC_KINDS, render, token_kubeconfig

pytestmark = pytest.mark.integration

STREAM = "COORDINATE"
SHARDS = 6


StartOperator = Callable[..., OperatorProcess]
"""``start_operator(args=("--standalone",), env=None, log=None, nats_url=None)``: one more
operator (``nats_url``: the default NATS servers, else the ``nats_server`` fixture's)."""


@dataclass
class Scenario:
    backend: str
    cluster: Cluster | KubeCluster
    start_operator: StartOperator
    restart_api: Callable[[], None]
    """The API server restarted with its history lost: every watch breaks, and resuming
    from any resourceVersion seen before is 410 Gone."""
    enable_standby: Callable[[], None]
    """What the chart's ``operator.standby=true`` adds: the namespace's KopfPeering
    object and (on the real server) the RBAC kopf peering needs."""
    peering: Callable[[], dict[str, Any]]
    """The KopfPeering object's status: the peers' keep-alives, by peer id."""
    requests: Callable[[], set[Rule]]
    """What the operator has asked the API server for so far, as RBAC rules: the
    double's request log, or the real server's audit log for its ServiceAccount."""
    pod_selectors: Callable[[], list[str | None]]
    """The label selector of each pod list and watch the operator made (None: none)."""

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    def uid(self, pod: str) -> str:
        return str(self.cluster.pod(pod)["metadata"]["uid"])


STANDBY_SETS = (
    "operator.standby=true",
    "operator.watchNamespaces={ns}",
    "operator.readSecrets=false",
)
"""The chart's values for two peered replicas watching one namespace ({ns} filled in)."""
PEERING = "coordshard"
"""The peering object's name (the chart's, and ``coordshard operator``'s default)."""


@pytest.fixture(params=["double", "real"])
def scenario(
    request: pytest.FixtureRequest, nats_server: NatsServer, tmp_path: Path
) -> Iterator[Scenario]:
    default_log = tmp_path / "operator.log"
    procs: list[OperatorProcess] = []
    applied: list[dict[str, Any]] = []
    granted: list[dict[str, Any]] = []
    if request.param == "double":
        cluster: Cluster | KubeCluster = request.getfixturevalue("cluster")
        assert isinstance(cluster, Cluster)
        api = cluster.api
        login: dict[str, Any] = {"api_url": api.url}

        def restart() -> None:
            api.compact()
            api.close_watches()

        def enable_standby() -> None:
            api.create_crd(load_peering_crd("KopfPeering"))
            peers = api.find_type("kopf.dev", "kopfpeerings")
            api.create(peers, cluster.namespace, {"metadata": {"name": PEERING}})

        def peering() -> dict[str, Any]:
            peers = api.find_type("kopf.dev", "kopfpeerings")
            status: dict[str, Any] = api.get(peers, cluster.namespace, PEERING).get("status")
            return status or {}

        def requests() -> set[Rule]:
            return {(r.verb, r.group, r.resource) for r in api.requests}

        def pod_selectors() -> list[str | None]:
            return [r.label_selector for r in api.requests if r.resource == "pods"]

    else:
        kube: KubeRest = request.getfixturevalue("kube")
        namespace: str = request.getfixturevalue("namespace")
        helm: Helm = request.getfixturevalue("helm")
        cluster = KubeCluster(kube, request.getfixturevalue("kubelet"), namespace=namespace)

        def apply_chart(*sets: str, kinds: tuple[str, ...] = RBAC_KINDS) -> list[dict[str, Any]]:
            objects = [o for o in render(helm, namespace, *sets) if o["kind"] in kinds]
            for obj in objects:
                kube.apply(obj)
            applied.extend(objects)
            granted[:] = objects  # the chart as last applied
            return objects

        objects = apply_chart()
        (account,) = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
        kubeconfig = token_kubeconfig(kube, namespace, account, tmp_path / "operator.kubeconfig")
        # Log in with the kubeconfig, as in a cluster without one.
        login = {"api_url": "", "namespaces": (namespace,), "env": {"KUBECONFIG": str(kubeconfig)}}
        plane: ControlPlane = request.getfixturevalue("control_plane")

        def restart() -> None:
            plane.restart_apiserver(compact=True)

        def enable_standby() -> None:
            sets = [s.replace("{ns}", "{" + namespace + "}") for s in STANDBY_SETS]
            apply_chart(*sets, kinds=(*RBAC_KINDS, "KopfPeering"))

        def peering() -> dict[str, Any]:
            path = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/{PEERING}"
            status: dict[str, Any] = kube.get(path).get("status") or {}
            return status

        user = f"system:serviceaccount:{namespace}:{account}"

        def requests() -> set[Rule]:
            return {rule_of(e) for e in plane.audit_events(user=user) if "objectRef" in e}

        def pod_selectors() -> list[str | None]:
            return [
                parse_qs(urlsplit(e["requestURI"]).query).get("labelSelector", [None])[0]
                for e in plane.audit_events(user=user)
                if e.get("objectRef", {}).get("resource") == "pods"
            ]

    def start(
        *,
        args: tuple[str, ...] = ("--standalone",),
        env: dict[str, str] | None = None,
        log: Path = default_log,
        nats_url: str | None = None,
    ) -> OperatorProcess:
        kw = {**login, "env": {**login.get("env", {}), **(env or {})}}
        url = nats_url or nats_server.url
        procs.append(OperatorProcess(nats_url=url, log=log, args=args, **kw))
        return procs[-1]

    yield Scenario(
        request.param, cluster, start, restart, enable_standby, peering, requests, pod_selectors
    )
    for proc in procs:
        proc.stop(timeout=3)  # kopf can take longer to leave (daemons, peering); not tested here
    if isinstance(cluster, KubeCluster):
        # Every call the operator made is one the chart grants, and none was refused
        # (but while a restarted apiserver was not yet ready: it refuses before its RBAC
        # caches are filled, and the operator must retry, as it did).
        denied = [
            e
            for e in plane.audit_events(user=user)
            if e["responseStatus"]["code"] == 403 and plane.was_ready(e["stageTimestamp"])
        ]
        assert not denied, [
            (e["stageTimestamp"], e["verb"], e["requestURI"], e.get("annotations")) for e in denied
        ]
        assert requests() <= rbac_rules(granted), requests() - rbac_rules(granted)
        for obj in applied:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kube.request("DELETE", kube.path_of(obj))
        for cr in kube.get(cluster.crs_path)["items"]:  # the operator's finalizer would hold it
            kube.patch(
                f"{cluster.crs_path}/{cr['metadata']['name']}", {"metadata": {"finalizers": None}}
            )
    for log in sorted(tmp_path.glob("operator*.log")):
        sys.stdout.write(f"--- {log.name}\n{log.read_text()[-6000:]}")  # shown on failure


@pytest.fixture
async def client(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)
    yield nc
    await nc.close()


def rule_of(event: dict[str, Any]) -> Rule:
    """An audit event's request as the RBAC rule that grants it."""
    ref = event["objectRef"]
    resource = (
        f"{ref['resource']}/{ref['subresource']}" if "subresource" in ref else ref["resource"]
    )
    return (event["verb"], ref.get("apiGroup", ""), resource)


def start_worker(scenario: Scenario, pod: str, *, nats_url: str, db: str, log: Path) -> Any:
    """A real ``coordshard worker`` process playing ``pod``'s container."""
    env = {
        **os.environ,
        "COORDSHARD_NATS_URL": nats_url,
        "COORDSHARD_GROUP": "orders",
        "COORDSHARD_SHARDS": str(SHARDS),
        "COORDSHARD_POD_NAME": pod,
        "COORDSHARD_POD_UID": scenario.uid(pod),
        "COORDSHARD_DATABASE_URL": db,
        "COORDSHARD_HTTP_ENABLED": "false",
        "COORDSHARD_FETCH_TIMEOUT": "0.1",
        "COORDSHARD_BIND_POLL": "0.05",
    }
    with log.open("ab") as out:
        return subprocess.Popen(worker_argv([]), env=env, stdout=out, stderr=subprocess.STDOUT)


async def held_filters(url: str) -> dict[str, list[str]]:
    """Member id -> its lanes' filter subjects, as NATS holds them."""
    nc = await nats.connect(url)
    try:
        infos = await nc.jetstream().consumers_info(STREAM)
    except nats.js.errors.NotFoundError:
        return {}
    finally:
        await nc.close()
    held: dict[str, list[str]] = {}
    for i in infos:
        held.setdefault(member_of(i), []).extend(i.config.filter_subjects or [])
    return {m: sorted(filters) for m, filters in held.items()}


async def test_three_ready_pods_get_consumers_and_a_crashed_pods_shards_move(
    scenario: Scenario, nats_server: NatsServer, tmp_path: Path
) -> None:
    cluster = scenario.cluster
    scenario.start_operator()
    db = f"sqlite:///{tmp_path / 'store.db'}"
    cluster.add_cr(shards=SHARDS)
    pods = ("w-0", "w-1", "w-2")
    workers = {}
    for pod in pods:
        cluster.add_pod(pod)
        workers[pod] = start_worker(
            scenario, pod, nats_url=nats_server.url, db=db, log=tmp_path / f"{pod}.log"
        )
    try:
        await wait_until(lambda: len(cluster.assignment()) == 3, what="three pods assigned")
        await wait_until(
            lambda: cluster.condition(crd.CONDITION_READY) == "True", what="the CR Ready"
        )
        status = cluster.status()
        assert status["memberCount"] == 3 and status["unassignedShards"] == ""
        assert await held_filters(nats_server.url) == {
            # N <= 512: a block is one shard (subjects.blocks_of)
            cluster.consumer(pod): sorted(block_filter(s) for s in parse_ranges(ranges))
            for pod, ranges in status["assignment"].items()
        }
        async with CoordinateClient.connect(
            servers=[nats_server.url], shards=SHARDS, timeout=20
        ) as client:
            before = [f"sys-{i}" for i in range(12)]
            for sid in before:
                await client.create_system(system_id=sid, name=sid, dimension=2)
            workers["w-1"].kill()  # the container dies, then the pod goes
            workers["w-1"].wait()
            cluster.delete_pod("w-1")
            during = [f"late-{i}" for i in range(12)]
            await asyncio.gather(
                *(client.create_system(system_id=s, name=s, dimension=2) for s in during)
            )
            await wait_until(
                lambda: sorted(cluster.assignment()) == ["w-0", "w-2"], what="w-1's shards moved"
            )
            for sid in before + during:
                assert (await client.get_system(system_id=sid)).system_id == sid
        assert "w-1" in cluster.status()["lastRebalance"]["reason"]
        await wait_until(
            lambda: any("from w-1" in m for m in cluster.events("ShardsMoved")),
            what="a ShardsMoved Event naming w-1",
        )
        (event, *_) = [
            e for e in cluster.event_objects("ShardsMoved") if "from w-1" in e["message"]
        ]
        assert event["involvedObject"]["name"] == "orders"
        assert event["source"]["component"] == crd.REPORTING_COMPONENT
        assert event["reportingComponent"] == crd.REPORTING_COMPONENT
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


async def test_a_pod_left_terminating_loses_its_shards_at_once(scenario: Scenario) -> None:
    """A graceful deletion the kubelet never finishes: the pod is still there, still
    Ready, but terminating; its shards move without waiting for the grace period."""
    cluster = scenario.cluster
    scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4, grace=600)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
    cluster.terminate_pod("w-1")
    await wait_until(lambda: cluster.assignment() == {"w-0": "0-3"}, what="w-0 owns all")
    assert cluster.pod("w-1")["metadata"]["deletionTimestamp"]  # still there, Terminating
    assert "w-1" in cluster.status()["lastRebalance"]["reason"]
    await wait_until(
        lambda: any("from w-1" in m for m in cluster.events("ShardsMoved")),
        what="a ShardsMoved Event naming w-1",
    )


async def test_a_deleted_pods_shards_move_and_every_message_reaches_the_new_owner(
    scenario: Scenario, nats_server: NatsServer, client: Client
) -> None:
    """Raw deliveries, no worker: what was published before and during the hand-off
    is delivered, each message once, on the survivor's lanes."""
    cluster = scenario.cluster
    scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
    js = client.jetstream()
    ids = {shard_of(f"sys-{i}", 4): f"sys-{i}" for i in range(40)}  # the stream's block is the id's
    for shard in range(4):
        await js.publish(f"coordinate.cmd.{shard}.{ids[shard]}.before", b"x")
    survivor = cluster.consumer("w-0")
    epoch = cluster.status()["epoch"]
    cluster.delete_pod("w-1")
    for shard in range(4):
        await js.publish(f"coordinate.cmd.{shard}.{ids[shard]}.during", b"x")
    await wait_until(lambda: list(cluster.assignment()) == ["w-0"], what="w-0 owns everything")
    status = cluster.status()
    assert status["assignment"] == {"w-0": "0-3"} and status["epoch"] > epoch
    assert status["lastRebalance"]["shardsMoved"] == 2
    assert await held_filters(nats_server.url) == {
        survivor: sorted(block_filter(s) for s in range(4))
    }
    lanes = [i.name for i in await js.consumers_info(STREAM) if member_of(i) == survivor]
    subs = [await js.pull_subscribe_bind(name, stream=STREAM) for name in lanes]
    got: list[str] = []
    async with asyncio.timeout(15):
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


async def test_not_ready_within_grace_keeps_shards_past_grace_moves_them_ready_gets_them_back(
    scenario: Scenario,
) -> None:
    cluster = scenario.cluster
    scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4, grace=3)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
    before = cluster.assignment()
    cluster.set_ready("w-1", False)
    await wait_until(
        lambda: any(m["pod"] == "w-1" and not m["ready"] for m in cluster.status()["members"]),
        what="w-1 seen NotReady",
    )
    assert cluster.assignment() == before  # within the grace period nothing moves
    assert cluster.condition(crd.CONDITION_READY) == "True"
    await wait_until(lambda: cluster.assignment() == {"w-0": "0-3"}, what="moved past grace")
    await wait_until(
        lambda: any("w-1" in m for m in cluster.events(crd.EVENT_POD_NOT_READY_PAST_GRACE)),
        what="a PodNotReadyPastGrace Event naming w-1",
    )
    assert len(cluster.events(crd.EVENT_POD_NOT_READY_PAST_GRACE)) == 1
    cluster.set_ready("w-1", True)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="w-1 back")


async def test_two_crs_in_one_namespace_and_a_deleted_cr_releases_its_consumers_not_its_stream(
    scenario: Scenario,
    nats_server: NatsServer,
    client: Client,
    chart_rbac: Callable[..., set[Rule]],
) -> None:
    """Also: what the operator asked the API server for is exactly what the chart grants
    (without Secret refs): every grant used, nothing else asked."""
    cluster = scenario.cluster
    scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_pod("x-0", app="x")
    cluster.add_cr("orders", shards=2)
    cluster.add_cr("billing", shards=3, app="x", stream="BILLING", subjectPrefix="billing.cmd")
    await wait_until(lambda: cluster.assignment("orders") == {"w-0": "0-1"}, what="orders")
    await wait_until(lambda: cluster.assignment("billing") == {"x-0": "0-2"}, what="billing")
    assert crd.FINALIZER in cluster.cr("orders")["metadata"]["finalizers"]
    assert await held_filters(nats_server.url)
    await client.jetstream().publish("coordinate.cmd.0.sys.op", b"x")
    cluster.delete_cr("orders")
    await wait_until(lambda: not cluster.has_cr("orders"), what="orders gone (finalizer removed)")
    assert await held_filters(nats_server.url) == {}
    assert cluster.assignment("billing") == {"x-0": "0-2"}
    assert (await client.jetstream().stream_info(STREAM)).state.messages == 1  # data kept
    # The stream is free again for another CoordinateShards.
    cluster.add_cr("successor", shards=2)
    await wait_until(lambda: cluster.assignment("successor") == {"w-0": "0-1"}, what="successor")
    assert scenario.requests() == chart_rbac("operator.readSecrets=false")


async def test_the_operator_follows_pods_after_an_api_server_restart_lost_the_history(
    scenario: Scenario,
) -> None:
    """Its watches break and cannot resume (410 Gone): kopf lists again, and what
    changed after the restart is seen."""
    cluster = scenario.cluster
    scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
    scenario.restart_api()
    cluster.delete_pod("w-1")
    await wait_until(lambda: cluster.assignment() == {"w-0": "0-3"}, what="w-0 owns all")
    cluster.add_pod("w-2")
    await wait_until(lambda: sorted(cluster.assignment()) == ["w-0", "w-2"], what="w-2 joined")


async def test_operator_restarted_after_a_crash_finishes_the_job(
    scenario: Scenario, nats_server: NatsServer
) -> None:
    """Level-based catch-up: what happened while no operator ran is seen in the state."""
    cluster = scenario.cluster
    proc = scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
    proc.kill()
    # What a crash mid-hand-off leaves: a paused consumer (the engine pauses before it
    # narrows or grows), a pod lost and one joined while nobody watched.
    nc = await nats.connect(nats_server.url)
    try:
        (paused,) = [
            i.name
            for i in await nc.jetstream().consumers_info(STREAM)
            if member_of(i) == cluster.consumer("w-0")
        ]
        await JetStreamApi(nc.jetstream()).pause_consumer(STREAM, paused, for_s=60)
        cluster.delete_pod("w-1")
        cluster.add_pod("w-2")
        scenario.start_operator()
        await wait_until(
            lambda: sorted(cluster.assignment()) == ["w-0", "w-2"], what="level-based catch-up"
        )
        assert set(await held_filters(nats_server.url)) == {
            cluster.consumer("w-0"),
            cluster.consumer("w-2"),
        }
        infos = await nc.jetstream().consumers_info(STREAM)
        (info,) = [i for i in infos if member_of(i) == cluster.consumer("w-0")]
        assert not info.paused
    finally:
        await nc.close()


async def test_a_standby_operator_takes_over_when_the_active_one_dies(
    scenario: Scenario,
    tmp_path: Path,
    chart_rbac: Callable[..., set[tuple[str, str, str]]],
) -> None:
    """Two peered operators (as the chart's operator.standby=true runs them): one acts.
    On the real server they run as the chart's ServiceAccount with the standby RBAC."""
    cluster = scenario.cluster
    scenario.enable_standby()
    fast = {"COORDSHARD_PEERING_LIFETIME": "4"}
    active_log, standby_log = tmp_path / "operator-active.log", tmp_path / "operator-standby.log"
    active = scenario.start_operator(args=("--priority=100",), env=fast, log=active_log)
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="active operator assigned")
    scenario.start_operator(args=("--priority=50",), env=fast, log=standby_log)
    await wait_until(
        lambda: len(scenario.peering()) == 2, what="both operators in the peering object"
    )
    cluster.add_pod("w-2")
    await wait_until(lambda: len(cluster.assignment()) == 3, what="active handled the join")
    assert "shards moved" not in standby_log.read_text()
    active.kill()
    cluster.delete_pod("w-1")
    await wait_until(
        lambda: sorted(cluster.assignment()) == ["w-0", "w-2"], timeout=30, what="standby took over"
    )
    assert "shards moved" in standby_log.read_text()
    assert scenario.requests() == chart_rbac(*STANDBY_SETS)  # all granted, all used


async def test_a_container_restarted_in_place_keeps_its_consumer_and_shards(
    scenario: Scenario, nats_server: NatsServer
) -> None:
    """Same pod, same UID, restartCount + 1: the member is the same incarnation."""
    cluster = scenario.cluster
    scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4, grace=30)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
    before, consumers = cluster.assignment(), await held_filters(nats_server.url)
    cluster.restart_container("w-1")
    await wait_until(
        lambda: any("w-1" in m for m in cluster.events(crd.EVENT_RESTARTED_IN_PLACE)),
        what="a RestartedInPlace Event naming w-1",
    )
    assert cluster.assignment() == before and await held_filters(nats_server.url) == consumers
    restarts = {m["pod"]: m["restarts"] for m in cluster.status()["members"]}
    assert restarts == {"w-0": 0, "w-1": 1}
    assert len(cluster.events(crd.EVENT_RESTARTED_IN_PLACE)) == 1


async def test_a_spec_edit_is_applied_at_once(scenario: Scenario) -> None:
    cluster = scenario.cluster
    scenario.start_operator(env={"COORDSHARD_RESYNC_SECONDS": "600"})  # only the edit wakes it
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
    owner_of_0 = next(p for p, r in cluster.assignment().items() if 0 in parse_ranges(r))
    other = "w-1" if owner_of_0 == "w-0" else "w-0"
    cluster.patch_cr("orders", {"spec": {"pins": {"0": other}}})
    await wait_until(lambda: 0 in parse_ranges(cluster.assignment().get(other, "")), what="pinned")
    assert cluster.cr()["metadata"]["generation"] == 2  # a spec edit, counted by the server
    await wait_until(lambda: cluster.status()["observedGeneration"] == 2, what="observed")


def refusal(call: Callable[[], object]) -> int:
    """The HTTP code the API server refused ``call`` with (either backend's client)."""
    try:
        call()
    except ApiError as e:
        return e.code
    except KubeRestError as e:
        return e.status
    raise AssertionError("the API server accepted it")


async def test_invalid_crs_are_refused_by_the_server_or_reported(scenario: Scenario) -> None:
    cluster = scenario.cluster
    scenario.start_operator()
    assert refusal(lambda: cluster.add_cr("bad", shards=0)) == 422
    cluster.add_pod("w-0")
    cluster.add_cr("orders", shards=2)
    cluster.add_cr("second", shards=2, app="v")  # valid for the server, but the same stream

    def degraded_reasons() -> list[str]:
        return [
            c["reason"]
            for name in ("orders", "second")
            for c in cluster.status(name).get("conditions") or []
            if c["type"] == crd.CONDITION_DEGRADED
        ]

    await wait_until(lambda: crd.REASON_INVALID_SPEC in degraded_reasons(), what="refused")
    assert degraded_reasons().count(crd.REASON_INVALID_SPEC) == 1  # the first claim wins
    await wait_until(  # kopf posts Events from a queue, after the status patch
        lambda: any("is used by" in m for m in cluster.events(crd.REASON_INVALID_SPEC)),
        what="an InvalidSpec Event",
    )
    (event, *_) = cluster.event_objects(crd.REASON_INVALID_SPEC)
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == crd.KIND
    assert refusal(lambda: cluster.patch_cr("orders", {"spec": {"shards": 3}})) == 422


async def test_scale_up_and_all_pods_gone_then_back(
    scenario: Scenario, nats_server: NatsServer
) -> None:
    cluster = scenario.cluster
    scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_cr(shards=6)
    await wait_until(lambda: cluster.assignment() == {"w-0": "0-5"}, what="w-0 owns all")
    cluster.add_pod("w-1")
    cluster.add_pod("w-2")
    await wait_until(lambda: len(cluster.assignment()) == 3, what="three members")
    assert sorted(m["shards"] for m in cluster.status()["members"]) == [2, 2, 2]
    for pod in ("w-0", "w-1", "w-2"):
        cluster.delete_pod(pod)
    await wait_until(lambda: cluster.condition(crd.CONDITION_DEGRADED) == "True", what="Degraded")
    status = cluster.status()
    assert status["unassignedShards"] == "0-5" and status["assignment"] == {}
    assert await held_filters(nats_server.url) == {}
    cluster.add_pod("w-0")
    await wait_until(lambda: cluster.condition(crd.CONDITION_READY) == "True", what="recovered")
    assert cluster.assignment() == {"w-0": "0-5"}


async def test_liveness_status_and_metrics_and_each_groups_lag(
    scenario: Scenario, client: Client
) -> None:
    """The first pass's status and Event, the liveness endpoint, pods read only through
    the worker label selector, and metrics that follow Prometheus' conventions."""
    cluster = scenario.cluster
    metrics, health = free_port(), free_port()
    scenario.start_operator(
        args=("--standalone", f"--liveness=http://127.0.0.1:{health}/healthz"),
        env={"COORDSHARD_METRICS_PORT": str(metrics), "COORDSHARD_RESYNC_SECONDS": "1"},
    )
    cluster.add_pod("w-0")
    cluster.add_cr(shards=4)
    await wait_until(lambda: len(cluster.assignment()) == 1, what="w-0 assigned")
    await wait_until(lambda: cluster.condition(crd.CONDITION_READY) == "True", what="Ready")
    status = cluster.status()
    assert status["observedGeneration"] == 1 and status["shards"] == 4
    assert status["memberCount"] == 1 and status["unassignedShards"] == ""
    await wait_until(lambda: cluster.events("MembersChanged"), what="a MembersChanged Event")
    selectors = scenario.pod_selectors()
    assert selectors and set(selectors) == {crd.LABEL_WORKER}
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{health}/healthz") as r:
        assert r.status == 200
    js = client.jetstream()
    for shard in range(4):
        await js.publish(f"coordinate.cmd.{shard}.sys.lag", b"x")
    (info,) = await js.consumers_info(STREAM)
    held = await js.pull_subscribe_bind(info.name, stream=STREAM)
    assert len(await held.fetch(1, timeout=5)) == 1  # delivered, never acked
    url = f"http://127.0.0.1:{metrics}/metrics"
    group = {"name": "orders", "namespace": scenario.namespace}

    async def families() -> dict[str, Metric]:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return {m.name: m for m in text_string_to_metric_families(await r.text())}

    def lag(found: dict[str, Metric], family: str) -> float | None:
        samples = [s.value for s in found[family].samples if s.labels == group]
        return samples[0] if samples else None

    async def lagging() -> dict[str, Metric] | None:
        found = await families()
        pending = lag(found, "coordshard_group_pending_messages")
        ack_pending = lag(found, "coordshard_group_ack_pending_messages")
        return found if (pending, ack_pending) == (3, 1) else None

    found = await wait_until(lagging, what="the group's lag: 3 pending, 1 ack pending")
    moved = [
        s.value
        for s in found["coordshard_rebalance_moved_shards"].samples
        if s.name.endswith("_total") and s.labels == group
    ]
    assert moved and moved[0] >= 4  # 4 at first
    assert lag(found, "coordshard_unassigned_shards") == 0
    for family in found.values():
        if family.type == "counter":
            for sample in family.samples:
                assert sample.name.endswith(("_total", "_created")), sample.name
    assert not [n for n in found if "_ratio" in n]
    assert "process_cpu_seconds" in found and "process_resident_memory_bytes" in found
    # A deleted group leaves no series behind (a gauge would go on reporting its last lag).
    await held.unsubscribe()
    cluster.delete_cr("orders")
    await wait_until(lambda: not cluster.has_cr("orders"), what="CR gone")

    async def forgotten() -> bool:
        found = await families()
        return not [f.name for f in found.values() for s in f.samples if s.labels == group]

    await wait_until(forgotten, what="no series of the deleted group")


def statefulset(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": "w", crd.LABEL_WORKER: "true"}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "w"}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "worker", "image": "coordshard:test"}]},
            },
        },
    }


@pytest.mark.parametrize("scenario", ["real"], indirect=True)  # the double has no controllers
async def test_statefulset_scale_up_and_down_on_the_real_control_plane(
    scenario: Scenario,
) -> None:
    """Pods made and deleted by the real StatefulSet controller, down to none and back."""
    cluster = scenario.cluster
    assert isinstance(cluster, KubeCluster)
    kube, kubelet, ns = cluster.api, cluster.kubelet, cluster.namespace
    scenario.start_operator()
    cluster.add_cr(shards=6)
    sts = kube.create(f"/apis/apps/v1/namespaces/{ns}/statefulsets", statefulset("w", 2))
    path = kube.path_of(sts)

    def members(*names: str) -> Callable[[], bool]:
        def check() -> bool:
            kubelet.sync(ns, selector=crd.LABEL_WORKER)
            return sorted(cluster.assignment()) == list(names)

        return check

    await wait_until(members("w-0", "w-1"), what="the StatefulSet's two pods assigned")
    kube.patch(f"{path}/scale", {"spec": {"replicas": 3}})
    await wait_until(members("w-0", "w-1", "w-2"), what="scaled up to three")
    assert sorted(m["shards"] for m in cluster.status()["members"]) == [2, 2, 2]
    kube.patch(f"{path}/scale", {"spec": {"replicas": 1}})
    await wait_until(members("w-0"), what="scaled down to one")
    assert cluster.assignment() == {"w-0": "0-5"}
    kube.patch(f"{path}/scale", {"spec": {"replicas": 0}})
    await wait_until(members(), what="scaled to zero")
    assert cluster.status()["unassignedShards"] == "0-5"
    kube.patch(f"{path}/scale", {"spec": {"replicas": 1}})
    await wait_until(members("w-0"), what="back to one")
    await wait_until(lambda: cluster.condition(crd.CONDITION_READY) == "True", what="recovered")


async def test_a_stream_lost_under_a_running_group_is_made_again_and_served(
    scenario: Scenario, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Deleted by hand, or gone with a server's storage: the next pass creates it again
    (Warning StreamRecreated), gives every pod lanes again, and the workers serve it."""
    cluster = scenario.cluster
    scenario.start_operator(env={"COORDSHARD_RESYNC_SECONDS": "1"})
    db = f"sqlite:///{tmp_path / 'store.db'}"
    cluster.add_cr(shards=SHARDS)
    workers = {}
    for pod in ("w-0", "w-1"):
        cluster.add_pod(pod)
        workers[pod] = start_worker(
            scenario, pod, nats_url=nats_server.url, db=db, log=tmp_path / f"{pod}.log"
        )
    try:
        await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
        async with CoordinateClient.connect(
            servers=[nats_server.url], shards=SHARDS, timeout=20
        ) as client:
            await client.create_system(system_id="before", name="before", dimension=2)
            nc = await nats.connect(nats_server.url)
            try:
                await nc.jetstream().delete_stream(STREAM)
            finally:
                await nc.close()
            await wait_until(
                lambda: cluster.events(crd.EVENT_STREAM_RECREATED), what="a StreamRecreated Event"
            )
            await wait_until(
                lambda: len(cluster.assignment()) == 2, what="both pods assigned again"
            )
            for i in range(12):  # over the 6 shards: every one is owned again
                sid = f"after-{i}"
                await client.create_system(system_id=sid, name=sid, dimension=2)
                assert (await client.get_system(system_id=sid)).system_id == sid
        assert len(cluster.events(crd.EVENT_STREAM_RECREATED)) == 1
        assert sorted(await held_filters(nats_server.url)) == sorted(
            cluster.consumer(p) for p in ("w-0", "w-1")
        )
    finally:
        for w in workers.values():
            w.kill()
            w.wait()
