"""The store's schema history as Alembic migrations, shipped inside the package.

``upgrade(engine)`` runs them programmatically (no alembic.ini needed), so a
worker brings a fresh or older database to the current schema on start. Two
workers starting together are serialised: on SQLite by the write lock the
migration transaction takes up front (BEGIN IMMEDIATE), on PostgreSQL by a
transaction-scoped advisory lock taken before Alembic looks at the schema
(without it both see no ``alembic_version`` and both create it; one fails).

A store already at ``HEAD`` (every start but a group's first) is recognised by
reading ``alembic_version`` under that same lock, and Alembic is not even
imported: importing it (with Mako and Pygments) and loading the scripts cost a
worker ~0.3 s of its start (docs/benchmarks.md, spawn → Ready).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

__all__ = ["HEAD", "current", "upgrade"]

HEAD = "0004"
"""The newest revision."""
MIGRATION_LOCK = 0x636F6F7264  # "coord"
"""PostgreSQL advisory lock key held by a migrating worker until it commits."""


def upgrade(
    engine: Engine,
    *,
    revision: str = "head",
    then: Callable[[Connection], None] | None = None,
) -> None:
    """Apply every migration up to ``revision`` on ``engine``'s database; then run
    ``then`` (if given) in the same transaction, still holding the migration lock."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        if not (revision in ("head", HEAD) and current(connection) == HEAD):
            _alembic_upgrade(connection, revision)
        if then is not None:
            then(connection)


def current(connection: Connection) -> str | None:
    """The revision the database is at; None before the first migration."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return str(version) if version is not None else None


def _alembic_upgrade(connection: Connection, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
