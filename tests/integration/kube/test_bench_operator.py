"""`coordshard bench operator --quick` runs and every probe reaches its new owner.

Its stand-in workers bound one consumer each: once the blocks layout granted a
crash's shards on new lanes, probes on them were pulled by nobody (8 deletions
before the fix: 8 probes never delivered).
"""

from __future__ import annotations

import argparse

import pytest

from coordshard_operator.benchmarks import operator

pytestmark = pytest.mark.integration


def test_a_quick_run_delivers_every_probe_of_every_deletion() -> None:
    table = operator.run(argparse.Namespace(quick=True, trials=8))
    rows = {row[0]: row[1] for row in table.rows}
    assert rows["pod deletions"] == 8
    assert rows["probes never delivered"] == 0
    assert len(table.samples["failover_ms"]) == 8
