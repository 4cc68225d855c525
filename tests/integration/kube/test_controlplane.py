"""The real control plane and the harness that plays its kubelet.

What the fixtures promise: the CRD from crds/ installed and served with its
status subresource, the admin authenticated by client certificate, and pods
that only a kubelet could move on (bound, Running and Ready, Terminating
until the kubelet finishes the deletion) moved on by ``Kubelet``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coordshard_operator.testing.controlplane import ControlPlane
from coordshard_operator.testing.kubelet import Kubelet
from coordshard_operator.testing.kuberest import KubeRest

pytestmark = pytest.mark.integration


def pod(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "w"}},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "worker", "image": "coordshard:test"}],
        },
    }


def ready_of(body: dict[str, object]) -> str | None:
    status = body.get("status") or {}
    assert isinstance(status, dict)
    for condition in status.get("conditions") or []:
        if condition["type"] == "Ready":
            return str(condition["status"])
    return None


def test_the_crd_is_established_and_served_with_a_status_subresource(kube: KubeRest) -> None:
    crd = kube.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/coordinateshards.coordshard.io"
    )
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    served = {r["name"] for r in kube.get("/apis/coordshard.io/v1alpha1")["resources"]}
    assert {"coordinateshards", "coordinateshards/status"} <= served


def test_the_admin_is_its_client_certificate_and_anonymous_is_refused(
    control_plane: ControlPlane, kube: KubeRest
) -> None:
    review = kube.create(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    user = review["status"]["userInfo"]
    assert user["username"] == "admin" and "system:masters" in user["groups"]
    anonymous = KubeRest(control_plane.url, ca=control_plane.ca)
    status, body = anonymous.request("GET", "/api/v1/namespaces/default/pods")
    assert (status, body["reason"]) == (403, "Forbidden")


def test_a_pod_is_bound_run_made_ready_and_not_ready_by_the_kubelet(
    kube: KubeRest, kubelet: Kubelet, namespace: str
) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    created = kube.create(pods, pod("w-0"))
    assert created["status"]["phase"] == "Pending" and not created["spec"].get("nodeName")
    running = kubelet.run(namespace, "w-0")
    assert running["spec"]["nodeName"] == kubelet.node
    assert running["status"]["phase"] == "Running" and ready_of(running) == "True"
    assert ready_of(kubelet.set_ready(namespace, "w-0", False)) == "False"
    assert ready_of(kube.get(f"{pods}/w-0")) == "False"


def test_a_deleted_bound_pod_stays_terminating_until_the_kubelet_finishes(
    kube: KubeRest, kubelet: Kubelet, namespace: str
) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods, pod("w-0"))
    kubelet.run(namespace, "w-0")
    kube.delete(f"{pods}/w-0")
    terminating = kube.get(f"{pods}/w-0")
    assert terminating["metadata"]["deletionTimestamp"]
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
    kubelet.finish_deletion(namespace, "w-0")
    status, _ = kube.request("GET", f"{pods}/w-0")
    assert status == 404


def test_an_unbound_pod_is_deleted_at_once(kube: KubeRest, namespace: str) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    kube.create(pods, pod("w-0"))
    kube.delete(f"{pods}/w-0")
    status, _ = kube.request("GET", f"{pods}/w-0")
    assert status == 404


def test_a_stopped_control_plane_leaves_no_process_and_no_directory(
    control_plane_bin: Path,
) -> None:
    plane = ControlPlane(control_plane_bin)
    plane.start()
    root = plane.root
    pids = plane.pids
    assert root is not None and root.is_dir() and len(pids) == 3
    plane.stop()
    assert not root.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # signal 0: does it exist
