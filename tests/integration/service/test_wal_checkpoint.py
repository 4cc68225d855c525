"""On SQLite, the store's own thread checkpoints the write-ahead log; commits never do."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordshard_service.store import SavedOutcome, Store

from .conftest import STREAM_KEY

pytestmark = pytest.mark.integration

PAGE = 4096


def _write_pages(store: Store, pages: int, *, tag: str) -> None:
    """One transaction of ``pages`` outcome rows of about a page each."""
    body = "x" * (PAGE - 200)
    with store.transaction(stream=STREAM_KEY) as tx:
        tx.save_outcomes([SavedOutcome(f"{tag}-{n}", 0, n + 1, body, "f") for n in range(pages)])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.migrate()
    return store


def test_commits_leave_the_log_to_the_checkpointer(store: Store) -> None:
    """With SQLite's default the second commit below would checkpoint (past 1000
    pages) and the third would start the log afresh: ~600 frames, not ~1800."""
    try:
        assert store.checkpointer is not None
        store.checkpointer.stop()
        with store.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            assert raw.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        for round_ in range(3):
            _write_pages(store, 600, tag=f"r{round_}")
        done = store.checkpointer.checkpoint()
        assert done.log_frames > 1500
        assert done.checkpointed == done.log_frames and not done.busy
    finally:
        store.dispose()


def test_the_thread_copies_the_log_into_the_database_file(store: Store, tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    try:
        assert store.checkpointer is not None
        before = db.stat().st_size
        _write_pages(store, 600, tag="t")
        runs = store.checkpointer.runs
        # Two runs: the first may have begun before the commit.
        assert store.checkpointer.wait_runs(runs + 2, timeout=10)
        assert db.stat().st_size >= before + 600 * PAGE
    finally:
        store.dispose()
    assert store.checkpointer._thread is None  # dispose stopped it


def test_an_in_memory_store_has_no_checkpointer() -> None:
    store = Store("sqlite://")
    try:
        assert store.checkpointer is None
    finally:
        store.dispose()
