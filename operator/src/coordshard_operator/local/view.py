"""The live terminal view of local mode: a pure function from a snapshot to text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coordshard_operator.local.group import Change
from coordshard_operator.rebalancer.ranges import format_ranges

__all__ = ["Snapshot", "WorkerRow", "render"]


@dataclass(frozen=True, slots=True)
class WorkerRow:
    name: str
    pid: int | None
    state: str
    shards: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    elapsed_s: float
    workers: Sequence[WorkerRow]
    unassigned: int
    rate_per_s: float
    p50_ms: float
    p99_ms: float
    in_flight: int
    published: int
    succeeded: int
    failed: int
    unknown: int
    stale_reads: int
    rebalances: Sequence[Change]
    epoch: int


def render(snap: Snapshot, *, width: int = 78) -> str:
    """The screen, top to bottom: workers and shards, traffic, the last rebalances."""
    lines = [
        f"coordshard up  {snap.elapsed_s:6.1f}s  epoch {snap.epoch}"
        f"  unassigned shards {snap.unassigned}",
        "",
        f"{'WORKER':<12} {'PID':>7}  {'STATE':<10} {'#':>3}  SHARDS",
    ]
    for w in snap.workers:
        shards = format_ranges(w.shards) or "-"
        room = max(10, width - 40)
        if len(shards) > room:
            shards = shards[: room - 3] + "..."
        pid = str(w.pid) if w.pid else "-"
        lines.append(f"{w.name:<12} {pid:>7}  {w.state:<10} {len(w.shards):>3}  {shards}")
    lines += [
        "",
        f"commands {snap.rate_per_s:7.1f}/s   p50 {snap.p50_ms:6.1f} ms   p99 {snap.p99_ms:6.1f} ms"
        f"   in flight {snap.in_flight}",
        f"published {snap.published}  ok {snap.succeeded}  refused {snap.failed}"
        f"  unknown {snap.unknown}  stale reads {snap.stale_reads}",
        "",
        "last rebalances:",
    ]
    recent = list(snap.rebalances)[-5:]
    if not recent:
        lines.append("  (none yet)")
    for r in reversed(recent):
        reason = r.reason[:40]
        lines.append(
            f"  epoch {r.epoch:>3}  {reason:<40}  moved {r.moved:>3}  {r.duration_ms:6.1f} ms"
        )
    return "\n".join(lines)
