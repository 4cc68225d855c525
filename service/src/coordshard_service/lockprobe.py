"""Measure waits for SQLite's write lock while other processes write the same file.

``python -m coordshard_service.lockprobe FILE --mode poll|busy-handler --seconds S``
runs write transactions shaped like a worker's batches (take the lock, insert
50 rows, hold it ~4 ms, commit, pause ~2 ms as a worker does to reply, ack and
fetch) and prints one JSON line: transactions done and each wait in ms.
``poll`` takes the lock with ``store.begin_immediate`` (what the store does);
``busy-handler`` leaves the waiting to SQLite's own busy handler. The
``sqlite-lock`` benchmark runs two of these side by side.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time

from coordshard_service.store import SQLITE_LOCK_TIMEOUT, begin_immediate

HOLD_S = 0.004
GAP_S = 0.002
ROWS = 50


def probe(path: str, *, mode: str, seconds: float) -> list[float]:
    """Run write transactions for ``seconds``; return each lock wait in ms."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_LOCK_TIMEOUT)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS probe (v INTEGER)")
    waits: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        if mode == "poll":
            begin_immediate(conn)
        else:
            conn.execute("BEGIN IMMEDIATE")
        waits.append((time.monotonic() - t0) * 1000)
        conn.executemany("INSERT INTO probe (v) VALUES (?)", [(i,) for i in range(ROWS)])
        busy_until = time.monotonic() + HOLD_S
        while time.monotonic() < busy_until:  # the batch's work, holding the lock
            pass
        conn.execute("COMMIT")
        time.sleep(GAP_S)  # replying, acking and fetching the next batch
    conn.close()
    return waits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m coordshard_service.lockprobe")
    p.add_argument("file")
    p.add_argument("--mode", choices=("poll", "busy-handler"), default="poll")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    waits = probe(args.file, mode=args.mode, seconds=args.seconds)
    print(json.dumps({"transactions": len(waits), "waits_ms": waits}))


if __name__ == "__main__":
    main()
