"""`coordshard bench handoff` measures what it says on a blocks stream.

It published every probe under the id "k", which a blocks stream stores under
that id's one block whatever shard token the subject carried, and it waited on
every shard the report counted as grown (kept blocks come back on new lanes
too): before the fix each trial ended in "orphan shards … did not deliver
within 30 s".
"""

from __future__ import annotations

import pytest

from coordshard_operator.benchmarks import handoff

pytestmark = pytest.mark.integration


def test_single_server_trials_each_recover_every_orphan() -> None:
    samples = handoff._run_setting(1, 3, 0.02)
    assert len(samples) == 3
    assert all(recovered > 0 and operator > 0 for recovered, operator in samples)
