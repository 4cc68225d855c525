"""SQLite WAL checkpoints from a background thread, so that no commit runs one.

By default SQLite checkpoints inside a commit: the commit that takes the
write-ahead log past 1000 pages then copies them into the database file and
syncs it before it returns. For a worker that commit is a batch's, and every
command of the batch waits: 10 to 25 ms most times, and 300 to 400 ms now and then
under load (measured with two workers on one file, docs/benchmarks.md).

A store on SQLite turns that off (``PRAGMA wal_autocheckpoint=0`` on each of
its connections) and runs a ``PASSIVE`` checkpoint every ``interval`` here
instead. ``PASSIVE`` waits for no lock that a reader or a writer holds: it
copies what it can, and a second process's checkpointer that finds one
running returns at once and tries at its next turn. The log then stays near
what the workers write in one interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["CHECKPOINT_INTERVAL", "Checkpoint", "WalCheckpointer"]

logger = logging.getLogger(__name__)

CHECKPOINT_INTERVAL = 0.25
"""Seconds between two checkpoints; two workers at full speed write ~1000 pages in it."""


class Checkpoint(NamedTuple):
    """What ``PRAGMA wal_checkpoint`` reports."""

    busy: bool
    """Another checkpoint was running (nothing was done)."""
    log_frames: int
    """Frames in the write-ahead log."""
    checkpointed: int
    """Frames of it now copied into the database file."""


class WalCheckpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` seconds in a thread.

    ``connect`` opens a DB-API connection in autocommit mode (a checkpoint cannot
    run inside a transaction). The thread keeps one of its own, out of the
    store's pool: a pooled one would be used by the batches too, and each
    connection the pool keeps busy holds its own page cache.
    """

    def __init__(self, connect: Callable[[], Any], *, interval: float = CHECKPOINT_INTERVAL):
        self._connect = connect
        self.interval = interval
        self.runs = 0
        """Checkpoints run so far, by the thread or by ``checkpoint``."""
        self._ran = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def checkpoint(self) -> Checkpoint:
        """One ``PASSIVE`` checkpoint now, on a connection opened for it."""
        raw = self._connect()
        try:
            return self._run(raw)
        finally:
            raw.close()

    def wait_runs(self, runs: int, *, timeout: float) -> bool:
        """Wait until ``runs`` checkpoints have run in all; False on timeout."""
        with self._ran:
            return self._ran.wait_for(lambda: self.runs >= runs, timeout)

    def _run(self, raw: Any) -> Checkpoint:
        cursor = raw.cursor()
        try:
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
            busy, log_frames, checkpointed = cursor.fetchone()
        finally:
            cursor.close()
        with self._ran:
            self.runs += 1
            self._ran.notify_all()
        return Checkpoint(bool(busy), log_frames, checkpointed)

    def _loop(self) -> None:
        raw = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    if raw is None:
                        raw = self._connect()
                    logger.debug("WAL checkpoint: %s", self._run(raw))
                except Exception as e:  # a store outage: the next turn tries again
                    logger.warning("WAL checkpoint failed: %s", e)
                    if raw is not None:
                        raw.close()
                        raw = None
        finally:
            if raw is not None:
                raw.close()
