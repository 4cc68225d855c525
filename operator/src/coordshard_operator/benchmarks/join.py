"""A planned move: a member joins a group on a blocks stream (issue 12's "a pod joins" row).

M members (in-process ``SimWorker``s serving every lane of their member) own N
shards on one nats-server, and a publisher keeps about 500 commands/s flowing
over all shards. Each trial a new member joins and one pass runs
(``run_pass``: plan, pause and drain the lanes holding the moved blocks, delete
them, create the joiner's lanes and the kept blocks' replacements, resume).
Measured per trial:

- *pass*: the pass's duration;
- *moved delivering*: from the start of the pass until a probe published on each
  moved shard as the pass returns has been processed by the joiner;
- *longest pause*: for each lane the pass paused, from its pause request until
  the pass's last create (when every block it held is on a lane again); the
  maximum over lanes. Members whose lanes hold no moved block are not touched
  (their pause is 0).
- requests and the largest one.

Then quiet passes run until the group is settled (lanes merged), and the next
trial joins one more member (M, M + 1, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats

from coordshard_operator.benchmarks import Table, int_list
from coordshard_operator.benchmarks.layoutcases import ENGINE_CALLS
from coordshard_operator.benchmarks.layoutrig import Requests
from coordshard_operator.benchmarks.workload import Ledger, Publisher, SimWorker, ids_per_shard
from coordshard_operator.local.natsserver import start_server
from coordshard_operator.local.quantiles import reported
from coordshard_operator.rebalancer.handoff import Engine, GroupConfig, MemberInfo
from coordshard_operator.rebalancer.passes import run_pass

PREFIX = "join.cmd"
STREAM = "JOIN"


async def _trials(url: str, *, shards: int, members: int, trials: int) -> list[dict[str, float]]:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    engine = Engine(js, GroupConfig(stream=STREAM, subject_prefix=PREFIX, group="j", shards=shards))
    await engine.ensure_stream()
    ledger = Ledger()
    live: dict[str, MemberInfo] = {}
    workers: dict[str, SimWorker] = {}
    ids = ids_per_shard(shards)
    epoch = 0

    def join(n: int) -> str:
        info = MemberInfo.of(group="j", member=f"m{n}", incarnation="1")
        live[info.id] = info
        workers[info.id] = SimWorker(js, stream=STREAM, consumer=info.id, ledger=ledger).start()
        return info.id

    async def settle() -> None:
        nonlocal epoch
        while True:
            epoch += 1
            if (await run_pass(engine, shards=shards, members=live, epoch=epoch)).report is None:
                return

    for n in range(members):
        join(n)
    await settle()
    req = Requests()
    req.wrap(engine.api, ENGINE_CALLS)
    publisher = Publisher(js, prefix=PREFIX, shards=shards, ledger=ledger, burst=5).start()
    out: list[dict[str, float]] = []
    try:
        for t in range(trials):
            joiner = join(members + t)
            epoch += 1
            first = len(req.log)
            start = time.monotonic()
            done = await run_pass(engine, shards=shards, members=live, epoch=epoch)
            passed = time.monotonic()
            log = req.log[first:]  # this pass's requests (each logged as it ended)
            moved = set(done.plan.balance.assignment.get(joiner, ()))
            for shard in sorted(moved):
                await js.publish(f"{PREFIX}.{shard}.{ids[shard]}.probe", b"p")
            deadline = passed + 60
            while any(ledger.last_seen.get((joiner, s), 0.0) < passed for s in moved):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"trial {t}: moved shards not delivering after 60 s")
                await asyncio.sleep(0.001)  # polling the ledger, with a deadline
            delivering = max(ledger.last_seen[(joiner, s)] for s in moved)
            creates = [e for kind, _, _, e in log if kind == "put_consumer"]
            pauses = [s for kind, _, s, _ in log if kind == "pause_consumer"]
            last_create = max(creates, default=passed)
            out.append(
                {
                    "members": float(len(live)),
                    "moved": float(len(moved)),
                    "pass_ms": (passed - start) * 1000,
                    "delivering_ms": (delivering - start) * 1000,
                    "pause_ms": max(((last_create - p) * 1000 for p in pauses), default=0.0),
                    "paused_lanes": float(len(pauses)),
                    "requests": float(len(log)),
                    "largest_ms": max(((e - s) * 1000 for _, _, s, e in log), default=0.0),
                }
            )
            print(
                f"bench join: {shards} x {len(live)}: trial {t + 1}/{trials}: pass "
                f"{out[-1]['pass_ms']:.0f} ms, pause {out[-1]['pause_ms']:.0f} ms",
                file=sys.stderr,
            )
            await settle()
    finally:
        await publisher.stop()
        for w in workers.values():
            await w.stop()
        await nc.close()
    return out


def measure(shards: int, members: int, trials: int) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="coordshard-bench-") as tmp:
        server = start_server(Path(tmp) / "nats")
        try:
            return asyncio.run(_trials(server.url, shards=shards, members=members, trials=trials))
        finally:
            server.kill()


def run(args: argparse.Namespace) -> Table:
    quick = bool(args.quick)
    shard_counts = int_list(getattr(args, "shards", None), (256,) if quick else (1024, 4096))
    member_counts = int_list(getattr(args, "members", None), (3,) if quick else (16, 64))
    trials = getattr(args, "trials", None) or (3 if quick else 20)
    table = Table(
        [
            "shards",
            "members",
            "trials",
            "moved per join",
            "pass p50 ms",
            "pass max ms",
            "moved delivering p50 ms",
            "moved delivering p90 ms",
            "moved delivering max ms",
            "longest pause p50 ms",
            "longest pause max ms",
            "lanes paused per join",
            "requests per join",
            "largest request ms",
        ]
    )
    for n in shard_counts:
        for m in member_counts:
            rows = measure(n, m, trials)
            table.samples[f"join_{n}x{m}"] = [r["delivering_ms"] for r in rows]

            def col(key: str, rows: list[dict[str, float]] = rows) -> list[float]:
                return [r[key] for r in rows]

            table.rows.append(
                [
                    n,
                    m,
                    trials,
                    statistics.median(col("moved")),
                    statistics.median(col("pass_ms")),
                    max(col("pass_ms")),
                    statistics.median(col("delivering_ms")),
                    reported(col("delivering_ms"), 0.9),
                    max(col("delivering_ms")),
                    statistics.median(col("pause_ms")),
                    max(col("pause_ms")),
                    statistics.median(col("paused_lanes")),
                    statistics.median(col("requests")),
                    max(col("largest_ms")),
                ]
            )
    table.notes.append(
        "One nats-server; members are in-process SimWorkers; ~500 commands/s published "
        "over all shards throughout. Targets (issue 12, 4096 x 64): moved delivering "
        "<= 500 ms, longest pause <= 100 ms. Each trial joins one more member."
    )
    return table
