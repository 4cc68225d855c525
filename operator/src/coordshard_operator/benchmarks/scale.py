"""Issue 12's targets table, cell by cell: the product engine beside the old one.

``coordshard bench scale`` runs the layouts rig (``layouts.sweep``: one fresh
nats-server per cell, the layouts interleaved trial by trial) with the
product's engine on a blocks stream (``engine``) and the old one (``today``,
the shards layout), and summarises each cell the way the issue's table asks:

- *failover*: member lost → every orphan shard delivered to its new owner,
  one sample per trial; p50 and p99 by ``quantiles.reported``, so the p99 is
  "-" below 100 trials and the maximum is printed beside it;
- *live pause*: the longest pause → resume of any survivor's consumer;
- *after / steady*: group deliveries per second in the window after the crash
  against the window before it;
- *requests*: JetStream requests per hand-off, and the largest single one.

A suite of its own, never part of ``bench all``: the full sweep at a 100k
backlog takes hours. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from coordshard_operator.benchmarks import Table, int_list
from coordshard_operator.benchmarks.layouts import Settings, TrialResult, sweep
from coordshard_operator.local.quantiles import reported

__all__ = ["COLUMNS", "ScaleSettings", "measure", "run", "summary"]

COLUMNS = [
    "shards", "members", "layout", "trials", "failover p50 ms", "failover p99 ms",
    "failover max ms", "timed out", "live pause max ms", "steady/s", "after/s",
    "after/steady", "requests/hand-off", "requests max", "largest request ms",
]  # fmt: skip
"""Medians over the trials, except where a column says max (or a percentile)."""


@dataclass(frozen=True)
class ScaleSettings:
    shards: tuple[int, ...] = (64, 1024, 4096)
    members: tuple[int, ...] = (3, 16, 64, 256)
    layouts: tuple[str, ...] = ("engine", "today")
    trials: int = 5
    backlog: int = 100_000
    window_s: float = 1.0
    """The steady and the after-crash windows: "the second after the crash"."""
    processes: bool = False
    """Each member in its own process (``rigprocesses``), not all on the rig's loop."""
    replicas: int = 1
    """3: each cell on a 3-node cluster, the stream and its consumers R3."""

    def rig(self) -> Settings:
        return Settings(shards=self.shards, members=self.members, layouts=self.layouts,
                        trials=self.trials, backlog=self.backlog, window_s=self.window_s,
                        processes=self.processes, replicas=self.replicas)  # fmt: skip


QUICK = ScaleSettings(shards=(64,), members=(3,), trials=3, backlog=2_000)
"""One small cell, 3 trials: the smoke run."""


def _ms(value: float | None) -> int | None:
    return None if value is None else round(value)


def summary(results: list[TrialResult]) -> list[object]:
    """One row of ``COLUMNS`` for one layout's trials in one cell."""
    r0 = results[-1]
    failover = [r.handoff_ms for r in results if r.handoff_ms == r.handoff_ms]
    med = statistics.median
    return [
        r0.shards, r0.members, r0.layout, len(results),
        _ms(reported(failover, 0.5)), _ms(reported(failover, 0.99)),
        _ms(max(failover, default=None)),
        len(results) - len(failover),
        round(max(r.live_pause_ms for r in results)),
        round(med(r.steady_per_s for r in results)),
        round(med(r.after_per_s for r in results)),
        f"{med(r.after_ratio for r in results):.2f}",
        round(med(r.requests for r in results)),
        max(r.requests for r in results),
        round(max(r.largest_ms for r in results)),
    ]  # fmt: skip


def measure(s: ScaleSettings, *, progress: bool = True, out: Path | None = None) -> Table:
    """Sweep every cell of ``s``; each cell's rows go to stderr as soon as it is done."""
    table = Table(list(COLUMNS))
    raw: list[dict[str, object]] = []
    for n, m, cell in sweep(s.rig(), progress=progress):
        rows = [summary(cell[name]) for name in s.layouts]
        table.rows += rows
        for name in s.layouts:
            table.samples[f"N={n} M={m} {name}"] = [r.handoff_ms for r in cell[name]]
            raw += [asdict(r) for r in cell[name]]
        if progress:
            sys.stderr.write(Table(list(COLUMNS), rows).markdown() + "\n")
            sys.stderr.flush()
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "scale-trials.json").write_text(json.dumps(raw, indent=1) + "\n")
    table.notes.append(
        f"{'R3 on a 3-node cluster' if s.replicas == 3 else 'one nats-server, R1'}; "
        f"{s.trials} trials per layout and cell, interleaved; "
        f"{'a process per member' if s.processes else 'every member in one process'}; "
        f"backlog {s.backlog} messages "
        f"over all shards, publishing continuing; windows of {s.window_s:g} s. Failover: "
        "member lost → every orphan shard delivered to its new owner, one sample a trial; "
        "p99 is '-' below 100 samples (read the max). Other cells: medians, or max where named."
    )
    return table


def run(args: argparse.Namespace) -> Table:
    base = QUICK if getattr(args, "quick", False) else ScaleSettings()
    layouts = getattr(args, "layouts", None)
    s = ScaleSettings(
        shards=int_list(getattr(args, "shards", None), base.shards),
        members=int_list(getattr(args, "members", None), base.members),
        layouts=tuple(layouts.split(",")) if layouts else base.layouts,
        trials=getattr(args, "trials", None) or base.trials,
        backlog=getattr(args, "backlog", None) or base.backlog,
        processes=bool(getattr(args, "member_processes", False)),
        replicas=getattr(args, "replicas", None) or 1,
    )
    return measure(s, out=getattr(args, "out", None))
