"""Workers starting together on a fresh database all migrate it (none fails)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from coordshard_service.store import Store

pytestmark = pytest.mark.integration

_OTHER_WORKER = """
import sys
from coordshard_service.store import Store
Store(sys.argv[1]).migrate()
"""


def test_a_worker_opening_a_fresh_sqlite_file_waits_for_another_converting_it(
    tmp_path: Path,
) -> None:
    """Another process writing the still non-WAL file: ``PRAGMA journal_mode=WAL`` fails
    at once with "database is locked" (no busy wait); the store must wait instead."""
    path = tmp_path / "store.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other (x)")
    release = threading.Timer(0.3, holder.execute, ("COMMIT",))
    release.start()
    store = Store(f"sqlite:///{path}")
    try:
        store.migrate()
    finally:
        release.join()
        store.dispose()
        holder.close()


def test_a_worker_starting_while_another_migrates_waits_and_finds_the_schema(
    database_url: str,
) -> None:
    """One worker migrates and holds its transaction just after creating alembic_version;
    a second starts then. It must wait for the first and find the schema done.
    Without the advisory lock both see no alembic_version and the second fails
    (UniqueViolation on pg_type_typname_nsp_index, or DuplicateTable)."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite: a migration takes the write lock up front (BEGIN IMMEDIATE)")
    first = Store(database_url)
    holding, go_on = threading.Event(), threading.Event()

    @sa.event.listens_for(first.engine, "after_cursor_execute")
    def _hold(*args: Any) -> None:
        if "CREATE TABLE alembic_version" in args[2] and not holding.is_set():
            holding.set()
            go_on.wait(60)

    migrating = threading.Thread(target=first.migrate)
    migrating.start()
    second = None
    watcher = Store(database_url)
    try:
        assert holding.wait(30)
        second = subprocess.Popen(
            [sys.executable, "-c", _OTHER_WORKER, database_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # Let the first go on only once the second waits on a lock (the advisory
        # lock with the fix; the catalog's locks without it) or has already failed.
        deadline = time.monotonic() + 30
        while second.poll() is None and _sessions_waiting_on_locks(watcher) == 0:
            assert time.monotonic() < deadline, "the second worker never waited on a lock"
            time.sleep(0.02)
    finally:
        go_on.set()
        migrating.join(30)
        first.dispose()
        watcher.dispose()
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err


def _sessions_waiting_on_locks(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        )
