"""Scheduled searches: the actsearch_schedules table and searches.schedule_id.

The new table is created plainly; the link column on actsearch_searches goes
through batch mode because SQLite needs a table rebuild to add a foreign key
(PostgreSQL gets plain ALTER TABLE statements). Old searches keep NULL.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "actsearch_schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column("template", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_search_id", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_schedules")),
    )
    op.create_index(op.f("ix_actsearch_schedules_owner"), "actsearch_schedules", ["owner"])
    op.create_index(
        "ix_actsearch_schedules_state_next_run_at", "actsearch_schedules", ["state", "next_run_at"]
    )
    with op.batch_alter_table("actsearch_searches") as batch:
        batch.add_column(sa.Column("schedule_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_actsearch_searches_schedule_id_actsearch_schedules"),
            "actsearch_schedules", ["schedule_id"], ["id"], ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_actsearch_searches_schedule_id"), ["schedule_id"])


def downgrade() -> None:
    with op.batch_alter_table("actsearch_searches") as batch:
        batch.drop_index(op.f("ix_actsearch_searches_schedule_id"))
        batch.drop_constraint(
            op.f("fk_actsearch_searches_schedule_id_actsearch_schedules"), type_="foreignkey"
        )
        batch.drop_column("schedule_id")
    op.drop_index("ix_actsearch_schedules_state_next_run_at", table_name="actsearch_schedules")
    op.drop_index(op.f("ix_actsearch_schedules_owner"), table_name="actsearch_schedules")
    op.drop_table("actsearch_schedules")
