"""Rows belong to a group, sequence bookkeeping to a group and a stream instance.

One database may then hold many groups (the same system ids, shards and keys in
each), and a stream re-created under a kept store starts with no marks instead
of being answered from the old stream's outcomes.

Existing rows get the group ``''`` (``store.UNOWNED``); the worker that runs
this migration claims them for its group in the same transaction
(``Store.migrate``). The old marks are dropped: nothing recorded which stream
instance they counted, and a delivery of that instance cannot arrive under a
new one. Old outcomes keep their keys (under the stream ``''``, which no
instance has), so retries by key are still answered from them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_KEYS = {
    "systems": ["group_name", "system_id"],
    "points": ["group_name", "system_id", "point_id"],
    "outcomes": ["group_name", "key"],
}
"""The new primary key of each table that gets one."""


def _old(table: str) -> sa.Table:
    """A table as 0002 left it, but with no primary key: on SQLite a batch copies the
    table, and the old key, reflected, would fight the new one."""
    columns: dict[str, list[SchemaItem]] = {
        "systems": [
            sa.Column("system_id", sa.String(128), nullable=False),
            sa.Column("shard", sa.Integer, nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("dimension", sa.Integer, nullable=False),
            sa.Column("units", sa.String(32), nullable=False),
            sa.Column("bounds", sa.Text, nullable=True),
            sa.Index("ix_systems_shard", "shard"),
        ],
        "points": [
            sa.Column("system_id", sa.String(128), nullable=False),
            sa.Column("point_id", sa.String(128), nullable=False),
            sa.Column("coordinates", sa.Text, nullable=False),
            sa.Column("version", sa.Integer, nullable=False),
        ],
        "outcomes": [
            sa.Column("key", sa.String(200), nullable=False),
            sa.Column("shard", sa.Integer, nullable=False),
            sa.Column("stream_seq", sa.BigInteger, nullable=False),
            sa.Column("outcome", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("fingerprint", sa.String(32), nullable=True),
        ],
    }
    return sa.Table(table, sa.MetaData(), *columns[table])


def _group() -> sa.Column[str]:
    return sa.Column("group_name", sa.String(128), nullable=False, server_default="")


def _stream() -> sa.Column[str]:
    return sa.Column("stream", sa.String(300), nullable=False, server_default="")


def _postgres() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def upgrade() -> None:
    # The marks are dropped (see above), so their table is simply made anew.
    op.drop_table("shard_marks")
    op.create_table(
        "shard_marks",
        sa.Column("group_name", sa.String(128), primary_key=True),
        sa.Column("stream", sa.String(300), primary_key=True),
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("high_seq", sa.BigInteger, nullable=False),
    )
    op.drop_index("ix_outcomes_shard_seq", table_name="outcomes")
    # On SQLite each batch copies its table (SQLite cannot change a primary key in
    # place); on PostgreSQL it is plain ALTER TABLE statements.
    for table, key in _KEYS.items():
        with op.batch_alter_table(table, copy_from=_old(table)) as batch:
            batch.add_column(_group())
            if table == "outcomes":
                batch.add_column(_stream())
            if _postgres():
                batch.drop_constraint(f"{table}_pkey", type_="primary")
            batch.create_primary_key(f"{table}_pkey", key)
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(_group())
        batch.add_column(_stream())
        batch.create_index("ix_dead_letters_group_name", ["group_name"])
    op.create_index(
        "ix_outcomes_stream_seq", "outcomes", ["group_name", "stream", "shard", "stream_seq"]
    )
    # The defaults only filled the existing rows: every new row names its own.
    for table in ("systems", "points", "outcomes", "dead_letters"):
        with op.batch_alter_table(table) as batch:
            batch.alter_column("group_name", server_default=None)
            if table in ("outcomes", "dead_letters"):
                batch.alter_column("stream", server_default=None)


def downgrade() -> None:
    # Only a store that holds one group can go back; its marks start afresh.
    op.drop_index("ix_outcomes_stream_seq", table_name="outcomes")
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_index("ix_dead_letters_group_name")
        batch.drop_column("stream")
        batch.drop_column("group_name")
    for table, key in _KEYS.items():
        with op.batch_alter_table(table) as batch:
            if _postgres():
                batch.drop_constraint(f"{table}_pkey", type_="primary")
            batch.create_primary_key(f"{table}_pkey", key[1:])
            if table == "outcomes":
                batch.drop_column("stream")
            batch.drop_column("group_name")
    op.create_index("ix_outcomes_shard_seq", "outcomes", ["shard", "stream_seq"])
    op.drop_table("shard_marks")
    op.create_table(
        "shard_marks",
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("high_seq", sa.BigInteger, nullable=False),
    )
