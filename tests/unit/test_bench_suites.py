"""Every benchmark suite imports and has a ``run``; the load curve draws from its table."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from coordshard_operator.benchmarks import SUITES
from coordshard_operator.benchmarks.plots import plot


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
