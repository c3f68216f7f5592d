"""API keys: the actsearch_api_keys table (owner, SHA-256 of the key, admin, revocation).

Dataset names become per-owner namespaces: the unique (name, version) becomes
(owner, name, version), through batch mode (SQLite rebuilds the table). Existing
rows are untouched: objects created before auth was turned on keep owner NULL,
so only an admin (or auth off) sees them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "actsearch_api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_actsearch_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_actsearch_api_keys_owner"), "actsearch_api_keys", ["owner"])
    with op.batch_alter_table("actsearch_datasets") as batch:
        batch.drop_constraint("uq_actsearch_datasets_name_version", type_="unique")
        batch.create_unique_constraint(
            "uq_actsearch_datasets_owner_name_version", ["owner", "name", "version"]
        )


def downgrade() -> None:
    # Fails (IntegrityError) if two owners now share a name and version: rename one first.
    with op.batch_alter_table("actsearch_datasets") as batch:
        batch.drop_constraint("uq_actsearch_datasets_owner_name_version", type_="unique")
        batch.create_unique_constraint("uq_actsearch_datasets_name_version", ["name", "version"])
    op.drop_index(op.f("ix_actsearch_api_keys_owner"), table_name="actsearch_api_keys")
    op.drop_table("actsearch_api_keys")
