"""The store's schema history as Alembic migrations, shipped inside the package.

``upgrade(engine)`` runs them programmatically (no alembic.ini needed), so a
worker brings a fresh or older database to the current schema on start. Two
workers starting together are serialised: on SQLite by the write lock the
migration transaction takes up front (BEGIN IMMEDIATE), on PostgreSQL by a
transaction-scoped advisory lock taken before Alembic looks at the schema
(without it both see no ``alembic_version`` and both create it; one fails).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection, Engine

__all__ = ["HEAD", "upgrade"]

HEAD = "0003"
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
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        if then is not None:
            then(connection)
