"""Initial schema: systems, points, shard marks, outcomes, dead letters.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "systems",
        sa.Column("system_id", sa.String(128), primary_key=True),
        sa.Column("shard", sa.Integer, nullable=False, index=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("units", sa.String(32), nullable=False),
        sa.Column("bounds", sa.Text, nullable=True),
    )
    op.create_table(
        "points",
        sa.Column("system_id", sa.String(128), primary_key=True),
        sa.Column("point_id", sa.String(128), primary_key=True),
        sa.Column("coordinates", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "shard_marks",
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("high_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "outcomes",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_outcomes_shard_seq", "outcomes", ["shard", "stream_seq"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream_seq", sa.BigInteger, nullable=False, index=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("dead_letters", "outcomes", "shard_marks", "points", "systems"):
        op.drop_table(table)
