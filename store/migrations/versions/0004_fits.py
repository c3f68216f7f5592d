"""Curve analysis results: the actsearch_fits table (closed forms, lines, distilled curves).

A new table only; existing rows are untouched (trials finished before it have no fits).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "actsearch_fits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("unit", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("rmse", sa.Float(), nullable=True),
        sa.Column("max_error", sa.Float(), nullable=True),
        sa.Column("r2", sa.Float(), nullable=True),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"], ["actsearch_trials.id"],
            name=op.f("fk_actsearch_fits_trial_id_actsearch_trials"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_fits")),
    )
    op.create_index(op.f("ix_actsearch_fits_trial_id"), "actsearch_fits", ["trial_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_actsearch_fits_trial_id"), table_name="actsearch_fits")
    op.drop_table("actsearch_fits")
