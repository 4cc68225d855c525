"""How long a worker waits for SQLite's write lock when two share one file.

Two ``coordshard_service.lockprobe`` processes write the same WAL file at
once, in batch-shaped transactions, first with SQLite's own busy handler
(which sleeps 1, 2, 5 ... 100 ms between tries), then with the store's
millisecond polling (``begin_immediate``). Per mode and process: transactions
done (fairness) and the lock wait p50/p99/max.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from coordshard_operator.benchmarks import Table, percentile
from coordshard_operator.local.quantiles import reported

MODES = ("busy-handler", "poll")


def _pair(path: Path, mode: str, seconds: float) -> list[list[float]]:
    args = [sys.executable, "-m", "coordshard_service.lockprobe", str(path)]
    args += ["--mode", mode, "--seconds", str(seconds)]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE) for _ in range(2)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        results.append(json.loads(out)["waits_ms"])
    return results


def run(args: argparse.Namespace) -> Table:
    seconds = 3.0 if args.quick else 10.0
    rounds = 1 if args.quick else 2
    table = Table(["mode", "round", "process", "transactions", "p50 ms", "p99 ms", "max ms"])
    with tempfile.TemporaryDirectory(prefix="coordshard-lock-") as tmp:
        for r in range(1, rounds + 1):
            for mode in MODES:
                path = Path(tmp) / f"{mode}-{r}.db"
                for n, waits in enumerate(_pair(path, mode, seconds), start=1):
                    print(f"  {mode} round {r} process {n}: {len(waits)} txns", file=sys.stderr)
                    table.rows.append(
                        [
                            mode,
                            r,
                            n,
                            len(waits),
                            round(percentile(waits, 0.5), 1),
                            reported(waits, 0.99, ndigits=1),
                            round(max(waits), 1),
                        ]
                    )
                    table.samples[f"{mode}-{r}-{n}"] = waits
    table.notes.append(
        f"Each transaction: 50 inserts, ~4 ms holding the lock, then a ~2 ms pause; "
        f"{seconds:.0f} s per pair. Machine: {os.cpu_count()} CPUs."
    )
    return table
