"""``Cluster``'s counterpart on a real control plane: pods and CRs of one namespace.

Owns ``KubeCluster``, with the methods of ``testing.cluster.Cluster`` a
scenario uses (``add_pod``, ``pod``, ``set_ready``, ``restart_container``,
``delete_pod``, ``terminate_pod``, ``put_secret``, ``delete_secret``,
``add_cr``, ``cr``, ``patch_cr``, ``delete_cr``, ``has_cr``, ``status``,
``assignment``, ``condition``, ``events``, ``consumer``), so one
scenario runs on the API-server double and on kube-apiserver alike (the
readers, from ``status`` on, are ``testing.clusterview.ClusterView``'s). What
differs is said where it differs: a pod here is bound to a Node and driven by
``Kubelet``, so deleting it is a graceful deletion that the harness finishes
(``delete_pod``) or leaves Terminating (``terminate_pod``).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from coordshard_operator.kube import crd
from coordshard_operator.testing.clusterview import ClusterView, Obj
from coordshard_operator.testing.kubelet import Kubelet
from coordshard_operator.testing.kuberest import KubeRest

__all__ = ["KubeCluster"]


class KubeCluster(ClusterView):
    """Pods (played by ``kubelet``) and CoordinateShards in ``namespace``, as the admin."""

    def __init__(self, api: KubeRest, kubelet: Kubelet, *, namespace: str) -> None:
        self.api, self.kubelet, self.namespace = api, kubelet, namespace
        self.pods_path = f"/api/v1/namespaces/{namespace}/pods"
        self.crs_path = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}"

    def add_pod(self, name: str, *, app: str = "w", ready: bool = True) -> Obj:
        """Created, scheduled and started: Running, and Ready unless ``ready=False``."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app, crd.LABEL_WORKER: "true"}},
            "spec": {"containers": [{"name": "worker", "image": "coordshard:test"}]},
        }
        self.api.create(self.pods_path, body)
        return self.kubelet.run(self.namespace, name, ready=ready)

    def pod(self, name: str) -> Obj:
        return self.api.get(f"{self.pods_path}/{name}")

    def set_ready(self, name: str, ready: bool) -> None:
        self.kubelet.set_ready(self.namespace, name, ready)

    def restart_container(self, name: str, *, ready: bool = True) -> None:
        """The worker container crashed and the kubelet started it again in the same pod."""
        self.kubelet.restart_container(self.namespace, name, ready=ready)

    def terminate_pod(self, name: str) -> None:
        """Delete the pod and leave it Terminating (its kubelet never confirms)."""
        self.api.delete(f"{self.pods_path}/{name}")

    def delete_pod(self, name: str) -> None:
        """Delete the pod and let the kubelet finish: it is gone when this returns."""
        self.terminate_pod(name)
        self.kubelet.finish_deletion(self.namespace, name)

    def put_secret(self, name: str, data: Mapping[str, bytes]) -> None:
        """Create the Secret, or replace its data (a new resourceVersion)."""
        encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
        path = f"/api/v1/namespaces/{self.namespace}/secrets"
        if self.api.request("GET", f"{path}/{name}")[0] == 200:
            self.api.patch(f"{path}/{name}", {"data": encoded})
        else:
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
            self.api.create(path, {**body, "data": encoded})

    def delete_secret(self, name: str) -> None:
        self.api.delete(f"/api/v1/namespaces/{self.namespace}/secrets/{name}")

    def add_cr(
        self, name: str = "orders", *, shards: int = 8, grace: int = 0, app: str = "w", **spec: Any
    ) -> Obj:
        body = {
            "apiVersion": f"{crd.GROUP}/{crd.VERSION}",
            "kind": crd.KIND,
            "metadata": {"name": name},
            "spec": {
                "shards": shards,
                "selector": {"matchLabels": {"app": app}},
                "failover": {"gracePeriodSeconds": grace},
                **spec,
            },
        }
        return self.api.create(self.crs_path, body)

    def cr(self, name: str = "orders") -> Obj:
        return self.api.get(f"{self.crs_path}/{name}")

    def patch_cr(self, name: str, patch: Obj) -> Obj:
        """A merge patch of the CR, as ``kubectl patch --type=merge`` sends it."""
        return self.api.patch(f"{self.crs_path}/{name}", patch)

    def delete_cr(self, name: str = "orders") -> None:
        """Delete the CR (the operator's finalizer holds it until its consumers are gone)."""
        self.api.delete(f"{self.crs_path}/{name}")

    def has_cr(self, name: str = "orders") -> bool:
        return self.api.request("GET", f"{self.crs_path}/{name}")[0] == 200

    def all_events(self) -> list[Obj]:
        items: list[Obj] = self.api.get(f"/api/v1/namespaces/{self.namespace}/events")["items"]
        return items
