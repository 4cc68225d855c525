"""SQLite's write lock: a second writer polls for it, not sleeping in SQLite's busy handler."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from coordshard_service.errors import StoreUnavailableError
from coordshard_service.store import SQLITE_LOCK_TIMEOUT, Store, begin_immediate

from .conftest import STREAM_KEY

pytestmark = pytest.mark.integration


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def _busy_timeout(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA busy_timeout").fetchone()[0])


def test_a_waiting_writer_gets_the_lock_once_it_is_released(tmp_path: Path) -> None:
    holder, waiter = _connect(tmp_path / "db"), _connect(tmp_path / "db")
    holder.execute("BEGIN IMMEDIATE")
    polling = threading.Event()
    waited: list[float] = []

    def take() -> None:
        polling.set()
        waited.append(begin_immediate(waiter))

    thread = threading.Thread(target=take)
    thread.start()
    polling.wait()
    assert thread.is_alive()  # still waiting: the holder has not committed
    holder.execute("COMMIT")
    thread.join(timeout=10)
    assert not thread.is_alive() and waited and waited[0] > 0
    assert waiter.in_transaction
    waiter.execute("COMMIT")
    assert _busy_timeout(waiter) == int(SQLITE_LOCK_TIMEOUT * 1000)


def test_a_lock_held_past_the_timeout_is_an_error_and_the_busy_timeout_is_restored(
    tmp_path: Path,
) -> None:
    holder, waiter = _connect(tmp_path / "db"), _connect(tmp_path / "db")
    waiter.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_TIMEOUT * 1000)}")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter, timeout=0.05)
    assert not waiter.in_transaction
    assert _busy_timeout(waiter) == int(SQLITE_LOCK_TIMEOUT * 1000)
    holder.execute("ROLLBACK")


def test_the_store_reports_a_lock_it_cannot_get_as_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    holder = _connect(path)
    holder.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr("coordshard_service.store.SQLITE_LOCK_TIMEOUT", 0.05)
    try:
        with (
            pytest.raises(StoreUnavailableError, match="locked"),
            store.transaction(stream=STREAM_KEY) as tx,
        ):
            tx.lock_marks([1])
    finally:
        holder.execute("ROLLBACK")
        store.dispose()
