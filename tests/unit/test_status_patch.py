"""merge_diff: the status merge patch removes what the new status no longer has."""

from __future__ import annotations

from typing import Any

import pytest

from coordshard_operator.kube.kubeapi import merge_diff
from coordshard_operator.testing.apiserver import merge_patch


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param({}, {"a": 1}, id="add"),
        pytest.param(
            {"assignment": {"w-0": "0", "w-1": "1"}},
            {"assignment": {"w-0": "0-1"}},
            id="a-pod-leaves-the-assignment",
        ),
        pytest.param({"a": 1, "b": 2}, {"a": 1}, id="drop-key"),
        pytest.param({"c": [1, 2]}, {"c": [2]}, id="lists-replace"),
        pytest.param({"a": {"b": 1}}, {"a": {"b": 1}}, id="same"),
    ],
)
def test_applying_the_diff_gives_the_new_status(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert merge_patch(old, merge_diff(old, new)) == new


def test_an_unchanged_status_needs_no_patch() -> None:
    assert merge_diff({"a": {"b": [1]}}, {"a": {"b": [1]}}) == {}
