"""The store's schema history as Alembic migrations, shipped inside the package.

``upgrade(engine)`` runs them programmatically (no alembic.ini needed), so a
worker brings a fresh or older database to the current schema on start. Two
workers starting together are safe on PostgreSQL (Alembic's version table
update is transactional) and on SQLite (the file lock serialises them).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

__all__ = ["HEAD", "upgrade"]

HEAD = "0002"
"""The newest revision."""


def upgrade(engine: Engine, *, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` on ``engine``'s database."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
