"""A batch's hot statements as driver SQL, run on the transaction's own DB-API cursor.

Through SQLAlchemy Core each statement cost ~110 µs of CPU here (building the
statement, its cache key, expanding IN lists, processing parameters), several
times what SQLite takes to run it, and a batch runs five to seven of them.
These are plain strings in the driver's placeholder style, one per dialect
and row count, built once.

Rows go in one multi-row statement each (``VALUES (..), (..)``; an ``UPDATE``
with ``CASE``), never ``executemany``: psycopg 3 runs ``executemany`` in
pipeline mode, after which PostgreSQL's ``idle_in_transaction_session_timeout``
no longer ends the session (measured: psycopg 3.3, PostgreSQL 15), and that
timeout is what frees the shards of a worker frozen inside its transaction.

The schema itself stays in ``store`` (and its Alembic migrations); the store
tests run every statement on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import cache
from typing import Any

__all__ = ["ROWS_PER_STATEMENT", "BatchSql", "chunks"]

ROWS_PER_STATEMENT = 500
"""Most rows (or keys) in one statement: 500 rows of 8 parameters stays under SQLite's
limit of 32,766 bound parameters."""


def chunks(rows: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """``rows`` in slices of at most ``ROWS_PER_STATEMENT``."""
    for i in range(0, len(rows), ROWS_PER_STATEMENT):
        yield rows[i : i + ROWS_PER_STATEMENT]


class BatchSql:
    """The statements for one dialect: ``sqlite`` (``?``), else ``%s`` (PostgreSQL).

    Every statement names its group (``group_name``) first, and the mark statements
    their stream instance: see ``store`` for why.
    """

    def __init__(self, dialect: str) -> None:
        p = "?" if dialect == "sqlite" else "%s"
        self._p = p
        # SQLite has no FOR UPDATE: its transactions start with BEGIN IMMEDIATE,
        # which already holds the one write lock.
        self._for_update = "" if dialect == "sqlite" else " FOR UPDATE"
        self.point = (
            "SELECT system_id, point_id, coordinates, version FROM points"
            f" WHERE group_name = {p} AND system_id = {p} AND point_id = {p}"
        )
        self.system = (
            "SELECT system_id, name, dimension, units, bounds FROM systems"
            f" WHERE group_name = {p} AND system_id = {p}"
        )
        # One cache per instance: the strings depend on the dialect and the count.
        self.marks: Callable[[int], str] = cache(self._marks)
        self.outcomes: Callable[[int], str] = cache(self._outcomes)
        self.new_marks: Callable[[int], str] = cache(self._new_marks)
        self.set_marks: Callable[[int], str] = cache(self._set_marks)
        self.save_outcomes: Callable[[int], str] = cache(self._save_outcomes)
        self.upsert_points: Callable[[int], str] = cache(self._upsert_points)
        self.delete_points: Callable[[int], str] = cache(self._delete_points)
        self.claim_attempts: Callable[[int], str] = cache(self._claim_attempts)
        self.clear_attempts: Callable[[int], str] = cache(self._clear_attempts)
        self.reset_attempts: Callable[[int], str] = cache(self._reset_attempts)

    def _list(self, n: int) -> str:
        return ", ".join([self._p] * n)

    def _rows(self, n: int, width: int) -> str:
        row = f"({self._list(width)})"
        return ", ".join([row] * n)

    def _marks(self, n: int) -> str:
        """Lock and read ``n`` shards' marks, in shard order; parameters: the group, the
        stream instance, then the shards."""
        return (
            f"SELECT shard, high_seq FROM shard_marks WHERE group_name = {self._p}"
            f" AND stream = {self._p} AND shard IN ({self._list(n)})"
            f" ORDER BY shard{self._for_update}"
        )

    def _outcomes(self, n: int) -> str:
        """Read the stored outcomes of ``n`` idempotency keys; parameters: the group,
        then the keys."""
        return (
            'SELECT "key", shard, stream_seq, outcome, fingerprint FROM outcomes'
            f' WHERE group_name = {self._p} AND "key" IN ({self._list(n)})'
        )

    def _new_marks(self, n: int) -> str:
        """Insert ``n`` marks at 0; parameters: group, stream instance, shard per row."""
        values = ", ".join([f"({self._list(3)}, 0)"] * n)
        return f"INSERT INTO shard_marks (group_name, stream, shard, high_seq) VALUES {values}"

    def _set_marks(self, n: int) -> str:
        """Set ``n`` marks; parameters: (shard, seq) pairs, the group, the stream
        instance, then the shards again."""
        cases = " ".join([f"WHEN {self._p} THEN {self._p}"] * n)
        return (
            f"UPDATE shard_marks SET high_seq = CASE shard {cases} END"
            f" WHERE group_name = {self._p} AND stream = {self._p}"
            f" AND shard IN ({self._list(n)})"
        )

    def _save_outcomes(self, n: int) -> str:
        """Insert ``n`` outcomes; parameters: group, key, stream instance, shard, stream_seq,
        outcome, fingerprint, created_at per row."""
        return (
            'INSERT INTO outcomes (group_name, "key", stream, shard, stream_seq, outcome,'
            f" fingerprint, created_at) VALUES {self._rows(n, 8)}"
        )

    def _upsert_points(self, n: int) -> str:
        """Insert or update ``n`` distinct points; parameters: group, system_id, point_id,
        coordinates, version per row."""
        return (
            "INSERT INTO points (group_name, system_id, point_id, coordinates, version)"
            f" VALUES {self._rows(n, 5)}"
            " ON CONFLICT (group_name, system_id, point_id) DO UPDATE"
            " SET coordinates = excluded.coordinates, version = excluded.version"
        )

    def _delete_points(self, n: int) -> str:
        """Delete ``n`` points; parameters: group, system_id, point_id per row."""
        return (
            "DELETE FROM points WHERE (group_name, system_id, point_id)"
            f" IN (VALUES {self._rows(n, 3)})"
        )

    def _claim_attempts(self, n: int) -> str:
        """Claim ``n`` shards' attempts for a process, counting a death where another
        process's claim was never cleared and the shard's mark stayed below it;
        parameters: group, stream instance, shard, owner, hi, single per row.
        Returns shard, deaths, suspect, dead_single.

        Every SET expression reads the row as it was (SQL semantics on both stores)."""
        mark = (
            "COALESCE((SELECT m.high_seq FROM shard_marks m"
            " WHERE m.group_name = shard_attempts.group_name"
            " AND m.stream = shard_attempts.stream AND m.shard = shard_attempts.shard), 0)"
        )
        # Another process's claim, never cleared, over messages not applied since.
        stale = (
            "shard_attempts.owner <> '' AND shard_attempts.owner <> excluded.owner"
            f" AND shard_attempts.hi > {mark}"
        )
        values = ", ".join([f"({self._list(6)}, 0, 0, 0)"] * n)
        return (
            "INSERT INTO shard_attempts (group_name, stream, shard, owner, hi, single,"
            f" deaths, suspect, dead_single) VALUES {values}"
            " ON CONFLICT (group_name, stream, shard) DO UPDATE SET"
            " owner = excluded.owner, hi = excluded.hi, single = excluded.single,"
            f" deaths = shard_attempts.deaths + CASE WHEN {stale} THEN 1 ELSE 0 END,"
            f" suspect = CASE WHEN {stale} AND shard_attempts.hi > shard_attempts.suspect"
            " THEN shard_attempts.hi ELSE shard_attempts.suspect END,"
            f" dead_single = CASE WHEN {stale} THEN shard_attempts.single * shard_attempts.hi"
            " ELSE shard_attempts.dead_single END"
            " RETURNING shard, deaths, suspect, dead_single"
        )

    def _clear_attempts(self, n: int) -> str:
        """Clear a process's claims of ``n`` shards; parameters: the group, the stream
        instance, the owner, then the shards."""
        return (
            f"UPDATE shard_attempts SET owner = '' WHERE group_name = {self._p}"
            f" AND stream = {self._p} AND owner = {self._p} AND shard IN ({self._list(n)})"
        )

    def _reset_attempts(self, n: int) -> str:
        """Forget the dead attempts of those of ``n`` shards whose mark has passed every
        sequence they held; parameters: the group, the stream instance, then the shards."""
        return (
            "UPDATE shard_attempts SET deaths = 0, suspect = 0, dead_single = 0"
            f" WHERE group_name = {self._p} AND stream = {self._p}"
            f" AND shard IN ({self._list(n)}) AND deaths > 0 AND suspect <= ("
            "SELECT m.high_seq FROM shard_marks m WHERE m.group_name = shard_attempts.group_name"
            " AND m.stream = shard_attempts.stream AND m.shard = shard_attempts.shard)"
        )
