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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest

from coordshard_client import CoordinateClient
from coordshard_client.subjects import block_filter
from coordshard_operator.cli.worker import worker_argv
from coordshard_operator.kube import crd
from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.rebalancer.ranges import parse_ranges
from coordshard_operator.testing.cluster import Cluster, OperatorProcess, member_of, wait_until
from coordshard_operator.testing.controlplane import ControlPlane
from coordshard_operator.testing.kubecluster import KubeCluster
from coordshard_operator.testing.kuberest import KubeRest

from .conftest import Helm
from .test_chart_on_control_plane import RBAC_KINDS, render, token_kubeconfig

pytestmark = pytest.mark.integration

STREAM = "COORDINATE"
SHARDS = 6


@dataclass
class Scenario:
    backend: str
    cluster: Cluster | KubeCluster
    start_operator: Callable[[], OperatorProcess]
    restart_api: Callable[[], None]
    """The API server restarted with its history lost: every watch breaks, and resuming
    from any resourceVersion seen before is 410 Gone."""

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    def uid(self, pod: str) -> str:
        return str(self.cluster.pod(pod)["metadata"]["uid"])


def _operator_env(nats_url: str) -> dict[str, str]:
    return {"COORDSHARD_NATS_SERVERS": nats_url, "COORDSHARD_RESYNC_SECONDS": "5"}


@pytest.fixture(params=["double", "real"])
def scenario(
    request: pytest.FixtureRequest, nats_server: NatsServer, tmp_path: Path
) -> Iterator[Scenario]:
    log = tmp_path / "operator.log"
    procs: list[OperatorProcess] = []
    if request.param == "double":
        cluster: Cluster | KubeCluster = request.getfixturevalue("cluster")
        assert isinstance(cluster, Cluster)
        url = cluster.api.url

        def start() -> OperatorProcess:
            procs.append(OperatorProcess(api_url=url, nats_url=nats_server.url, log=log))
            return procs[-1]

        def restart() -> None:
            assert isinstance(cluster, Cluster)
            cluster.api.compact()
            cluster.api.close_watches()

    else:
        kube: KubeRest = request.getfixturevalue("kube")
        namespace: str = request.getfixturevalue("namespace")
        helm: Helm = request.getfixturevalue("helm")
        cluster = KubeCluster(kube, request.getfixturevalue("kubelet"), namespace=namespace)
        objects = [o for o in render(helm, namespace) if o["kind"] in RBAC_KINDS]
        for obj in objects:
            kube.apply(obj)
        (account,) = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
        kubeconfig = token_kubeconfig(kube, namespace, account, tmp_path / "operator.kubeconfig")

        def start() -> OperatorProcess:
            procs.append(
                OperatorProcess(
                    api_url="",  # log in with the kubeconfig, as in a cluster without one
                    nats_url=nats_server.url,
                    log=log,
                    namespaces=(namespace,),
                    env={"KUBECONFIG": str(kubeconfig)},
                )
            )
            return procs[-1]

        plane: ControlPlane = request.getfixturevalue("control_plane")

        def restart() -> None:
            plane.restart_apiserver(compact=True)

    yield Scenario(request.param, cluster, start, restart)
    for proc in procs:
        proc.stop(timeout=5)
    if isinstance(cluster, KubeCluster):
        for obj in objects:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kube.request("DELETE", kube.path_of(obj))
        for cr in kube.get(cluster.crs_path)["items"]:  # the operator's finalizer would hold it
            kube.patch(
                f"{cluster.crs_path}/{cr['metadata']['name']}", {"metadata": {"finalizers": None}}
            )
    if log.exists():  # shown by pytest only when the test failed
        sys.stdout.write(log.read_text()[-6000:])


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


async def test_not_ready_past_grace_moves_shards_and_ready_again_gets_them_back(
    scenario: Scenario,
) -> None:
    cluster = scenario.cluster
    scenario.start_operator()
    cluster.add_pod("w-0")
    cluster.add_pod("w-1")
    cluster.add_cr(shards=4, grace=2)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="both pods assigned")
    cluster.set_ready("w-1", False)
    await wait_until(lambda: cluster.assignment() == {"w-0": "0-3"}, what="moved past grace")
    await wait_until(
        lambda: any("w-1" in m for m in cluster.events(crd.EVENT_POD_NOT_READY_PAST_GRACE)),
        what="a PodNotReadyPastGrace Event naming w-1",
    )
    cluster.set_ready("w-1", True)
    await wait_until(lambda: len(cluster.assignment()) == 2, what="w-1 back")


async def test_two_crs_in_one_namespace_and_a_deleted_cr_releases_its_consumers(
    scenario: Scenario, nats_server: NatsServer
) -> None:
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
    cluster.delete_cr("orders")
    await wait_until(lambda: not cluster.has_cr("orders"), what="orders gone (finalizer removed)")
    assert await held_filters(nats_server.url) == {}
    assert cluster.assignment("billing") == {"x-0": "0-2"}


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
    """Pods made and deleted by the real StatefulSet controller."""
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
