"""``bench layouts`` at tiny sizes: every layout sets up, hands off a crash, and reports.

A smoke test so the spike's benchmark does not rot; no timing is asserted. What
is asserted are the structural facts the numbers rest on: every orphan shard
delivered to a new owner, today's protocol touches the survivors' consumers
and the new layouts do not, and the lanes respect their filter bound.
"""

from __future__ import annotations

import math

from coordshard_operator.benchmarks.layouts import COLUMNS, Settings, measure


def test_every_layout_hands_off_a_crash_and_reports_its_shape() -> None:
    layouts = ("today", "lanes4", "blocks4", "xblocks4", "pershard")
    table = measure(
        Settings(shards=(16,), members=(3,), layouts=layouts, trials=1, backlog=300, rate=50),
        progress=False,
    )
    rows = {row[2]: dict(zip(COLUMNS, row, strict=True)) for row in table.rows}
    assert sorted(rows) == sorted(
        ["today", "lanes F4", "blocks 4 F64", "server blocks 4", "per shard"]
    )
    for name, r in rows.items():
        assert "timed out" not in r["hand-off ms p50 / p90"], name
        assert not math.isnan(float(r["hand-off ms p50 / p90"].split(" / ")[0])), name
    assert int(rows["today"]["survivor reqs"]) > 0
    assert float(rows["today"]["live pause ms (max)"]) > 0
    for name in ("lanes F4", "blocks 4 F64", "server blocks 4", "per shard"):
        assert rows[name]["survivor reqs"] == "0", name
        assert rows[name]["live pause ms (max)"] == "0", name
    assert rows["lanes F4"]["max filters/consumer"] <= 4
    assert rows["per shard"]["max filters/consumer"] == 1
    assert rows["per shard"]["consumers"] == 16
    # 16 shards in blocks of 4: four block filters in all, whoever owns them.
    assert rows["blocks 4 F64"]["filters"] == 4
    assert rows["server blocks 4"]["filters"] == 4
