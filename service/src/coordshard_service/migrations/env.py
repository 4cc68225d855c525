"""Alembic environment: runs on the connection ``upgrade()`` hands over."""

from __future__ import annotations

from alembic import context

from coordshard_service.store import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
