"""The store's schema comes from the shipped Alembic migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from coordshard_client.messages import Point
from coordshard_service.batchsql import ROWS_PER_STATEMENT
from coordshard_service.errors import StoreUnavailableError
from coordshard_service.migrations import HEAD
from coordshard_service.store import SavedOutcome, Store

from .conftest import STREAM_KEY

pytestmark = pytest.mark.integration


def test_migrations_build_the_schema_and_rerun_as_a_no_op(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.migrate()
        store.migrate()
        with store.engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            tables = set(sa.inspect(conn).get_table_names())
        assert version == HEAD
        assert {"systems", "points", "shard_marks", "outcomes", "dead_letters"} <= tables
        assert store.ping() and store.dead_letters() == []
    finally:
        store.dispose()


def test_a_store_at_head_starts_without_importing_alembic(database_url: str) -> None:
    """Every worker start after a group's first: the version is read, Alembic (with
    Mako and Pygments, ~0.3 s of a worker's start) stays out of the process."""
    store = Store(database_url)
    try:
        store.migrate()
    finally:
        store.dispose()
    script = (
        "import sys\n"
        "from coordshard_service.store import Store\n"
        "store = Store(sys.argv[1])\n"
        "store.migrate()\n"
        "store.dispose()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "[]", done.stdout[-2000:]


def test_marks_start_at_zero_and_commit_with_the_transaction(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.migrate()
        with store.transaction(stream=STREAM_KEY) as tx:
            assert tx.lock_marks([3, 1]) == {1: 0, 3: 0}
            tx.set_marks({3: 42})
            tx.save_outcomes([SavedOutcome("k", 3, 42, "{}", "f1")])
        with pytest.raises(RuntimeError), store.transaction(stream=STREAM_KEY) as tx:
            tx.set_marks({3: 99})
            raise RuntimeError("roll back")
        with store.transaction(stream=STREAM_KEY) as tx:
            assert tx.lock_marks([3, 5, 1]) == {1: 0, 3: 42, 5: 0}
            assert tx.outcomes_by_keys(["k", "nope"]) == {"k": SavedOutcome("k", 3, 42, "{}", "f1")}
            assert tx.outcome_by_seq(3, 42) == "{}"
    finally:
        store.dispose()


def test_batch_statements_take_more_rows_than_one_statement_holds(database_url: str) -> None:
    """Rows past ROWS_PER_STATEMENT go in further statements; every one lands."""
    n = ROWS_PER_STATEMENT * 2 + 7
    store = Store(database_url)
    try:
        store.migrate()
        with store.transaction(stream=STREAM_KEY) as tx:
            shards = list(range(n))
            assert tx.lock_marks(shards) == dict.fromkeys(shards, 0)
            tx.set_marks({s: s + 1 for s in shards})
            tx.save_outcomes(
                [SavedOutcome(f"k{i}", i, i + 1, f'{{"i":{i}}}', None) for i in range(n)]
            )
            tx.write_points(
                [
                    Point(system_id="s", point_id=f"p{i}", coordinates=(i, 0), version=1)
                    for i in range(n)
                ],
                [],
            )
        with store.transaction(stream=STREAM_KEY) as tx:
            assert tx.lock_marks(shards) == {s: s + 1 for s in shards}
            found = tx.outcomes_by_keys([f"k{i}" for i in range(n)] + ["absent"])
            assert len(found) == n and found[f"k{n - 1}"].outcome == f'{{"i":{n - 1}}}'
            assert tx.point("s", f"p{n - 1}") == Point(
                system_id="s", point_id=f"p{n - 1}", coordinates=(n - 1, 0), version=1
            )
            tx.write_points(
                [Point(system_id="s", point_id="p0", coordinates=(5, 5), version=2)],
                [("s", f"p{i}") for i in range(1, n)],
            )
        with store.transaction(stream=STREAM_KEY) as tx:
            assert tx.list_points("s", after=None, limit=10) == [
                Point(system_id="s", point_id="p0", coordinates=(5, 5), version=2)
            ]
    finally:
        store.dispose()


def test_prune_forgets_only_outcomes_past_retention(database_url: str) -> None:
    store = Store(database_url)
    try:
        store.migrate()
        with store.transaction(stream=STREAM_KEY) as tx:
            tx.lock_marks([0])
            tx.save_outcomes(
                [SavedOutcome("old", 0, 1, "{}", None), SavedOutcome("older", 0, 2, "{}", None)]
            )
        assert store.prune_outcomes(older_than=3600) == 0
        assert store.prune_outcomes(older_than=-1) == 2
        with store.transaction(stream=STREAM_KEY) as tx:
            assert tx.outcomes_by_keys(["old", "older"]) == {}
    finally:
        store.dispose()


def test_ping_answers_while_another_writer_holds_its_transaction(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker frozen inside a write transaction (SIGSTOP) must not make the
    # others' readiness probes fail: they would lose their shards too.
    monkeypatch.setattr("coordshard_service.store.SQLITE_LOCK_TIMEOUT", 0.1)
    frozen, other = Store(database_url), Store(database_url)
    try:
        frozen.migrate()
        with frozen.transaction(stream=STREAM_KEY) as tx:
            tx.lock_marks([0])
            assert other.ping()
    finally:
        frozen.dispose()
        other.dispose()


def test_postgres_ends_a_frozen_writers_session_so_its_shards_new_owner_goes_on(
    database_url: str,
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's lock belongs to the frozen process: nothing can end it")
    frozen = Store(database_url, idle_transaction_timeout=0.5)
    owner = Store(database_url)
    pool = ThreadPoolExecutor(1)
    try:
        frozen.migrate()
        with pytest.raises(StoreUnavailableError), frozen.transaction(stream=STREAM_KEY) as tx:
            tx.lock_marks([7])
            tx.set_marks({7: 5})
            # Frozen here: the new owner of shard 7 waits for its row until the
            # server ends the idle session; then it goes on, and the frozen
            # writer's commit fails.
            took = pool.submit(_take_shard, owner, 7).result(timeout=30)
            assert took == 0  # the frozen writer's mark never landed
        with owner.transaction(stream=STREAM_KEY) as tx:
            assert tx.lock_marks([7]) == {7: 9}
    finally:
        pool.shutdown(wait=False)
        frozen.dispose()
        owner.dispose()


def _take_shard(store: Store, shard: int) -> int:
    with store.transaction(stream=STREAM_KEY) as tx:
        mark = tx.lock_marks([shard])[shard]
        tx.set_marks({shard: 9})
    return mark


def test_postgres_writers_on_one_shard_take_its_mark_one_after_the_other(
    database_url: str,
) -> None:
    # Two writers on one shard at once (a shard's old owner finishing a batch as
    # its new owner starts one): the second must read the mark the first commits,
    # never the one before it, or it moves the mark back and applies again what
    # lies between. SQLite has one write lock for the whole file; PostgreSQL
    # needs the marks' row lock.
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's BEGIN IMMEDIATE serialises every writer already")
    first, second = Store(database_url), Store(database_url)
    pool = ThreadPoolExecutor(1)
    try:
        first.migrate()
        with first.transaction(stream=STREAM_KEY) as tx:
            tx.lock_marks([4])  # the row exists, at 0
        with first.transaction(stream=STREAM_KEY) as tx:
            assert tx.lock_marks([4]) == {4: 0}
            tx.set_marks({4: 5})
            seen = pool.submit(_advance_to, second, 4, 3)
            # Commit only once the second writer has read the mark or waits for it.
            _wait_for_read_or_lock_wait(first, seen)
        assert seen.result(timeout=30) == 5
        with first.transaction(stream=STREAM_KEY) as tx:
            assert tx.lock_marks([4]) == {4: 5}
    finally:
        pool.shutdown(wait=False)
        first.dispose()
        second.dispose()


def _advance_to(store: Store, shard: int, seq: int) -> int:
    """A batch applying ``seq`` on ``shard``: the mark goes to the larger; returns what it read."""
    with store.transaction(stream=STREAM_KEY) as tx:
        mark = tx.lock_marks([shard])[shard]
        tx.set_marks({shard: max(mark, seq)})
    return mark


def _wait_for_read_or_lock_wait(store: Store, done: Future[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = sa.text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with store.engine.connect() as conn:
        while not done.done():
            if conn.execute(waiting).scalar():
                return
            assert time.monotonic() < deadline, "the second writer neither read nor waited"
            conn.rollback()  # a fresh snapshot of pg_stat_activity each time
            time.sleep(0.01)
