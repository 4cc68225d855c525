"""``bench lane-requests`` and ``bench scale --member-processes`` at tiny sizes.

Smoke tests so the probe and the process rig do not rot; no timing is asserted.
What is asserted: the probe times every request it names, with one sample per
repeat, and the first delivery only where there is a backlog to deliver; the
process rig hands a crash off (every orphan shard delivered to a new owner by
a member in another process) and counts what it delivered.
"""

from __future__ import annotations

import itertools

from coordshard_operator.benchmarks.lanerequests import COLUMNS, KINDS, ProbeSettings, measure
from coordshard_operator.benchmarks.scale import COLUMNS as SCALE_COLUMNS
from coordshard_operator.benchmarks.scale import ScaleSettings
from coordshard_operator.benchmarks.scale import measure as measure_scale


def test_the_probe_times_each_request_of_a_gain_once_per_repeat() -> None:
    s = ProbeSettings(shards=(64,), members=(4, 16), lane_blocks=(8, 32), backlogs=(0, 200),
                      repeats=2)  # fmt: skip
    table = measure(s, progress=False)
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in table.rows]
    for m, f in itertools.product((4, 16), (8, 32)):
        cell = [r for r in rows if (r["members"], r["lane blocks"]) == (m, f)]
        by_backlog = {b: {r["request"] for r in cell if r["backlog"] == b} for b in (0, 200)}
        assert by_backlog[200] == set(KINDS)
        assert by_backlog[0] == set(KINDS) - {"first delivery"}  # nothing stored to deliver
    assert all(r["samples"] == 2 for r in rows)
    assert all(r["p50 ms"] is not None and r["p50 ms"] > 0 for r in rows)


def test_members_in_their_own_processes_take_over_a_crashed_members_shards() -> None:
    s = ScaleSettings(shards=(16,), members=(3,), layouts=("engine",), trials=1, backlog=300,
                      processes=True)  # fmt: skip
    table = measure_scale(s, progress=False)
    (row,) = [dict(zip(SCALE_COLUMNS, r, strict=True)) for r in table.rows]
    assert row["timed out"] == 0
    assert row["failover max ms"] is not None  # one trial: no median, its one sample
    assert row["live pause max ms"] == 0
    assert row["steady/s"] > 0  # the members' deliveries reach the rig from their processes
    assert "a process per member" in table.notes[0]
