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
from coordshard_operator.local.quantiles import reported
from coordshard_operator.rebalancer.planning import plan

SHARDS = (64, 1024, 4096)
MEMBERS = (3, 32, 512)


def _time_event(shards: int, members: int, event: str, trials: int) -> tuple[list[float], int, int]:
    """Time ``trials`` plans of one event; return samples, moves made, the optimum."""
    names = [f"pod-{i}" for i in range(members)]
    base = plan(shards=shards, members=names).balance.assignment
    owners = [m for m in names if base[m]]  # a crash of a member without shards is trivial
    samples = []
    moves = optimum = 0
    for t in range(trials):
        if event == "crash":
            victim = owners[t % len(owners)]
            live = [m for m in names if m != victim]
            best = len(base[victim])
        else:
            live = [*names, f"pod-new-{t}"]
            best = shards // (members + 1)
        start = time.perf_counter()
        result = plan(shards=shards, members=live, previous=base)
        samples.append((time.perf_counter() - start) * 1000)
        moves, optimum = len(result.balance.moves), best
    return samples, moves, optimum


def run(args: argparse.Namespace) -> Table:
    trials = 10 if args.quick else 60
    table = Table(
        ["shards", "members", "event", "trials", "median ms", "p99 ms", "moves", "optimum"]
    )
    for n_shards in SHARDS:
        for n_members in MEMBERS:
            for event in ("crash", "join"):
                samples, moves, optimum = _time_event(n_shards, n_members, event, trials)
                table.rows.append(
                    [
                        n_shards,
                        n_members,
                        event,
                        trials,
                        statistics.median(samples),
                        reported(samples, 0.99),
                        moves,
                        optimum,
                    ]
                )
                sys.stderr.write(f"plan: N={n_shards} members={n_members} {event} done\n")
    table.notes.append(
        "moves = shards that changed owner in the last trial; optimum = the crashed "
        "member's shards, or floor(N/(n+1)) for a join. Target: N=4096, 512 members, "
        "median <= 20 ms."
    )
    return table
