"""``bench throughput --shards`` measures each N of its list, a repeated N too.

A count repeated to make pairs (``16,4096,16,4096``: each N's rate against the
N=16 run beside it, on a machine whose speed drifts) named its systems by N
alone, and the second group's seeding failed on the shared store: "system
'n16-sys-000' already exists".
"""

from __future__ import annotations

import argparse
import asyncio

import pytest

from coordshard_operator.benchmarks.servicerig import embedded
from coordshard_operator.benchmarks.shardcount import WORKERS, measure_counts, variants

pytestmark = pytest.mark.integration


def test_a_repeated_count_is_measured_again_with_cpu_by_process() -> None:
    async def main() -> None:
        args = argparse.Namespace(database_url=None, nats_procs=1)
        async with embedded(args) as setup:
            counts = await measure_counts(
                setup.nc, setup.server, setup.tmp, setup.db, counts=[16, 16], commands=200
            )
        assert [c.shards for c in counts] == [16, 16]
        for c in counts:
            assert c.rate > 0 and len(c.latencies) == 200
            assert c.lanes == WORKERS
            assert set(c.cpu_us) == {"client", "nats-server"} | {
                f"worker {n}" for n in range(1, WORKERS + 1)
            }
            assert sum(c.cpu_us.values()) > 0  # each read in 10 ms ticks: one may be 0

    asyncio.run(main())


def test_each_count_runs_with_each_lane_size_that_changes_its_lanes() -> None:
    # N=16: 16 blocks, 6 per member, one lane for any F from 6 up; N=4096: 512 blocks,
    # 171 per member: 6 lanes at F=32, 3 at 64, 1 at 171 or more.
    assert variants([16, 4096], [32, 64, 171, 512]) == [
        (16, 32), (4096, 32), (4096, 64), (4096, 171),
    ]  # fmt: skip
