"""The operator against a real API server: the double's scenarios on kind.

The operator runs out of cluster (``coordshard operator`` with the
kubeconfig) next to a local nats-server; the worker pods are ``pause``
containers carrying the worker label, so Ready is the kubelet's own verdict.
Opt-in: ``pytest --with-e2e`` (see conftest.py for what it needs).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, utils

from coordshard_operator.kube import crd
from coordshard_operator.local.natsserver import NatsServer, start_server
from coordshard_operator.testing.cluster import OperatorProcess, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[tuple[client.CoreV1Api, client.CustomObjectsApi, str]]:
    config.load_kube_config(str(kubeconfig))
    api = client.ApiClient()
    with contextlib.suppress(utils.FailToCreateError):  # already there
        utils.create_from_yaml(api, str(ROOT / "crds" / "coordinateshards.yaml"))
    core = client.CoreV1Api(api)
    ns = "cs-" + uuid.uuid4().hex[:6]
    core.create_namespace({"metadata": {"name": ns}})
    yield core, client.CustomObjectsApi(api), ns
    core.delete_namespace(ns)


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_server(tmp_path / "nats")
    yield server
    server.kill()


def pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": "w", crd.LABEL_WORKER: "true"}},
        "spec": {"containers": [{"name": "p", "image": "registry.k8s.io/pause:3.9"}]},
    }


async def test_shards_follow_pods_on_a_real_cluster(
    kube: tuple[client.CoreV1Api, client.CustomObjectsApi, str],
    kubeconfig: Path,
    nats: NatsServer,
    tmp_path: Path,
) -> None:
    core, custom, ns = kube
    proc = OperatorProcess(
        api_url="",  # no override: kopf logs in with the kubeconfig
        nats_url=nats.url,
        log=tmp_path / "operator.log",
        namespaces=(ns,),
        env={"KUBECONFIG": str(kubeconfig)},
    )
    try:
        for name in ("w-0", "w-1"):
            core.create_namespaced_pod(ns, pod(name))
        body = {
            "apiVersion": crd.API_VERSION,
            "kind": crd.KIND,
            "metadata": {"name": "orders"},
            "spec": {
                "shards": 4,
                "selector": {"matchLabels": {"app": "w"}},
                "failover": {"gracePeriodSeconds": 0},
            },
        }
        custom.create_namespaced_custom_object(crd.GROUP, crd.VERSION, ns, crd.PLURAL, body)

        def assignment() -> dict[str, str]:
            obj = custom.get_namespaced_custom_object(
                crd.GROUP, crd.VERSION, ns, crd.PLURAL, "orders"
            )
            return dict((obj.get("status") or {}).get("assignment") or {})

        await wait_until(lambda: len(assignment()) == 2, timeout=180, what="assigned")
        core.delete_namespaced_pod("w-1", ns, grace_period_seconds=0)
        await wait_until(lambda: list(assignment()) == ["w-0"], timeout=60, what="moved")
        with pytest.raises(client.ApiException) as refused:
            custom.patch_namespaced_custom_object(
                crd.GROUP, crd.VERSION, ns, crd.PLURAL, "orders", {"spec": {"shards": 8}}
            )
        assert refused.value.status == 422  # the CEL immutability rule
        custom.delete_namespaced_custom_object(crd.GROUP, crd.VERSION, ns, crd.PLURAL, "orders")
        await wait_until(
            lambda: (
                not custom.list_namespaced_custom_object(crd.GROUP, crd.VERSION, ns, crd.PLURAL)[
                    "items"
                ]
            ),
            timeout=60,
            what="CR released",
        )
    finally:
        proc.stop()
