"""The independent check finds lost and twice-applied commands."""

from __future__ import annotations

from coordshard_client.messages import Point
from coordshard_operator.local.check import compare
from coordshard_operator.local.load import ExpectedPoint


def point(pid: str, coords: tuple[float, ...], version: int) -> Point:
    return Point(system_id="s", point_id=pid, coordinates=coords, version=version)


def test_matching_state_is_clean() -> None:
    verdict = compare(
        {("s", "a"): ExpectedPoint([1.0, 2.0], 3)}, {("s", "a"): point("a", (1, 2), 3)}
    )
    assert verdict.clean and verdict.checked == 1


def test_a_move_applied_twice_is_a_duplicate_effect() -> None:
    verdict = compare(
        {("s", "a"): ExpectedPoint([1.0, 2.0], 3)}, {("s", "a"): point("a", (2, 2), 4)}
    )
    assert verdict.duplicate_effects == 1 and not verdict.clean


def test_a_move_never_applied_and_a_missing_point_are_lost() -> None:
    verdict = compare(
        {("s", "a"): ExpectedPoint([1.0, 2.0], 3), ("s", "b"): ExpectedPoint([0.0, 0.0], 2)},
        {("s", "a"): point("a", (0, 2), 2)},
    )
    assert verdict.lost == 1 + 2
    assert len(verdict.details) == 2


def test_wrong_coordinates_at_the_right_version_are_mismatched() -> None:
    verdict = compare(
        {("s", "a"): ExpectedPoint([1.0, 2.0], 3)}, {("s", "a"): point("a", (9, 9), 3)}
    )
    assert verdict.mismatched == 1


def test_unknown_points_are_skipped_and_unexpected_ones_counted() -> None:
    verdict = compare(
        {("s", "a"): ExpectedPoint([1.0, 2.0], 3, uncertain=True)},
        {("s", "a"): point("a", (5, 5), 9), ("s", "z"): point("z", (0, 0), 1)},
    )
    assert verdict.skipped_uncertain == 1 and verdict.unexpected == 1 and verdict.checked == 0
