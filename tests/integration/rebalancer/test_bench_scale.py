"""``bench scale --quick`` as a smoke run: one small cell, the engine beside today.

No timing is asserted. What is: both layouts report every column, every
orphan shard was delivered to a new owner in every trial, the p99 of three
trials is not reported (``quantiles.reported``), and only today's engine
pauses a survivor. With ``replicas`` 3 a cell runs on a 3-node cluster and the
engine's stream is R3, as the server reports it.
"""

from __future__ import annotations

import dataclasses

from coordshard_operator.benchmarks.layouts import Settings, sweep
from coordshard_operator.benchmarks.scale import COLUMNS, QUICK, measure


def test_the_quick_cell_reports_the_engine_beside_today() -> None:
    table = measure(dataclasses.replace(QUICK, backlog=500), progress=False)
    rows = {row[2]: dict(zip(COLUMNS, row, strict=True)) for row in table.rows}
    assert sorted(rows) == ["engine", "today"]
    for name, r in rows.items():
        assert r["trials"] == 3, name
        assert r["timed out"] == 0, name
        assert r["failover p50 ms"] is not None, name
        assert r["failover p99 ms"] is None, name  # 3 samples: no p99
        assert r["failover max ms"] >= r["failover p50 ms"], name
        assert r["requests/hand-off"] > 0, name
    assert rows["engine"]["live pause max ms"] == 0
    assert rows["today"]["live pause max ms"] > 0
    assert len(table.samples) == 2


def test_a_cell_on_three_nodes_runs_the_engine_on_an_r3_stream() -> None:
    settings = Settings(shards=(64,), members=(3,), layouts=("engine",), trials=1,
                        backlog=500, window_s=0.5, replicas=3)  # fmt: skip
    [(_, _, cell)] = list(sweep(settings, progress=False))
    [trial] = cell["engine"]
    assert trial.replicas == 3
    assert trial.handoff_ms == trial.handoff_ms  # not nan: every orphan shard delivered
