"""Consumer layouts side by side: set-up, crash hand-off and delivery at N shards and M members.

The spike of issue 12 ("spike first, then build the winner"). For every cell
(shards N, members M) one fresh nats-server runs every layout of
``layoutcases`` in turn, trial after trial, with the order rotated each trial
so the noise of a shared machine falls on all of them alike. One trial:

1. a fresh stream; a backlog spread over all shards is published;
2. *set-up*: the layout's consumers are created (the members' pull loops start);
3. *steady*: deliveries per second of the whole group (fetch + ack, every member
   pulling concurrently) over one window, publishing continuing;
4. one member is killed (its pull loops cancelled, nothing more acked), and one
   message is published on each of its shards so every orphan has something;
5. *hand-off*: from the start of the reconcile until every orphan shard has
   delivered to its new owner; the JetStream requests it sent (count, the
   largest), how long any live member's consumer was paused (pause → resume),
   how many requests touched a survivor's consumer, and the delivery rate of
   the window after the crash against the steady one.

Numbers are printed, never asserted. Each layout's shape (consumers, filters,
the largest filter list, the most consumers of one member) is taken after the
hand-off: it is what a design would have to bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import nats
from nats.aio.client import Client

from coordshard_operator.benchmarks import Table, int_list, percentile
from coordshard_operator.benchmarks.layoutcases import Layout, Shape, layout_named
from coordshard_operator.benchmarks.layoutrig import Deliveries, Requests, Workers
from coordshard_operator.benchmarks.rigprocesses import ProcessWorkers
from coordshard_operator.benchmarks.workload import wait_jetstream
from coordshard_operator.local.natsserver import start_cluster, start_server
from coordshard_operator.rebalancer.errors import TransientError

__all__ = ["DEFAULT_LAYOUTS", "Cell", "Settings", "TrialResult", "measure", "run", "sweep"]

DEFAULT_LAYOUTS = ("today", "lanes16", "lanes64", "blocks16", "pershard")
WINDOW_S = 0.5
"""Length of the steady and the after-crash delivery windows, seconds."""
WARMUP_S = 0.2
HANDOFF_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Settings:
    shards: tuple[int, ...] = (1024, 4096)
    members: tuple[int, ...] = (3, 16, 64)
    layouts: tuple[str, ...] = DEFAULT_LAYOUTS
    trials: int = 5
    backlog: int = 20_000
    """Messages published before the consumers exist, spread over all shards."""
    rate: int = 200
    """Messages per second published during the trial (round robin over shards)."""
    batch: int = 256
    """Messages per pull request: one pull covers a new lane's every shard, so the
    hand-off time is not the harness's own (single process) processing rate."""
    window_s: float = WINDOW_S
    """Length of the steady and the after-crash delivery windows, seconds."""
    processes: bool = False
    """Each member in its own process (``rigprocesses``) instead of all of them on the
    rig's one event loop."""
    replicas: int = 1
    """1: one nats-server per cell; 3: a 3-node cluster per cell, the stream R3."""


@dataclass(frozen=True)
class TrialResult:
    layout: str
    shards: int
    members: int
    setup_ms: float
    steady_per_s: float
    requests: int
    largest_ms: float
    requests_ms: float
    """From the start of the hand-off until its last request was answered."""
    handoff_ms: float
    """Until every orphan shard delivered to its new owner (nan: not within the timeout,
    or the hand-off gave up)."""
    live_pause_ms: float
    touched: int
    after_ratio: float
    shape: Shape
    after_per_s: float = 0.0
    """Deliveries per second in the window after the crash."""
    replicas: int = 1
    """The stream's replicas, as the server reported them after the layout made it."""


async def _publish_backlog(js: nats.js.JetStreamContext, layout: Layout, *, shards: int,
                           n: int) -> None:  # fmt: skip
    for i in range(n):
        await js.publish_async(layout.subject(i % shards, i), b"x" * 64)
    await js.publish_async_completed()


async def _feed(nc: Client, layout: Layout, *, shards: int, rate: int) -> None:
    """Keep publishing ``rate`` messages a second, round robin over the shards."""
    per_tick, i = max(1, rate // 50), 0
    while True:
        for _ in range(per_tick):
            await nc.publish(layout.subject(i % shards, 10_000_000 + i), b"x" * 64)
            i += 1
        await asyncio.sleep(0.02)  # pacing a publisher, not synchronisation


async def _trial(nc: Client, url: str, layout: Layout, *, stream: str, members: list[str],
                 s: Settings, shards: int) -> TrialResult:  # fmt: skip
    js = nc.jetstream(timeout=60)
    log = Deliveries(shard_token=layout.shard_token)
    kind = ProcessWorkers if s.processes else Workers
    workers = kind(nc, js, url=url, stream=stream, log=log, batch=s.batch,
                   fetch_s=layout.pull_expiry_s)  # fmt: skip
    await layout.create_stream(js)
    replicas = (await js.stream_info(stream)).config.num_replicas or 1
    feeder: asyncio.Task[None] | None = None
    try:
        await _publish_backlog(js, layout, shards=shards, n=s.backlog)
        await workers.listen()
        await workers.prepare(members)
        started = time.monotonic()
        await layout.setup(js, workers)
        setup_ms = (time.monotonic() - started) * 1000
        feeder = asyncio.create_task(_feed(nc, layout, shards=shards, rate=s.rate))
        await asyncio.sleep(WARMUP_S)  # a measurement window, not synchronisation
        w0 = time.monotonic()
        await asyncio.sleep(s.window_s)
        steady = log.rate(w0, w0 + s.window_s)

        # The first member that owns something (with more members than units some own none).
        victim = next((m for m in members if layout.owned(m)), members[0])
        survivors = [m for m in members if m != victim]
        orphans = layout.owned(victim)
        kept = layout.consumers_of(survivors)
        await workers.crash(victim)
        for shard in sorted(orphans):
            await nc.publish(layout.subject(shard, -1), b"probe")
        await nc.flush()
        log.watch(orphans, victim=victim)
        req = Requests()
        t0 = time.monotonic()
        try:
            await layout.hand_off(js, victim, req, workers)
            gave_up = False
        except TransientError as e:  # today's engine past its retry deadline (issue 12)
            sys.stderr.write(f"layouts: {layout.name}: the hand-off gave up: {e}\n")
            gave_up = True
        requests_ms = (time.monotonic() - t0) * 1000
        try:
            if gave_up:
                raise TimeoutError
            async with asyncio.timeout(HANDOFF_TIMEOUT_S):
                await log.all_seen.wait()
            handoff_ms = (max(log.first.values()) - t0) * 1000
        except TimeoutError:
            handoff_ms = float("nan")
        left = t0 + s.window_s - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)  # the rest of the after-crash window
        after = log.rate(t0, t0 + s.window_s)
        return TrialResult(
            layout=layout.name,
            shards=shards,
            members=len(members),
            setup_ms=round(setup_ms, 1),
            steady_per_s=round(steady),
            requests=req.count,
            largest_ms=round(req.largest_ms, 1),
            requests_ms=round(requests_ms, 1),
            handoff_ms=round(handoff_ms, 1),
            live_pause_ms=round(req.stall_ms(kept), 1),
            touched=req.touched(kept),
            after_ratio=round(after / steady, 2) if steady else 0.0,
            shape=layout.shape(),
            after_per_s=round(after),
            replicas=replicas,
        )
    finally:
        if feeder is not None:
            feeder.cancel()
        await workers.stop()
        await js.delete_stream(stream)


def _p(values: Sequence[float]) -> str:
    """``median / p90`` of the finite values (a count of the others, if any)."""
    finite = [v for v in values if v == v]
    text = f"{statistics.median(finite):.0f} / {percentile(finite, 0.9):.0f}" if finite else "-"
    return text + (f" ({len(values) - len(finite)} timed out)" if len(finite) < len(values) else "")


COLUMNS = [
    "shards", "members", "layout", "set-up ms", "steady msgs/s", "requests", "largest req ms",
    "requests done ms", "hand-off ms p50 / p90", "live pause ms (max)", "survivor reqs",
    "after/steady", "consumers", "filters", "max filters/consumer", "max consumers/member",
]  # fmt: skip


def row(results: list[TrialResult]) -> list[object]:
    """One table row (median / p90 where it varies) of one layout's trials in one cell."""
    r0 = results[-1]
    med = statistics.median
    return [
        r0.shards, r0.members, r0.layout,
        f"{med(r.setup_ms for r in results):.0f}",
        f"{med(r.steady_per_s for r in results):.0f}",
        f"{med(r.requests for r in results):.0f} (max {max(r.requests for r in results)})",
        _p([r.largest_ms for r in results]),
        _p([r.requests_ms for r in results]),
        _p([r.handoff_ms for r in results]),
        f"{max(r.live_pause_ms for r in results):.0f}",
        f"{max(r.touched for r in results)}",
        f"{med(r.after_ratio for r in results):.2f}",
        r0.shape.consumers, r0.shape.filters, r0.shape.most_filters, r0.shape.most_consumers,
    ]  # fmt: skip


async def _cell(url: str, shards: int, members: int, s: Settings,
                progress: bool) -> dict[str, list[TrialResult]]:  # fmt: skip
    nc = await nats.connect(url)
    await wait_jetstream(nc.jetstream())
    names = [f"m{i}" for i in range(members)]
    results: dict[str, list[TrialResult]] = {name: [] for name in s.layouts}
    try:
        for t in range(s.trials):
            order = list(s.layouts[t % len(s.layouts) :] + s.layouts[: t % len(s.layouts)])
            for k, name in enumerate(order):
                stream = f"LAY{t}X{k}"
                layout = layout_named(
                    name, stream=stream, shards=shards, members=names, replicas=s.replicas
                )
                r = await _trial(nc, url, layout, stream=stream, members=names, s=s, shards=shards)
                results[name].append(r)
                if progress:
                    sys.stderr.write(
                        f"layouts: N={shards} M={members} trial {t + 1}/{s.trials} "
                        f"{r.layout}: set-up {r.setup_ms:.0f} ms, {r.steady_per_s:.0f}/s, "
                        f"hand-off {r.handoff_ms:.0f} ms in {r.requests} requests "
                        f"(largest {r.largest_ms:.0f} ms), live pause {r.live_pause_ms:.0f} ms\n"
                    )
                    sys.stderr.flush()
    finally:
        await nc.close()
    return results


Cell = dict[str, list[TrialResult]]
"""One cell's trials: layout name → its trials, in order."""


def sweep(s: Settings, *, progress: bool = True) -> Iterator[tuple[int, int, Cell]]:
    """Every cell (shards, members) of ``s`` in turn, each on a fresh nats-server (or
    3-node cluster, ``s.replicas`` 3): ``(shards, members, trials by layout)`` as soon as
    the cell is done. Everything connects to the first node; the cluster routes."""
    for n in s.shards:
        for m in s.members:
            with tempfile.TemporaryDirectory(prefix="bench-layouts-") as tmp:
                nodes = (
                    [start_server(Path(tmp) / "nats")]
                    if s.replicas == 1
                    else start_cluster(Path(tmp) / "c", size=s.replicas)
                )
                try:
                    cell = asyncio.run(_cell(nodes[0].url, n, m, s, progress))
                finally:
                    for node in nodes:
                        node.kill()
            yield n, m, cell


def measure(s: Settings, *, progress: bool = True, out: Path | None = None) -> Table:
    """Sweep every cell; print each cell's rows as soon as it is done."""
    table = Table(list(COLUMNS))
    raw: list[dict[str, object]] = []
    for _, _, cell in sweep(s, progress=progress):
        for name in s.layouts:
            table.rows.append(row(cell[name]))
            raw += [asdict(r) for r in cell[name]]
        if progress:
            sys.stderr.write(Table(list(COLUMNS), table.rows[-len(s.layouts) :]).markdown())
            sys.stderr.write("\n")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / "layouts-trials.json").write_text(json.dumps(raw, indent=1) + "\n")
    table.notes.append(
        f"{s.trials} trials per layout and cell, interleaved; "
        f"{'a process per member' if s.processes else 'every member in one process'}; "
        f"backlog {s.backlog} messages over all shards, {s.rate}/s published meanwhile; "
        f"pull batch {s.batch}, expiry "
        f"100 ms (1 s per shard); windows of {s.window_s * 1000:.0f} ms. Cells: median / p90."
    )
    return table


def run(args: argparse.Namespace) -> Table:
    quick = bool(getattr(args, "quick", False))
    base = Settings()
    s = Settings(
        shards=int_list(getattr(args, "shards", None), (256,) if quick else base.shards),
        members=int_list(getattr(args, "members", None), (3,) if quick else base.members),
        layouts=tuple((getattr(args, "layouts", None) or ",".join(base.layouts)).split(",")),
        trials=getattr(args, "trials", None) or (1 if quick else base.trials),
        backlog=getattr(args, "backlog", None) or (2_000 if quick else base.backlog),
        processes=bool(getattr(args, "member_processes", False)),
        replicas=getattr(args, "replicas", None) or 1,
    )
    return measure(s, out=getattr(args, "out", None))
