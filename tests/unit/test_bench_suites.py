"""Every benchmark suite imports and has a ``run``; the load curve and scale plots draw from
their tables; scale's summary reports a p99 only from 100 samples."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from coordshard_operator.benchmarks import NAMED_ONLY, SUITES
from coordshard_operator.benchmarks.layoutcases import Shape
from coordshard_operator.benchmarks.layouts import TrialResult
from coordshard_operator.benchmarks.plots import plot
from coordshard_operator.benchmarks.scale import COLUMNS, summary


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_module_has_run(name: str) -> None:
    module = importlib.import_module(SUITES[name])
    assert callable(module.run)


def test_the_load_curve_plot_is_drawn_from_the_printed_table(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    columns = [
        "offered/s", "achieved/s", "p50 ms", "p99 ms", "client µs", "worker 1 µs",
        "worker 2 µs", "nats-server µs", "total µs", "cores busy", "mean batch",
    ]  # fmt: skip
    rows = [
        ["500", 500, 1.6, 3.5, 413, 490, 510, 507, 1920, 0.96, 1.0],
        ["5000", 4994, 14.1, 47.4, 115, 86, 90, 77, 368, 1.84, 19.6],
        ["peak (1000 in flight)", 9864, 98.8, 156.2, 61, 47, 47, 33, 189, 1.87, 196.1],
    ]
    written = plot("load-curve", {"columns": columns, "rows": rows}, tmp_path)
    assert written == [tmp_path / "bench-load-curve.png"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scale_is_run_only_when_named() -> None:
    assert "scale" in SUITES
    assert "scale" in NAMED_ONLY


def _trial(handoff_ms: float) -> TrialResult:
    shape = Shape(consumers=3, filters=64, most_filters=22, most_consumers=1)
    return TrialResult(
        layout="engine", shards=64, members=3, setup_ms=1.0, steady_per_s=1000, requests=7,
        largest_ms=12.0, requests_ms=30.0, handoff_ms=handoff_ms, live_pause_ms=0.0, touched=0,
        after_ratio=0.9, shape=shape, after_per_s=900,
    )  # fmt: skip


def test_scale_reports_a_p99_only_from_100_trials_and_counts_timeouts() -> None:
    few = dict(zip(COLUMNS, summary([_trial(t) for t in (40, 50, float("nan"))]), strict=True))
    assert few["failover p50 ms"] is not None
    assert few["failover p99 ms"] is None
    assert few["failover max ms"] == 50
    assert few["timed out"] == 1
    many = dict(zip(COLUMNS, summary([_trial(t) for t in range(1, 101)]), strict=True))
    assert many["failover p99 ms"] == 99
    assert many["failover max ms"] == 100


def test_the_scale_plots_are_drawn_from_the_printed_table(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [
        summary([_trial(t) for t in (40, 50, 60)]),
        [*summary([_trial(t) for t in (400, 500)])[:2], "today", *summary([_trial(9)])[3:]],
    ]
    rows[1][0] = 4096
    written = plot("scale", {"columns": COLUMNS, "rows": rows}, tmp_path)
    assert written == [
        tmp_path / "bench-scale-failover.png",
        tmp_path / "bench-scale-delivered.png",
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
