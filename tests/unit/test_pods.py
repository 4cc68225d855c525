"""membership: member / held / lost, the grace period, and the selector."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from coordshard_operator.kube.pods import PodState, membership, pod_state

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def pod(
    name: str,
    *,
    ready: bool = True,
    phase: str = "Running",
    since: timedelta = timedelta(minutes=5),
    labels: dict[str, str] | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": f"uid-{name}",
        "labels": labels if labels is not None else {"app": "w"},
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T11:59:00Z"
    stamp = (NOW - since).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": meta,
        "status": {
            "phase": phase,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": stamp,
                }
            ],
        },
    }


def run(*bodies: dict[str, Any], grace: int = 10) -> tuple[list[str], list[str], list[str]]:
    obs = membership(
        [pod_state(b) for b in bodies],
        namespace="ns",
        selector={"app": "w"},
        grace_seconds=grace,
        now=NOW,
    )
    return (
        [p.name for p in obs.members],
        [p.name for p in obs.held],
        [p.name for p in obs.lost],
    )


def test_running_ready_pods_are_members_in_name_order() -> None:
    assert run(pod("b"), pod("a")) == (["a", "b"], [], [])


@pytest.mark.parametrize(
    ("body", "state"),
    [
        pytest.param(pod("p", deleting=True), "lost", id="terminating"),
        pytest.param(pod("p", phase="Failed", ready=False), "lost", id="failed"),
        pytest.param(pod("p", phase="Succeeded", ready=False), "lost", id="succeeded"),
        pytest.param(
            pod("p", ready=False, since=timedelta(seconds=3)), "held", id="not-ready-within-grace"
        ),
        pytest.param(
            pod("p", ready=False, since=timedelta(seconds=10)), "lost", id="not-ready-past-grace"
        ),
        pytest.param(
            pod("p", phase="Pending", ready=False, since=timedelta(0)), "lost", id="pending"
        ),
    ],
)
def test_member_state(body: dict[str, Any], state: str) -> None:
    members, held, lost = run(body)
    assert {"member": members, "held": held, "lost": lost}[state] == ["p"]


def test_grace_zero_moves_at_once() -> None:
    assert run(pod("p", ready=False, since=timedelta(0)), grace=0) == ([], [], ["p"])


def test_recheck_is_when_the_earliest_grace_ends() -> None:
    obs = membership(
        [
            pod_state(pod("a", ready=False, since=timedelta(seconds=2))),
            pod_state(pod("b", ready=False, since=timedelta(seconds=7))),
        ],
        namespace="ns",
        selector={"app": "w"},
        grace_seconds=10,
        now=NOW,
    )
    assert obs.recheck_at == NOW + timedelta(seconds=3)


def test_other_labels_and_namespaces_are_ignored() -> None:
    other_ns = pod("c")
    other_ns["metadata"]["namespace"] = "elsewhere"
    assert run(pod("a"), pod("b", labels={"app": "x"}), other_ns) == (["a"], [], [])


def test_a_returning_pod_with_a_new_uid_is_a_new_member() -> None:
    first = PodState(namespace="ns", name="w-0", uid="1")
    again = PodState(namespace="ns", name="w-0", uid="2")
    assert first.member_id("g") != again.member_id("g")
    assert first.member_id("g").startswith("g_w-0_")


def test_a_container_restarted_in_place_is_the_same_member_with_its_restarts_counted() -> None:
    body = pod("w-0")
    before = pod_state(body)
    body["status"]["containerStatuses"] = [
        {"name": "worker", "restartCount": 2},
        {"name": "sidecar", "restartCount": 1},
    ]
    after = pod_state(body)
    assert (before.restarts, after.restarts) == (0, 3)
    assert after.member_id("g") == before.member_id("g")
