"""The kubelet's and the scheduler's part for pods on a real control plane.

Owns ``Kubelet``: a Node it registers (Ready, as a kubelet reports it), and
for each pod what the missing components would do, through the same API
calls: the scheduler's ``binding`` subresource (``spec.nodeName``), the
kubelet's status writes (``Running`` with ``Ready``/``ContainersReady``
conditions and container statuses, readiness flipped later, a container
restarted in place), and the end of
a graceful deletion (``DELETE`` with ``gracePeriodSeconds=0`` and the pod's
UID as precondition, as the kubelet sends once the containers are gone). Why
by hand: there is no container runtime here; which containers really run
(e.g. a ``coordshard worker`` per pod) is the caller's business. A deletion
the harness does not finish stays Terminating, as with a kubelet that is
gone.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

from coordshard_operator.testing.kuberest import KubeRest

__all__ = ["Kubelet"]

Obj = dict[str, Any]
_POD_IPS = itertools.count(2)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pods(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


class Kubelet:
    """One Node, and the pods bound to it."""

    def __init__(self, api: KubeRest, *, node: str = "node-0") -> None:
        self.api = api
        self.node = node

    def register(self) -> Obj:
        """Create the Node (if it is not there) and report it Ready."""
        status, _ = self.api.request(
            "POST",
            "/api/v1/nodes",
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node}},
        )
        if status not in (201, 409):
            raise AssertionError(f"registering node {self.node}: {status}")
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "lastHeartbeatTime": _now(),
            "lastTransitionTime": _now(),
        }
        return self.api.patch(
            f"/api/v1/nodes/{self.node}/status",
            {
                "status": {
                    "conditions": [ready],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                }
            },
        )

    def bind(self, namespace: str, pod: str) -> None:
        """Schedule ``pod`` onto this Node, as kube-scheduler does (the binding subresource)."""
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        self.api.create(f"{_pods(namespace)}/{pod}/binding", binding)

    def run(self, namespace: str, pod: str, *, ready: bool = True) -> Obj:
        """Bind ``pod`` if it is not yet, then report its containers running (and Ready)."""
        body = self.api.get(f"{_pods(namespace)}/{pod}")
        if not body["spec"].get("nodeName"):
            self.bind(namespace, pod)
        started = _now()
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": f"10.244.0.{next(_POD_IPS) % 250 + 2}",
            "startTime": started,
            "conditions": self._conditions(ready),
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "containerID": f"containerd://{body['metadata']['uid']}-{c['name']}",
                    "ready": ready,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                }
                for c in body["spec"]["containers"]
            ],
        }
        return self.api.patch(f"{_pods(namespace)}/{pod}/status", {"status": status})

    def set_ready(self, namespace: str, pod: str, ready: bool) -> Obj:
        """Flip the pod's readiness (a readiness probe passing or failing)."""
        body = self.api.get(f"{_pods(namespace)}/{pod}")
        statuses = [
            {**c, "ready": ready} for c in body.get("status", {}).get("containerStatuses") or []
        ]
        patch = {"status": {"conditions": self._conditions(ready), "containerStatuses": statuses}}
        return self.api.patch(f"{_pods(namespace)}/{pod}/status", patch)

    def restart_container(self, namespace: str, pod: str, *, ready: bool = True) -> Obj:
        """The pod's containers crashed and were started again in the same pod, as the
        kubelet reports it: same UID, ``restartCount`` + 1, a new container ID, the old
        run in ``lastState``, and Ready (unless ``ready=False``)."""
        body = self.api.get(f"{_pods(namespace)}/{pod}")
        started = _now()
        statuses = [
            {
                **c,
                "ready": ready,
                "restartCount": int(c.get("restartCount") or 0) + 1,
                "containerID": f"{c['containerID']}-r{int(c.get('restartCount') or 0) + 1}",
                "lastState": {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "Error",
                        "startedAt": c["state"]["running"]["startedAt"],
                        "finishedAt": started,
                        "containerID": c["containerID"],
                    }
                },
                "state": {"running": {"startedAt": started}},
            }
            for c in body["status"]["containerStatuses"]
        ]
        patch = {"status": {"conditions": self._conditions(ready), "containerStatuses": statuses}}
        return self.api.patch(f"{_pods(namespace)}/{pod}/status", patch)

    def finish_deletion(self, namespace: str, pod: str) -> None:
        """The kubelet's last word on a Terminating pod: delete it now (grace 0), if it
        is still the same pod (UID precondition)."""
        body = self.api.get(f"{_pods(namespace)}/{pod}")
        self.api.delete(
            f"{_pods(namespace)}/{pod}",
            gracePeriodSeconds=0,
            preconditions={"uid": body["metadata"]["uid"]},
        )

    def sync(self, namespace: str, *, selector: str = "") -> list[str]:
        """One pass of a kubelet's loop over the pods a controller made: start the ones
        not running yet, finish the deletion of the terminating ones; the names of the
        pods running after it (sorted)."""
        query = {"labelSelector": selector} if selector else None
        running = []
        for body in self.api.call("GET", _pods(namespace), query=query)["items"]:
            name = body["metadata"]["name"]
            if body["metadata"].get("deletionTimestamp"):
                self.finish_deletion(namespace, name)
            elif (body.get("status") or {}).get("phase") != "Running":
                self.run(namespace, name)
                running.append(name)
            else:
                running.append(name)
        return sorted(running)

    @staticmethod
    def _conditions(ready: bool) -> list[Obj]:
        now, flag = _now(), "True" if ready else "False"
        return [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ]
