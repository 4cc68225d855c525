"""The durable state: systems, points, dedupe records and dead letters.

The only module that imports SQLAlchemy; rows never leave it (callers get the
wire models). One ``Store`` is shared by every worker of a group, because a
shard's state must follow the shard: SQLite (WAL, one file on one machine) is
the embedded default, PostgreSQL (by URL) serves pods on many machines.

Dedupe lives here too, in the same transaction as the state change:
``shard_marks`` holds each shard's highest applied stream sequence (locked
first, so two workers never apply the same shard at once), and ``outcomes``
maps an idempotency key to the outcome it produced.

One database may hold many groups, so every row carries its group
(``group_name``) and every query filters by the ``Store``'s own: two groups
may use the same system ids, shard numbers and keys. What is counted in stream
sequences is scoped further, to the stream *instance* a transaction serves
(``Store.transaction(stream=...)``, see ``consumerstate.StreamInstance``): a
stream deleted and re-created, or emptied by a server that lost its storage,
restarts its sequences at 1, and the marks and outcome sequences of the old
one say nothing about the new. A new instance therefore starts with no marks,
while the group's domain rows and its key-based outcomes stay.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError, StatementError

from coordshard_client.messages import Bounds, Point, System
from coordshard_client.naming import DEFAULT_GROUP
from coordshard_service.batchsql import BatchSql, chunks
from coordshard_service.errors import StoreRefusedError, StoreUnavailableError
from coordshard_service.walcheckpoint import WalCheckpointer

__all__ = ["Attempts", "DeadLetter", "SavedOutcome", "Store", "StoreTx", "metadata", "storable"]

logger = logging.getLogger(__name__)

metadata = sa.MetaData()

UNOWNED = ""
"""The group of rows stored before groups were recorded (migration 0003); the first
worker to migrate the store claims them for its group."""

systems = sa.Table(
    "systems",
    metadata,
    sa.Column("group_name", sa.String(128), primary_key=True),
    sa.Column("system_id", sa.String(128), primary_key=True),
    sa.Column("shard", sa.Integer, nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("dimension", sa.Integer, nullable=False),
    sa.Column("units", sa.String(32), nullable=False),
    sa.Column("bounds", sa.Text, nullable=True),
)

points = sa.Table(
    "points",
    metadata,
    sa.Column("group_name", sa.String(128), primary_key=True),
    sa.Column("system_id", sa.String(128), primary_key=True),
    sa.Column("point_id", sa.String(128), primary_key=True),
    sa.Column("coordinates", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

shard_marks = sa.Table(
    "shard_marks",
    metadata,
    sa.Column("group_name", sa.String(128), primary_key=True),
    sa.Column("stream", sa.String(300), primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("high_seq", sa.BigInteger, nullable=False),
)

outcomes = sa.Table(
    "outcomes",
    metadata,
    sa.Column("group_name", sa.String(128), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    # The stream instance whose stream_seq this is (UNOWNED: stored before 0003).
    sa.Column("stream", sa.String(300), nullable=False),
    sa.Column("shard", sa.Integer, nullable=False),
    sa.Column("stream_seq", sa.BigInteger, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("fingerprint", sa.String(32), nullable=True),
    sa.Index("ix_outcomes_stream_seq", "group_name", "stream", "shard", "stream_seq"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("group_name", sa.String(128), nullable=False, index=True),
    sa.Column("stream", sa.String(300), nullable=False),
    sa.Column("stream_seq", sa.BigInteger, nullable=False, index=True),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("consumer", sa.String(200), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


shard_attempts = sa.Table(
    "shard_attempts",
    metadata,
    sa.Column("group_name", sa.String(128), primary_key=True),
    sa.Column("stream", sa.String(300), primary_key=True),
    sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("hi", sa.BigInteger, nullable=False),
    sa.Column("single", sa.Integer, nullable=False),
    sa.Column("deaths", sa.Integer, nullable=False),
    sa.Column("suspect", sa.BigInteger, nullable=False),
    sa.Column("dead_single", sa.BigInteger, nullable=False),
)
"""Each shard's batch in flight and the dead attempts before it (``attempts``)."""


class Attempts(NamedTuple):
    """What a shard's claim found: the processes that died applying it since its mark
    last passed ``suspect`` (the highest sequence they held), and the one message the
    last of them was applying alone (0 if it was applying a batch)."""

    deaths: int
    suspect: int
    dead_single: int


class SavedOutcome(NamedTuple):
    """An applied command's outcome, kept under its idempotency key."""

    key: str
    shard: int
    stream_seq: int
    outcome: str
    """The outcome as wire JSON."""
    fingerprint: str | None
    """A digest of the command that produced it (None for outcomes stored before 0002)."""


class DeadLetter:
    """A message kept for inspection because it could never be processed.

    ``stream``: the stream instance ``stream_seq`` counts in; read back from the
    store (a transaction writes its own instance, whatever is given here).
    """

    __slots__ = ("consumer", "data", "headers", "reason", "stream", "stream_seq", "subject")

    def __init__(
        self,
        *,
        stream_seq: int,
        subject: str,
        reason: str,
        headers: dict[str, str],
        data: bytes,
        consumer: str,
        stream: str = "",
    ) -> None:
        self.stream = stream
        self.stream_seq = stream_seq
        self.subject = subject
        self.reason = reason
        self.headers = headers
        self.data = data
        self.consumer = consumer


SQLITE_LOCK_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for the write lock before the store reports itself unavailable."""
SQLITE_LOCK_POLL = 0.001
"""Seconds between two tries for SQLite's write lock."""


def _sqlite_pragmas(engine: Engine) -> None:
    """WAL, checkpointed by a ``WalCheckpointer`` and never by a commit, and BEGIN
    IMMEDIATE so a writer takes the lock up front (no upgrade deadlocks)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        _set_wal(dbapi_connection)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_TIMEOUT * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        begin_immediate(conn.connection.dbapi_connection)


def _set_wal(raw: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another process holds the lock.

    On a file not yet in WAL mode (a fresh one) the pragma reads the header, then
    upgrades to a write to set it; that read-to-write upgrade fails at once with
    "database is locked" (SQLite skips the busy handler to avoid a deadlock) while
    another connection is writing, e.g. a second worker converting the same new file.
    """
    _while_locked(lambda: raw.execute("PRAGMA journal_mode=WAL").fetchall(), SQLITE_LOCK_TIMEOUT)


def _while_locked(statement: Callable[[], object], limit: float) -> float:
    """Run ``statement`` again every millisecond while SQLite says "locked", for up to
    ``limit`` seconds; return the seconds spent waiting."""
    started = time.monotonic()
    while True:
        try:
            statement()
            return time.monotonic() - started
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() - started > limit:
                raise
        time.sleep(SQLITE_LOCK_POLL)


def begin_immediate(raw: Any, *, timeout: float | None = None) -> float:
    """``BEGIN IMMEDIATE`` on a raw sqlite3 connection; returns the seconds spent waiting.

    While another process holds the write lock, try again every millisecond.
    SQLite's own busy handler sleeps 1, 2, 5, 10, ... then 100 ms between tries,
    so a waiter misses the holder's short gaps between transactions and can
    starve for hundreds of milliseconds while two workers share one file (see
    docs/benchmarks.md). Every other statement keeps the connection's busy timeout.
    """
    limit = SQLITE_LOCK_TIMEOUT if timeout is None else timeout
    raw.execute("PRAGMA busy_timeout=0")
    try:
        return _while_locked(lambda: raw.execute("BEGIN IMMEDIATE"), limit)
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_TIMEOUT * 1000)}")


class Store:
    """A connection pool to the shared database, serving one group's rows."""

    def __init__(
        self, url: str, *, group: str = DEFAULT_GROUP, idle_transaction_timeout: float = 10.0
    ) -> None:
        """``group``: the consumer group whose rows this store reads and writes; other
        groups' rows in the same database are never seen.

        ``idle_transaction_timeout``: seconds PostgreSQL lets a session sit idle inside a
        transaction before it ends the session (``idle_in_transaction_session_timeout``;
        0 never). A worker frozen mid-transaction (SIGSTOP, a wedged node) holds its
        shards' mark rows locked, and their new owner waits on them; this bounds the wait.
        The frozen worker's commit then fails and its batch is retried, and refused if its
        shards moved. SQLite has no such bound: its lock belongs to the frozen process."""
        self.url = url
        self.group = group
        self.owner = uuid.uuid4().hex
        """This process's name in the shards' attempt claims (``attempts``): a claim of
        another owner found uncleared is a process that died applying it."""
        self.checkpointer: WalCheckpointer | None = None
        """SQLite on a file: checkpoints its write-ahead log (see ``walcheckpoint``)."""
        try:
            if url.startswith("sqlite"):
                self.engine = sa.create_engine(url, connect_args={"timeout": SQLITE_LOCK_TIMEOUT})
                _sqlite_pragmas(self.engine)
                if self.engine.url.database not in (None, "", ":memory:"):
                    self.checkpointer = WalCheckpointer(self._sqlite_connection)
            else:
                idle_ms = int(idle_transaction_timeout * 1000)
                self.engine = sa.create_engine(
                    url,
                    pool_pre_ping=True,
                    connect_args={"options": f"-c idle_in_transaction_session_timeout={idle_ms}"},
                )
        except (SQLAlchemyError, ImportError, ValueError) as e:
            raise StoreUnavailableError(f"opening store {self._safe_url()}: {e}") from e
        self._sql = BatchSql(self.engine.dialect.name)
        if self.checkpointer is not None:
            self.checkpointer.start()

    def _sqlite_connection(self) -> Any:
        """A driver connection to the SQLite file outside the pool, in autocommit mode."""
        args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
        raw = self.engine.dialect.loaded_dbapi.connect(*args, **kwargs)
        raw.isolation_level = None
        return raw

    def _safe_url(self) -> str:
        try:
            return sa.make_url(self.url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            return "(a URL SQLAlchemy cannot read)"  # nor can we hide its password

    def migrate(self) -> None:
        """Bring the schema to the newest version (Alembic migrations shipped in the package).

        Rows stored before groups were recorded (0003) are claimed for this store's
        group in the same transaction: a store that served one group before serves
        it on, provided a worker of that group is the first to start on it.
        """
        from coordshard_service.migrations import upgrade

        try:
            upgrade(self.engine, then=lambda conn: _claim_unowned(conn, self.group))
        except SQLAlchemyError as e:
            raise StoreUnavailableError(f"migrating {self._safe_url()}: {e}") from e

    def ping(self) -> bool:
        """Whether the database answers a trivial query, taking no lock.

        It runs on the raw driver connection, outside any transaction: through
        SQLAlchemy it would begin one, and on SQLite every transaction takes the
        write lock up front. A readiness probe waiting for the write lock turns
        a writer frozen in its transaction (a stopped process) into every other
        worker going not ready, and then losing its shards.
        """
        try:
            raw = self.engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                cursor.close()
            finally:
                raw.close()
            return True
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error, OSError) as e:
            logger.warning("store ping failed: %s", e)
            return False

    @contextmanager
    def transaction(self, *, stream: str) -> Iterator[StoreTx]:
        """One transaction; commits on success, rolls back on any exception.

        ``stream``: the stream instance whose sequences the transaction's marks,
        outcomes and dead letters count (``consumerstate.StreamInstance.key``).

        Raises:
            StoreRefusedError: the database refused a value for a data reason.
            StoreUnavailableError: it did not answer, or failed in any other way.
        """
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            with self.engine.begin() as conn:
                yield StoreTx(conn, self._sql, group=self.group, stream=stream)
        except (SQLAlchemyError, dbapi.Error, UnicodeEncodeError) as e:
            # Driver errors come from BEGIN IMMEDIATE and the batch statements, which
            # run on the raw cursor; SQLAlchemy wraps the others (``e.orig``).
            cause = e.orig if isinstance(e, StatementError) else e
            if isinstance(cause, (dbapi.DataError, dbapi.IntegrityError, UnicodeEncodeError)):
                raise StoreRefusedError(f"refused by {self._safe_url()}: {e}") from e
            raise StoreUnavailableError(f"transaction on {self._safe_url()}: {e}") from e

    def claim_attempts(
        self, his: Mapping[int, int], *, stream: str, single: bool
    ) -> dict[int, Attempts]:
        """``StoreTx.claim_attempts`` for this process, committed on its own before the
        batch it announces is applied (so a crash inside that batch leaves it behind).

        On PostgreSQL it commits without waiting for the WAL flush: a claim must outlive
        the worker, which it does once committed, not a crash of the database server
        (losing one there loses one count), and a flush per batch doubles the batch's."""
        with self.transaction(stream=stream) as tx:
            if self.engine.dialect.name == "postgresql":
                tx.commit_unflushed()
            return tx.claim_attempts(his, owner=self.owner, single=single)

    def dead_letters(self) -> list[DeadLetter]:
        """Every message this group kept, oldest first (for inspection and tests)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(dead_letters)
                .where(dead_letters.c.group_name == self.group)
                .order_by(dead_letters.c.id)
            ).all()
        return [
            DeadLetter(
                stream=r.stream,
                stream_seq=r.stream_seq,
                subject=r.subject,
                reason=r.reason,
                headers=json.loads(r.headers),
                data=r.data,
                consumer=r.consumer,
            )
            for r in rows
        ]

    def prune_outcomes(self, *, older_than: float) -> int:
        """Forget outcomes stored more than ``older_than`` seconds ago; return how many."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    sa.delete(outcomes).where(
                        outcomes.c.group_name == self.group,
                        outcomes.c.created_at < time.time() - older_than,
                    )
                )
        except SQLAlchemyError as e:
            raise StoreUnavailableError(f"pruning outcomes on {self._safe_url()}: {e}") from e
        return int(result.rowcount)

    def stream_instances(self) -> set[str]:
        """The stream instances this group has marks for (to notice a new one)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(shard_marks.c.stream)
                    .where(shard_marks.c.group_name == self.group)
                    .distinct()
                ).all()
        except SQLAlchemyError as e:
            raise StoreUnavailableError(f"reading marks on {self._safe_url()}: {e}") from e
        return {str(r.stream) for r in rows}

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.engine.dispose()


def storable(text: str) -> str:
    """``text`` as any text column can hold it: NUL (which PostgreSQL text cannot hold)
    and lone surrogates (which no UTF-8 column can) written as Python escapes,
    ``\\x00`` and ``\\udcff``. For what a dead letter quotes of its message (its
    payload is kept as bytes, exactly as it came)."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _claim_unowned(conn: Connection, group: str) -> None:
    """Give the rows stored before groups were recorded to ``group`` (see ``UNOWNED``).

    Their marks were dropped by migration 0003 (they belong to a stream instance
    nobody recorded); their outcomes keep answering retries by key.
    """
    claimed = {
        table.name: conn.execute(
            sa.update(table).where(table.c.group_name == UNOWNED).values(group_name=group)
        ).rowcount
        for table in (systems, points, outcomes, dead_letters)
    }
    if any(claimed.values()):
        logger.warning(
            "store rows from before groups were recorded now belong to group %s: %s",
            group,
            ", ".join(f"{n} {name}" for name, n in claimed.items()),
        )


def _system(system_id: str, name: str, dimension: Any, units: str, bounds: str | None) -> System:
    """A system from its row; pydantic checks the dimension the database holds."""
    return System(
        system_id=system_id,
        name=name,
        dimension=dimension,
        units=units,
        bounds=Bounds.model_validate_json(bounds) if bounds else None,
    )


def _point(system_id: str, point_id: str, coordinates: str, version: int) -> Point:
    return Point(
        system_id=system_id,
        point_id=point_id,
        coordinates=tuple(json.loads(coordinates)),
        version=version,
    )


class StoreTx:
    """Reads and writes inside one open transaction, on one group's rows; marks and
    outcome sequences of one stream instance."""

    def __init__(self, conn: Connection, sql: BatchSql, *, group: str, stream: str) -> None:
        self._conn = conn
        self._sql = sql
        self._group = group
        self._stream = stream
        self._cursor: Any = conn.connection.cursor()
        """The transaction's own DB-API cursor, for the statements of ``batchsql``."""

    def outcomes_by_keys(self, keys: Sequence[str]) -> dict[str, SavedOutcome]:
        """Stored outcomes of whichever of ``keys`` have one (one query per 500 keys)."""
        found: dict[str, SavedOutcome] = {}
        for chunk in chunks(sorted(set(keys))):
            self._cursor.execute(self._sql.outcomes(len(chunk)), [self._group, *chunk])
            for key, shard, seq, outcome, digest in self._cursor.fetchall():
                found[key] = SavedOutcome(key, shard, seq, outcome, digest)
        return found

    def save_outcomes(self, rows: Sequence[SavedOutcome]) -> None:
        """Store outcomes, 500 to a statement, under this transaction's stream instance."""
        now = time.time()
        g, st = self._group, self._stream
        self._per_rows(
            self._sql.save_outcomes,
            [(g, r.key, st, r.shard, r.stream_seq, r.outcome, r.fingerprint, now) for r in rows],
        )

    def write_points(self, upserts: Sequence[Point], deletes: Sequence[tuple[str, str]]) -> None:
        """Apply a batch's final point states: upsert the living, delete the gone."""
        g = self._group
        self._per_rows(self._sql.delete_points, [(g, s, p) for s, p in deletes])
        self._per_rows(
            self._sql.upsert_points,
            [
                (g, p.system_id, p.point_id, json.dumps(list(p.coordinates)), p.version)
                for p in upserts
            ],
        )

    def _per_rows(self, sql: Callable[[int], str], rows: Sequence[tuple[Any, ...]]) -> None:
        """Run ``sql(n)`` once per chunk of ``rows``, their values flattened in row order."""
        for chunk in chunks(rows):
            self._cursor.execute(sql(len(chunk)), [v for row in chunk for v in row])

    def lock_marks(self, shards: Sequence[int]) -> dict[int, int]:
        """Lock the shards' marks in shard order; each high-water sequence (0 if new,
        as every shard is on a stream instance new to the store)."""
        wanted = sorted(set(shards))
        marks: dict[int, int] = {}
        for chunk in chunks(wanted):
            self._cursor.execute(self._sql.marks(len(chunk)), [self._group, self._stream, *chunk])
            marks.update((int(shard), int(seq)) for shard, seq in self._cursor.fetchall())
        new = [s for s in wanted if s not in marks]
        self._per_rows(self._sql.new_marks, [(self._group, self._stream, s) for s in new])
        marks.update(dict.fromkeys(new, 0))
        return marks

    def set_marks(self, marks: Mapping[int, int]) -> None:
        """Store each shard's new high-water sequence."""
        for chunk in chunks(sorted(marks.items())):
            params = [v for pair in chunk for v in pair] + [self._group, self._stream]
            params += [shard for shard, _ in chunk]
            self._cursor.execute(self._sql.set_marks(len(chunk)), params)

    def claim_attempts(
        self, his: Mapping[int, int], *, owner: str, single: bool
    ) -> dict[int, Attempts]:
        """Record that ``owner`` applies each shard up to ``his[shard]`` (``single``: one
        message alone); a claim of another process found uncleared is a death."""
        found: dict[int, Attempts] = {}
        rows = [(self._group, self._stream, s, owner, hi, int(single)) for s, hi in his.items()]
        for chunk in chunks(sorted(rows, key=lambda r: r[2])):
            self._cursor.execute(
                self._sql.claim_attempts(len(chunk)), [v for row in chunk for v in row]
            )
            for shard, deaths, suspect, dead_single in self._cursor.fetchall():
                found[int(shard)] = Attempts(int(deaths), int(suspect), int(dead_single))
        return found

    def commit_unflushed(self) -> None:
        """PostgreSQL: this transaction's commit does not wait for its WAL flush."""
        self._cursor.execute("SET LOCAL synchronous_commit = off")

    def clear_attempts(self, shards: Sequence[int], *, owner: str, reset: bool) -> None:
        """Clear ``owner``'s claims of ``shards`` (their batch commits with this
        transaction); ``reset``: also forget dead attempts the marks have passed."""
        for chunk in chunks(sorted(set(shards))):
            self._cursor.execute(
                self._sql.clear_attempts(len(chunk)), [self._group, self._stream, owner, *chunk]
            )
            if reset:
                self._cursor.execute(
                    self._sql.reset_attempts(len(chunk)), [self._group, self._stream, *chunk]
                )

    def outcome_by_seq(self, shard: int, seq: int) -> str | None:
        row = self._conn.execute(
            sa.select(outcomes.c.outcome).where(
                outcomes.c.group_name == self._group,
                outcomes.c.stream == self._stream,
                outcomes.c.shard == shard,
                outcomes.c.stream_seq == seq,
            )
        ).first()
        return None if row is None else str(row.outcome)

    def system(self, system_id: str) -> System | None:
        self._cursor.execute(self._sql.system, (self._group, system_id))
        row = self._cursor.fetchone()
        return None if row is None else _system(*row)

    def put_system(self, system: System, *, shard: int) -> None:
        self._conn.execute(
            sa.insert(systems).values(
                group_name=self._group,
                system_id=system.system_id,
                shard=shard,
                name=system.name,
                dimension=system.dimension,
                units=system.units,
                bounds=system.bounds.model_dump_json() if system.bounds else None,
            )
        )

    def delete_system(self, system_id: str) -> int:
        """Delete a system and its points; return how many points went."""
        gone = self._conn.execute(
            sa.delete(points).where(
                points.c.group_name == self._group, points.c.system_id == system_id
            )
        )
        self._conn.execute(
            sa.delete(systems).where(
                systems.c.group_name == self._group, systems.c.system_id == system_id
            )
        )
        return int(gone.rowcount)

    def point(self, system_id: str, point_id: str) -> Point | None:
        self._cursor.execute(self._sql.point, (self._group, system_id, point_id))
        row = self._cursor.fetchone()
        return None if row is None else _point(*row)

    def list_points(self, system_id: str, *, after: str | None, limit: int) -> list[Point]:
        query = sa.select(
            points.c.system_id, points.c.point_id, points.c.coordinates, points.c.version
        ).where(points.c.group_name == self._group, points.c.system_id == system_id)
        if after is not None:
            query = query.where(points.c.point_id > after)
        rows = self._conn.execute(query.order_by(points.c.point_id).limit(limit)).all()
        return [_point(*r) for r in rows]

    def dead_letter(self, letter: DeadLetter) -> None:
        """Keep a message for inspection (once per stream instance, sequence and subject).

        Whatever the message holds, the row can be stored: the subject and the reason
        (which may quote the input) go through ``storable``, the headers as ASCII
        JSON, the payload as bytes.
        """
        subject = storable(letter.subject)
        seen = self._conn.execute(
            sa.select(dead_letters.c.id).where(
                dead_letters.c.group_name == self._group,
                dead_letters.c.stream == self._stream,
                dead_letters.c.stream_seq == letter.stream_seq,
                dead_letters.c.subject == subject,
            )
        ).first()
        if seen is not None:
            return
        self._conn.execute(
            sa.insert(dead_letters).values(
                group_name=self._group,
                stream=self._stream,
                stream_seq=letter.stream_seq,
                subject=subject,
                reason=storable(letter.reason),
                headers=json.dumps(letter.headers),  # ASCII JSON: NUL as \u0000
                data=letter.data,
                consumer=storable(letter.consumer),
                created_at=time.time(),
            )
        )
