"""What a scenario reads back from a cluster, on the API-server double and on kube-apiserver.

Owns ``ClusterView``: a CR's status, assignment and conditions, the Events of
one reason, and a pod's member id, read the same way whichever cluster holds
them. Only the three fetches differ (``cr``, ``pod``, ``all_events``), so
``testing.cluster.Cluster`` and ``testing.kubecluster.KubeCluster`` each give
those and share the rest: one copy, so the two cannot drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from coordshard_client.naming import member_id

__all__ = ["ClusterView"]

Obj = dict[str, Any]


class ClusterView(ABC):
    """Readers over a CR's status and the namespace's Events, given the three fetches."""

    @abstractmethod
    def cr(self, name: str = "orders") -> Obj: ...

    @abstractmethod
    def pod(self, name: str) -> Obj: ...

    @abstractmethod
    def all_events(self) -> list[Obj]:
        """Every Event of the namespace."""

    def status(self, name: str = "orders") -> Obj:
        status: Obj = self.cr(name).get("status") or {}
        return status

    def assignment(self, name: str = "orders") -> dict[str, str]:
        """Pod -> shard ranges, from the CR's status."""
        assignment: dict[str, str] = self.status(name).get("assignment") or {}
        return assignment

    def condition(self, type_: str, name: str = "orders") -> str | None:
        for c in self.status(name).get("conditions") or []:
            if c["type"] == type_:
                return str(c["status"])
        return None

    def event_objects(self, reason: str) -> list[Obj]:
        return [e for e in self.all_events() if e.get("reason") == reason]

    def events(self, reason: str) -> list[str]:
        return [e["message"] for e in self.event_objects(reason)]

    def consumer(self, pod: str, group: str = "orders") -> str:
        """The member id of ``pod``'s current incarnation in ``group`` (its consumers'
        names add a generation: ``testing.cluster.member_of`` maps a consumer back)."""
        uid = self.pod(pod)["metadata"]["uid"]
        return member_id(group=group, member=pod, incarnation=uid)
