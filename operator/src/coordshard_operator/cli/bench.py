"""``coordshard bench [SUITE...]``: run benchmark suites and print their tables.

Each suite is a module in ``coordshard_operator.benchmarks`` exposing
``run(args) -> Table``. With no suite named, all of them run in turn.
Numbers are printed, never asserted: targets live in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from coordshard_operator.benchmarks import NAMED_ONLY, SUITES, Table

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run benchmarks and print tables",
        description=f"Run benchmark suites: {', '.join(SUITES)}. With none named,"
        f" all but {', '.join(sorted(NAMED_ONLY))}.",
    )
    p.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help=f"one or more of: {', '.join(SUITES)}"
        f" (default: all but {', '.join(sorted(NAMED_ONLY))})",
    )
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument(
        "--nats-procs",
        type=int,
        default=1,
        metavar="N",
        help="throughput and load-curve suites: GOMAXPROCS of their nats-server, which "
        "shares the machine with the workers and the client (default 1; 0: Go's default)",
    )
    p.add_argument(
        "--database-url",
        metavar="URL",
        help="throughput and load-curve suites: a PostgreSQL URL (postgresql+psycopg://...); "
        "they run on a scratch database made beside it and dropped afterwards "
        "(default: a SQLite file in a temporary folder)",
    )
    p.add_argument(
        "--shards",
        metavar="N,N,...",
        help="stream-subjects, layouts, scale, lane-requests, join and throughput suites: "
        "the shard counts to measure, comma-separated (default 16,256,1024,4096; layouts, "
        "lane-requests and join: 1024,4096; scale: 64,1024,4096; throughput: none, i.e. its "
        "16-shard phases only)",
    )
    p.add_argument(
        "--members",
        metavar="M,M,...",
        help="layouts, scale, lane-requests and join suites: the member counts to measure, "
        "comma-separated (default 3,16,64; scale: 3,16,64,256; lane-requests: 16; join: 16,64)",
    )
    p.add_argument(
        "--lane-blocks",
        metavar="F,F,...",
        help="throughput suite with --shards: the most blocks per lane to compare, each N "
        "with each F that gives it other lanes; lane-requests: the lane sizes to lay the "
        "lanes out at (default: the engine's, 32)",
    )
    p.add_argument(
        "--layouts",
        metavar="NAME,...",
        help="layouts and scale suites: which of engine, engine-sweep-first, today, lanesF "
        "(e.g. lanes16), blocksB (e.g. blocks16), xblocksB, pershard (default "
        "today,lanes16,lanes64,blocks16,pershard; scale: engine,today)",
    )
    p.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="layouts and scale suites: trials per layout and cell (default 5; --quick: "
        "1, scale 3); lane-requests: repeats of each request per cell (default 20); "
        "handoff, operator and local: trials, pod deletions, kills and spawns "
        "(default 100, enough for a p99; --quick: 5-10); join: joins per cell (default 20); "
        "filter-cost: runs of each case (default 2)",
    )
    p.add_argument(
        "--backlog",
        type=int,
        metavar="N",
        help="layouts and scale suites: messages waiting, spread over all shards "
        "(default 20000; scale: 100000); lane-requests: the one backlog to probe "
        "(default 0, 20000 and 100000); filter-cost: messages per case (default 20000)",
    )
    p.add_argument(
        "--replicas",
        type=int,
        choices=(1, 3),
        help="layouts and scale suites: 3 runs each cell on a fresh 3-node cluster with "
        "the stream R3 (default 1: one nats-server)",
    )
    p.add_argument(
        "--member-processes",
        action="store_true",
        help="layouts and scale suites: run each member's pull loops in its own process "
        "(default: all members on the rig's one event loop)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="also write each table as JSON (and plots, where a suite has them) here",
    )
    p.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help="draw PNG plots of the results into DIR (needs matplotlib, the dev extra)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        sys.stderr.write(
            f"coordshard bench: error: unknown suite {unknown[0]!r}; "
            f"choose from {', '.join(SUITES)}\n"
        )
        return 2
    for name in args.suites or [s for s in SUITES if s not in NAMED_ONLY]:
        module = importlib.import_module(SUITES[name])
        table: Table = module.run(args)
        sys.stdout.write(f"\n## {name}\n\n{table.markdown()}\n")
        sys.stdout.flush()
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{name}.json").write_text(json.dumps(table.as_json(), indent=2) + "\n")
        if args.plots:
            from coordshard_operator.benchmarks.plots import plot

            for path in plot(name, table.as_json(), args.plots):
                sys.stderr.write(f"bench: wrote {path}\n")
    return 0
