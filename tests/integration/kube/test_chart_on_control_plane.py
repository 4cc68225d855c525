"""The chart on the real control plane: its RBAC as the operator's identity, and its
pods admitted by Pod Security ``restricted``.

``helm template`` renders charts/ (as test_chart does) into a namespace of
the test's own and the objects are created through the API. RBAC: a token
for the chart's ServiceAccount from the TokenRequest API, in a kubeconfig
with ``*-data`` fields, is the identity every check runs as, so what is
checked is what the operator would be allowed. Pod Security: ``helm
install`` into a namespace enforcing ``restricted``; the real admission
plugin judges the pods the real controller-manager makes from the chart's
StatefulSet and Deployment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordshard_operator.testing.controlplane import ControlPlane
from coordshard_operator.testing.kubelet import Kubelet
from coordshard_operator.testing.kuberest import MERGE_PATCH, KubeRest, write_kubeconfig

from .conftest import CHART, Helm, Rule, rbac_rules

pytestmark = pytest.mark.integration

Obj = dict[str, Any]
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
POD_TIMEOUT = 30.0


def render(helm: Helm, namespace: str, *sets: str) -> list[Obj]:
    """``helm template`` with the release named after the namespace (cluster-scoped
    names stay unique on the shared control plane)."""
    flags = [f"--set={s}" for s in sets]
    out = helm("template", namespace, str(CHART), "--namespace", namespace, *flags)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def wait_for(check: Callable[[], Any], *, what: str, timeout: float = POD_TIMEOUT) -> Any:
    """Poll ``check`` until truthy (a deadline on a condition, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return result


def token_kubeconfig(kube: KubeRest, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig for ``account`` with a token the TokenRequest API minted."""
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    minted = kube.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", request)
    token = minted["status"]["token"]
    return write_kubeconfig(path, server=kube.server, ca=kube.ca, user=account, token=token)


def allowed(api: KubeRest, rule: Rule, namespace: str) -> bool:
    verb, group, resource = rule
    plural, _, sub = resource.partition("/")
    attributes = {"verb": verb, "group": group, "resource": plural, "subresource": sub}
    review = api.create(
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {**attributes, "namespace": namespace}},
        },
    )
    return bool(review["status"]["allowed"])


OUTSIDE = [
    ("delete", "", "secrets"),
    ("list", "", "secrets"),
    ("list", "", "nodes"),
    ("create", "", "pods"),
    ("delete", "coordshard.io", "coordinateshards"),
    ("update", "coordshard.io", "coordinateshards"),
    ("create", "", "serviceaccounts/token"),
]
"""Calls the operator never makes: the chart must not grant them."""


def test_the_operator_identity_may_make_every_call_the_chart_grants_and_no_other(
    kube: KubeRest, helm: Helm, namespace: str, tmp_path: Path
) -> None:
    objects = render(helm, namespace)
    for obj in objects:
        if obj["kind"] in RBAC_KINDS:
            kube.apply(obj)
    (account,) = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
    operator = KubeRest.from_kubeconfig(
        token_kubeconfig(kube, namespace, account, tmp_path / "operator.kubeconfig")
    )
    review = operator.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    assert review["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:{account}"
    )

    granted = rbac_rules(objects)
    assert granted and {r: allowed(operator, r, namespace) for r in granted} == dict.fromkeys(
        granted, True
    )
    assert {r: allowed(operator, r, namespace) for r in OUTSIDE} == dict.fromkeys(OUTSIDE, False)

    # The calls themselves, as kopf and the operator make them.
    crs = f"/apis/coordshard.io/v1alpha1/namespaces/{namespace}/coordinateshards"
    body = {
        "apiVersion": "coordshard.io/v1alpha1",
        "kind": "CoordinateShards",
        "metadata": {"name": "orders"},
        "spec": {"shards": 4, "selector": {"matchLabels": {"app": "w"}}},
    }
    kube.create(crs, body)
    for path in (
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "/api/v1/namespaces",
        f"/api/v1/namespaces/{namespace}/pods?labelSelector=coordshard.io/worker",
        "/api/v1/pods",
        crs,
    ):
        status, answer = operator.request("GET", path)
        assert status == 200, (path, answer)
    finalizer = {"metadata": {"finalizers": ["coordshard.io/consumers"]}}
    assert operator.request("PATCH", f"{crs}/orders", finalizer, content_type=MERGE_PATCH)[0] == 200
    status_patch = {"status": {"epoch": 1}}
    status, answer = operator.request(
        "PATCH", f"{crs}/orders/status", status_patch, content_type=MERGE_PATCH
    )
    assert (status, answer["status"]) == (200, {"epoch": 1})
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "orders."},
        "involvedObject": {"kind": "CoordinateShards", "namespace": namespace, "name": "orders"},
        "reason": "ShardsMoved",
        "message": "test",
        "type": "Normal",
    }
    status, answer = operator.request("POST", f"/api/v1/namespaces/{namespace}/events", event)
    assert status == 201, answer
    status, answer = operator.request("GET", f"/api/v1/namespaces/{namespace}/secrets/nats")
    assert (status, answer["reason"]) == (404, "NotFound")  # allowed to look: it is not there

    # ...and calls outside the RBAC, refused.
    kube.create(f"/api/v1/namespaces/{namespace}/secrets", {"metadata": {"name": "db"}})
    for method, path in (
        ("DELETE", f"/api/v1/namespaces/{namespace}/secrets/db"),
        ("GET", "/api/v1/nodes"),
        ("DELETE", f"{crs}/orders"),
    ):
        status, answer = operator.request(method, path)
        assert (status, answer["reason"]) == (403, "Forbidden"), (method, path)
    kube.patch(f"{crs}/orders", {"metadata": {"finalizers": None}})
    for obj in objects:
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            kube.request("DELETE", kube.path_of(obj))


def test_helm_install_in_a_restricted_namespace_makes_pods_that_are_admitted(
    control_plane: ControlPlane, kube: KubeRest, kubelet: Kubelet, helm: Helm, namespace: str
) -> None:
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    kube.patch(f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": labels}})
    pods = f"/api/v1/namespaces/{namespace}/pods"
    refused = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    status, answer = kube.request("POST", pods, refused)
    assert status == 403 and "violates PodSecurity" in answer["message"]  # enforcement is on

    # The ServiceAccount admission plugin refuses pods until the controller-manager has
    # made the namespace's "default" account (the workers run as it).
    wait_for(
        lambda: (
            kube.request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")[0] == 200
        ),
        what="the default ServiceAccount",
    )
    kubeconfig = ("--kubeconfig", str(control_plane.kubeconfig), "--namespace", namespace)
    install = helm("install", namespace, str(CHART), *kubeconfig, "--set=example.enabled=true")
    assert install.returncode == 0, install.stderr
    objects = render(helm, namespace, "example.enabled=true")
    (sts,) = [o for o in objects if o["kind"] == "StatefulSet"]
    replicas = sts["spec"]["replicas"]

    def made() -> list[Obj]:
        items: list[Obj] = kube.get(pods)["items"]
        owners = {o["metadata"]["ownerReferences"][0]["kind"] for o in items}
        return (
            items if len(items) == replicas + 1 and owners == {"StatefulSet", "ReplicaSet"} else []
        )

    try:
        created = wait_for(made, what=f"{replicas} worker pods and the operator's")
    except AssertionError as e:
        events = kube.get(f"/api/v1/namespaces/{namespace}/events")["items"]
        raise AssertionError(f"{e}: {[ev['message'] for ev in events]}") from e
    workers = sorted(
        p["metadata"]["name"] for p in created if "coordshard.io/worker" in p["metadata"]["labels"]
    )
    assert workers == [f"{sts['metadata']['name']}-{i}" for i in range(replicas)]
    for name in workers:
        kubelet.run(namespace, name)
    sts_path = kube.path_of(sts)
    wait_for(
        lambda: kube.get(sts_path).get("status", {}).get("readyReplicas") == replicas,
        what="the StatefulSet counting its pods Ready",
    )
    uninstall = helm("uninstall", namespace, *kubeconfig)  # its ClusterRole is cluster-wide
    assert uninstall.returncode == 0, uninstall.stderr
