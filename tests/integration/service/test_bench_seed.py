"""The throughput benchmark's memory phase seeds points straight into the store; the
worker must then find them (they belong to the benchmark's group)."""

from __future__ import annotations

from pathlib import Path

from coordshard_operator.benchmarks.servicerig import GROUP
from coordshard_operator.benchmarks.throughput import _seed_points
from coordshard_service.store import Store

from .conftest import STREAM_KEY


def test_seeded_points_are_the_benchmark_groups(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url, group=GROUP)
    try:
        store.migrate()
        seeded = _seed_points(url, ["s1", "s2"], 3)
        assert len(seeded) == 6
        with store.transaction(stream=STREAM_KEY) as tx:
            assert all(tx.point(s, p) is not None for s, p in seeded)
    finally:
        store.dispose()
