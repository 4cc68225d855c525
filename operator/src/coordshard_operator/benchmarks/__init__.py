"""Benchmark suites. Each module here has ``run(args) -> Table``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coordshard_operator.local.quantiles import percentile

__all__ = ["NAMED_ONLY", "SUITES", "Table", "int_list", "percentile"]

SUITES: dict[str, str] = {
    "plan": "coordshard_operator.benchmarks.plan",
    "handoff": "coordshard_operator.benchmarks.handoff",
    "throughput": "coordshard_operator.benchmarks.throughput",
    "load-curve": "coordshard_operator.benchmarks.loadcurve",
    "sqlite-lock": "coordshard_operator.benchmarks.sqlitelock",
    "operator": "coordshard_operator.benchmarks.operator",
    "local": "coordshard_operator.benchmarks.local",
    "stream-subjects": "coordshard_operator.benchmarks.streamsubjects",
    "layouts": "coordshard_operator.benchmarks.layouts",
    "scale": "coordshard_operator.benchmarks.scale",
    "lane-requests": "coordshard_operator.benchmarks.lanerequests",
    "join": "coordshard_operator.benchmarks.join",
    "filter-cost": "coordshard_operator.benchmarks.filtercost",
}
"""Suite name → module path (imported only when the suite runs)."""

NAMED_ONLY: frozenset[str] = frozenset({"layouts", "scale", "lane-requests", "join", "filter-cost"})
"""Suites too long for a run that names none (``layouts`` sweeps for 30+ minutes,
``scale`` for hours at its defaults)."""


def int_list(text: str | None, default: tuple[int, ...] = ()) -> tuple[int, ...]:
    """A sizes flag: ``"16,256"`` → (16, 256); ``default`` when not given."""
    return tuple(int(v) for v in text.split(",") if v.strip()) if text else default


@dataclass
class Table:
    """A result table: printed as Markdown, saved as JSON."""

    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    """Raw measurements behind the rows, saved with --out for plots."""

    def markdown(self) -> str:
        def cell(v: Any) -> str:
            if v is None:  # a percentile of too few samples (quantiles.reported)
                return "-"
            return f"{v:.3f}" if isinstance(v, float) else str(v)

        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        lines += [f"\n{n}" for n in self.notes]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
            "samples": self.samples,
        }
