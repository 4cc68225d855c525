"""The spawn → Ready benchmark runs: one worker alone turns Ready, with a new and an
existing store (the figure itself is printed by ``coordshard bench local``, never asserted)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from coordshard_operator.benchmarks.spawn import measure_spawns

pytestmark = pytest.mark.integration


def test_each_spawn_is_timed_until_its_worker_is_ready(tmp_path: Path) -> None:
    fresh, existing = asyncio.run(measure_spawns(2, tmp_path))
    assert len(fresh.wall_ms) == 1 and len(existing.wall_ms) == 1
    assert all(ms > 0 for ms in fresh.wall_ms + existing.wall_ms)
    if sys.platform == "linux":
        assert len(fresh.cpu_ms) == 1 and len(existing.cpu_ms) == 1
        # The worker's CPU up to Ready: interpreter, imports, store, connect (a
        # process that had only just started would show almost none).
        assert fresh.cpu_ms[0] > 100 and existing.cpu_ms[0] > 100
    logs = sorted(p.name for p in (tmp_path / "logs").glob("*.log"))
    assert logs == ["spawn-0.log", "spawn-1.log"]
