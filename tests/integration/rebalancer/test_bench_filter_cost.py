"""``bench filter-cost`` at a tiny size: every case drains what it published.

A smoke test so the probe does not rot; no timing is asserted. What is
asserted: each case drains its backlog (a case whose filters missed a block
would never drain, and time out) and has one value per trial, and every
consumer layout covers every block.
"""

from __future__ import annotations

import pytest

from coordshard_operator.benchmarks.filtercost import CASES, measure

pytestmark = pytest.mark.integration


def test_every_case_drains_its_backlog_once_per_trial() -> None:
    table = measure(300, 1)
    assert [row[0] for row in table.rows] == [c.label for c in CASES]
    for case in CASES:
        covered = sorted(f for subjects in case.filters() for f in subjects)
        assert len(covered) == (1 if case.consumers == 0 else case.blocks)
        # One value per trial; it may read 0 at this size (the server's CPU time is
        # counted in 10 ms ticks): the drain finishing at all is the check here.
        assert len(table.samples[f"{case.label} drain_us"]) == 1
