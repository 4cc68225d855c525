"""The one percentile that local mode's summary and the benchmarks share."""

from __future__ import annotations

import pytest

from coordshard_operator import benchmarks
from coordshard_operator.local import system
from coordshard_operator.local.quantiles import min_samples, percentile, reported

HUNDRED = [float(v) for v in range(1, 101)]


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param([], 0.99, 0.0, id="empty"),
        pytest.param([7.0], 0.5, 7.0, id="one"),
        pytest.param([3.0, 1.0, 2.0], 0.5, 2.0, id="odd-median-unsorted"),
        pytest.param(HUNDRED, 0.0, 1.0, id="q0-is-min"),
        pytest.param(HUNDRED, 1.0, 100.0, id="q1-is-max"),
        pytest.param(HUNDRED, 0.99, 99.0, id="p99-of-100"),
        pytest.param(HUNDRED, 0.5, 51.0, id="p50-of-100"),
    ],
)
def test_percentile_is_nearest_rank_on_the_n_minus_1_grid(
    values: list[float], q: float, expected: float
) -> None:
    assert percentile(values, q) == expected


def test_benchmarks_and_local_mode_use_the_same_percentile() -> None:
    assert benchmarks.percentile is percentile
    assert system.percentile is percentile


@pytest.mark.parametrize(("q", "needed"), [(0.5, 2), (0.9, 10), (0.95, 20), (0.99, 100)])
def test_a_percentile_of_too_few_samples_is_not_reported(q: float, needed: int) -> None:
    assert min_samples(q) == needed
    few = [float(v) for v in range(needed - 1)]
    assert reported(few, q) is None  # it would be their maximum, or next to it
    enough = [float(v) for v in range(needed)]
    assert reported(enough, q) == percentile(enough, q)
    assert reported(enough, q) < max(enough) or needed == 2


def test_tables_print_an_unreported_percentile_as_a_dash() -> None:
    table = benchmarks.Table(["measure", "p99 ms"], rows=[["kill", reported([1.0] * 10, 0.99)]])
    assert table.markdown().splitlines()[2] == "| kill | - |"
