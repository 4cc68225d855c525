"""conditions: reasons per situation; lastTransitionTime only on a flip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from coordshard_operator.kube import crd
from coordshard_operator.kube.status import Summary, merge_conditions, report

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def by_type(summary: Summary) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in report(summary)}


@pytest.mark.parametrize(
    ("summary", "ready", "progressing", "degraded"),
    [
        pytest.param(
            Summary(1, 8, 2, 0),
            ("True", crd.REASON_CONVERGED),
            ("False", crd.REASON_CONVERGED),
            ("False", crd.REASON_ALL_ASSIGNED),
            id="converged",
        ),
        pytest.param(
            Summary(1, 8, 2, 0, moved=3),
            ("True", crd.REASON_CONVERGED),
            ("True", crd.REASON_SHARDS_MOVED),
            ("False", crd.REASON_ALL_ASSIGNED),
            id="moved",
        ),
        pytest.param(
            Summary(1, 8, 0, 8),
            ("False", crd.REASON_NO_MEMBERS),
            ("False", crd.REASON_CONVERGED),
            ("True", crd.REASON_NO_MEMBERS),
            id="no-members",
        ),
        pytest.param(
            Summary(1, 8, 1, 2),
            ("False", crd.REASON_SHARDS_UNASSIGNED),
            ("False", crd.REASON_CONVERGED),
            ("True", crd.REASON_SHARDS_UNASSIGNED),
            id="unassigned",
        ),
        pytest.param(
            Summary(1, 8, 2, 0, error="nats down"),
            ("False", crd.REASON_RECONCILE_FAILED),
            ("False", crd.REASON_CONVERGED),
            ("True", crd.REASON_RECONCILE_FAILED),
            id="error",
        ),
        pytest.param(
            Summary(1, 8, 2, 0, invalid="bad"),
            ("False", crd.REASON_INVALID_SPEC),
            ("False", crd.REASON_INVALID_SPEC),
            ("True", crd.REASON_INVALID_SPEC),
            id="invalid",
        ),
    ],
)
def test_reasons(
    summary: Summary,
    ready: tuple[str, str],
    progressing: tuple[str, str],
    degraded: tuple[str, str],
) -> None:
    assert by_type(summary) == {
        crd.CONDITION_READY: ready,
        crd.CONDITION_PROGRESSING: progressing,
        crd.CONDITION_DEGRADED: degraded,
    }


def test_transition_time_changes_only_on_a_flip() -> None:
    first = merge_conditions(report(Summary(1, 8, 2, 0)), None, generation=1, now=T0)
    later = T0 + timedelta(minutes=1)
    same = merge_conditions(report(Summary(1, 8, 3, 0)), first, generation=1, now=later)
    assert [c["lastTransitionTime"] for c in same] == [c["lastTransitionTime"] for c in first]
    assert same[0]["message"] != first[0]["message"]
    flipped = merge_conditions(report(Summary(1, 8, 0, 8)), same, generation=1, now=later)
    times = {c["type"]: c["lastTransitionTime"] for c in flipped}
    assert times[crd.CONDITION_READY] == "2026-01-01T00:01:00Z"
    assert times[crd.CONDITION_PROGRESSING] == "2026-01-01T00:00:00Z"


def test_unowned_messages_removed_add_up_and_hold_the_condition() -> None:
    from coordshard_operator.kube.status import converged, failed

    now = datetime(2026, 1, 1, tzinfo=UTC)
    base = {"generation": 1, "shards": 16, "members": 1, "unassigned": 0}
    first = converged(
        {},
        summary=Summary(**base),  # type: ignore[arg-type]
        epoch=1,
        members=[],
        unassigned=[],
        rebalance=None,
        now=now,
    )
    cond = {c["type"]: c for c in first["conditions"]}[crd.CONDITION_UNOWNED_MESSAGES]
    assert (first["unownedMessagesRemoved"], cond["status"]) == (0, "False")
    swept = converged(
        first,
        summary=Summary(**base, unowned_removed=3),  # type: ignore[arg-type]
        epoch=1,
        members=[],
        unassigned=[],
        rebalance=None,
        now=now + timedelta(seconds=5),
    )
    later = failed(swept, generation=1, now=now + timedelta(seconds=9), error="NATS down")
    for status in (swept, later):
        cond = {c["type"]: c for c in status["conditions"]}[crd.CONDITION_UNOWNED_MESSAGES]
        assert status["unownedMessagesRemoved"] == 3
        assert (cond["status"], cond["reason"]) == ("True", crd.REASON_UNOWNED_REMOVED)
        assert cond["lastTransitionTime"] == "2026-01-01T00:00:05Z"
