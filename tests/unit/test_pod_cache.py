"""The operator's pod cache forgets pods a relisted watch never reported deleted."""

from __future__ import annotations

from typing import Any

from coordshard_operator.kube.runtime import Runtime
from coordshard_operator.kube.settings import OperatorSettings


def pod(name: str, rv: int, namespace: str = "ns") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": str(rv),
            "labels": {"app": "w"},
        },
        "spec": {},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


def cached() -> Runtime:
    runtime = Runtime(settings=OperatorSettings())
    runtime.pod_event("ADDED", pod("kept", 10))
    runtime.pod_event("ADDED", pod("ghost", 11))
    runtime.pod_event("ADDED", pod("newer", 30))
    runtime.pod_event("ADDED", pod("elsewhere", 5, namespace="other"))
    return runtime


def test_a_pod_missing_from_a_newer_list_is_forgotten_and_a_newer_pod_kept() -> None:
    runtime = cached()
    assert runtime.prune_pods("ns", listed=["kept"], list_version="20") == ["ghost"]
    assert sorted(name for _, name in runtime.pods) == ["elsewhere", "kept", "newer"]


def test_a_list_that_is_not_newer_or_has_no_numeric_version_forgets_nothing() -> None:
    runtime = cached()
    assert runtime.prune_pods("ns", listed=[], list_version="9") == []
    assert runtime.prune_pods("ns", listed=[], list_version="") == []
    assert len(runtime.pods) == 4
