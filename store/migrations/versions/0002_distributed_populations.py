"""Populations for the distributed mode: asked trial numbers, finalist source, retry link.

Additive only (three nullable columns on actsearch_populations), so it runs as a
plain ALTER TABLE on both SQLite and PostgreSQL and old rows stay valid.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("actsearch_populations") as batch:
        batch.add_column(sa.Column("trial_numbers", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("source_trial_number", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("actsearch_populations") as batch:
        batch.drop_column("retry_of")
        batch.drop_column("source_trial_number")
        batch.drop_column("trial_numbers")
