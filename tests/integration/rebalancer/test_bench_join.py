"""`coordshard bench join --quick`: a join moves shards to the joiner, who serves them,
and only the lanes holding moved blocks are paused."""

from __future__ import annotations

import pytest

from coordshard_operator.benchmarks import join

pytestmark = pytest.mark.integration


def test_each_join_moves_a_share_to_the_joiner_and_pauses_few_lanes() -> None:
    rows = join.measure(shards=256, members=3, trials=2)
    assert [r["members"] for r in rows] == [4, 5]
    assert [r["moved"] for r in rows] == [256 // 4, 256 // 5]
    for r in rows:
        assert 0 < r["pass_ms"] <= r["delivering_ms"]
        assert 1 <= r["paused_lanes"] <= r["members"] - 1
