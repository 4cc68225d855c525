"""The API rules the operator and the harness rely on, on both backends side by side.

Each test runs on the double (over HTTPS, through the same client) and on
the real kube-apiserver; where the double answered differently, the double
was fixed. The pods here are moved on by ``Kubelet``, the harness that plays
the kubelet on the real control plane, so these tests are also what keeps
the harness honest on the double.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordshard_operator.testing.kubelet import Kubelet
from coordshard_operator.testing.kuberest import KubeRest

pytestmark = pytest.mark.integration

API = tuple[KubeRest, str]


def pod(name: str, grace: int | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"containers": [{"name": "worker", "image": "coordshard:test"}]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def started(api: API, name: str, grace: int | None = None) -> Kubelet:
    rest, ns = api
    rest.create(f"/api/v1/namespaces/{ns}/pods", pod(name, grace))
    kubelet = Kubelet(rest)
    kubelet.register()
    kubelet.run(ns, name)
    return kubelet


def seconds_until(stamp: str) -> float:
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


def test_binding_schedules_a_pod_once(api: API) -> None:
    rest, ns = api
    kubelet = started(api, "w-0")
    body = rest.get(f"/api/v1/namespaces/{ns}/pods/w-0")
    assert body["spec"]["nodeName"] == kubelet.node
    assert body["status"]["phase"] == "Running"
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "w-0"},
        "target": {"kind": "Node", "name": "elsewhere"},
    }
    status, answer = rest.request("POST", f"/api/v1/namespaces/{ns}/pods/w-0/binding", binding)
    assert (status, answer["reason"]) == (409, "Conflict")


def test_a_pods_main_resource_ignores_status_and_its_status_takes_metadata(api: API) -> None:
    """Unlike a custom resource's, a pod's /status keeps metadata changes (the kubelet's)."""
    rest, ns = api
    started(api, "w-0")
    path = f"/api/v1/namespaces/{ns}/pods/w-0"
    patched = rest.patch(path, {"metadata": {"labels": {"a": "b"}}, "status": {"phase": "Failed"}})
    assert patched["status"]["phase"] == "Running" and patched["metadata"]["labels"] == {"a": "b"}
    patched = rest.patch(
        f"{path}/status", {"metadata": {"labels": {"a": "c"}}, "spec": {"nodeName": "other"}}
    )
    assert patched["metadata"]["labels"] == {"a": "c"} and patched["spec"]["nodeName"] == "node-0"


def test_a_custom_resources_status_takes_nothing_but_status(api: API) -> None:
    rest, ns = api
    crs = f"/apis/coordshard.io/v1alpha1/namespaces/{ns}/coordinateshards"
    body = {
        "apiVersion": "coordshard.io/v1alpha1",
        "kind": "CoordinateShards",
        "metadata": {"name": "orders"},
        "spec": {"shards": 4, "selector": {"matchLabels": {"app": "w"}}},
    }
    rest.create(crs, body)
    patch = {
        "metadata": {"labels": {"a": "c"}, "finalizers": ["x/y"]},
        "spec": {"stream": "OTHER"},
        "status": {"epoch": 1},
    }
    patched = rest.patch(f"{crs}/orders/status", patch)
    assert patched["status"] == {"epoch": 1} and patched["spec"]["stream"] == "COORDINATE"
    assert "labels" not in patched["metadata"] and "finalizers" not in patched["metadata"]
    assert patched["metadata"]["generation"] == 1


def test_an_unbound_pod_is_deleted_at_once(api: API) -> None:
    rest, ns = api
    rest.create(f"/api/v1/namespaces/{ns}/pods", pod("w-0"))
    rest.delete(f"/api/v1/namespaces/{ns}/pods/w-0")
    assert rest.request("GET", f"/api/v1/namespaces/{ns}/pods/w-0")[0] == 404


@pytest.mark.parametrize("grace", [None, 7])
def test_a_bound_pod_is_terminating_until_its_kubelet_deletes_it_with_grace_0(
    api: API, grace: int | None
) -> None:
    rest, ns = api
    kubelet = started(api, "w-0", grace)
    path = f"/api/v1/namespaces/{ns}/pods/w-0"
    rest.delete(path)
    terminating = rest.get(path)
    meta = terminating["metadata"]
    expected = 30 if grace is None else grace  # the pod's terminationGracePeriodSeconds
    assert meta["deletionGracePeriodSeconds"] == expected
    assert expected - 5 < seconds_until(meta["deletionTimestamp"]) <= expected + 1
    rest.delete(path)  # a second delete changes nothing
    assert rest.get(path)["metadata"]["deletionTimestamp"] == meta["deletionTimestamp"]
    kubelet.finish_deletion(ns, "w-0")
    assert rest.request("GET", path)[0] == 404


def test_a_delete_for_another_uid_is_a_conflict(api: API) -> None:
    rest, ns = api
    started(api, "w-0")
    path = f"/api/v1/namespaces/{ns}/pods/w-0"
    status, answer = rest.request(
        "DELETE",
        path,
        {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": "other"}},
    )
    assert (status, answer["reason"]) == (409, "Conflict")
    assert rest.request("GET", path)[0] == 200
