"""Each shard's batch in flight, so a worker that dies applying it is counted.

A row per shard (of a group and stream instance) that a batch is being applied
for: the process applying it (``owner``, cleared in the batch's own
transaction), the highest stream sequence of that attempt and whether it is one
message alone; and what the dead attempts before it tell: how many died
(``deaths``) since the shard's mark last passed the highest sequence they held
(``suspect``), and the one message the last of them was applying alone
(``dead_single``, 0 if none). See ``coordshard_service.attempts``.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shard_attempts",
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


def downgrade() -> None:
    op.drop_table("shard_attempts")
