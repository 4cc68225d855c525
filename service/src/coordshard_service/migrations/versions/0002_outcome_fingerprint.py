"""Outcomes remember a fingerprint of their command, to refuse a key reused for another.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: outcomes stored before this revision have none and are not checked.
    op.add_column("outcomes", sa.Column("fingerprint", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outcomes") as batch:
        batch.drop_column("fingerprint")
