"""How long the planner takes on a crash and on a join, by shard and member count.

Each trial starts from a balanced assignment of N shards over n members, then
times one ``plan()`` call for the event: *crash* removes one member, *join*
adds one. Wall-clock, ``time.perf_counter``, one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from coordshard_operator.benchmarks import Table
from coordshard_operator.planning import plan

SHARDS = (64, 1024, 4096)
MEMBERS = (3, 32, 512)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _time_event(shards: int, members: int, event: str, trials: int) -> list[float]:
    names = [f"pod-{i}" for i in range(members)]
    base = plan(shards=shards, members=names).balance.assignment
    samples = []
    for t in range(trials):
        if event == "crash":
            victim = names[t % members]
            live = [m for m in names if m != victim]
        else:
            live = [*names, f"pod-new-{t}"]
        start = time.perf_counter()
        plan(shards=shards, members=live, previous=base)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def run(args: argparse.Namespace) -> Table:
    trials = 10 if args.quick else 60
    table = Table(["shards", "members", "event", "trials", "median ms", "p99 ms", "moves"])
    for n_shards in SHARDS:
        for n_members in MEMBERS:
            for event in ("crash", "join"):
                samples = _time_event(n_shards, n_members, event, trials)
                names = [f"pod-{i}" for i in range(n_members)]
                base = plan(shards=n_shards, members=names).balance.assignment
                live = names[1:] if event == "crash" else [*names, "pod-new"]
                moves = len(plan(shards=n_shards, members=live, previous=base).balance.moves)
                table.rows.append(
                    [
                        n_shards,
                        n_members,
                        event,
                        trials,
                        statistics.median(samples),
                        _percentile(samples, 0.99),
                        moves,
                    ]
                )
                sys.stderr.write(f"plan: N={n_shards} members={n_members} {event} done\n")
    table.notes.append("Target: N=4096, 512 members, median <= 20 ms.")
    return table
