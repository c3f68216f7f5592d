"""Initial actsearch_* tables (artifacts, datasets, searches, populations, trials,
epoch metrics, pre-activation statistics, curves, weights).

Written out explicitly with portable types (SQLite and PostgreSQL); it creates
only actsearch_* tables, never Optuna's.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 17:10:21.504053
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "actsearch_artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_artifacts")),
        sa.UniqueConstraint("sha256", "kind", name=op.f("uq_actsearch_artifacts_sha256_kind")),
    )
    op.create_table(
        "actsearch_datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("n_rows", sa.BigInteger(), nullable=False),
        sa.Column("n_features", sa.Integer(), nullable=False),
        sa.Column("n_classes", sa.Integer(), nullable=True),
        sa.Column("input_shape", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("schema", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("artifact_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["actsearch_artifacts.id"],
            name=op.f("fk_actsearch_datasets_artifact_id_actsearch_artifacts"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_datasets")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_actsearch_datasets_name_version")),
    )
    op.create_index(
        op.f("ix_actsearch_datasets_artifact_id"), "actsearch_datasets", ["artifact_id"]
    )
    op.create_index(
        op.f("ix_actsearch_datasets_content_hash"), "actsearch_datasets", ["content_hash"]
    )
    op.create_index(op.f("ix_actsearch_datasets_owner"), "actsearch_datasets", ["owner"])
    op.create_table(
        "actsearch_searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("study_name", sa.String(length=200), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("best", sa.JSON(none_as_null=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["actsearch_datasets.id"],
            name=op.f("fk_actsearch_searches_dataset_id_actsearch_datasets"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_searches")),
        sa.UniqueConstraint("study_name", name=op.f("uq_actsearch_searches_study_name")),
    )
    op.create_index(op.f("ix_actsearch_searches_dataset_id"), "actsearch_searches", ["dataset_id"])
    op.create_index(op.f("ix_actsearch_searches_owner"), "actsearch_searches", ["owner"])
    op.create_index(op.f("ix_actsearch_searches_state"), "actsearch_searches", ["state"])
    op.create_table(
        "actsearch_populations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("structural", sa.JSON(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.Column("task_id", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["search_id"],
            ["actsearch_searches.id"],
            name=op.f("fk_actsearch_populations_search_id_actsearch_searches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_populations")),
    )
    op.create_index(
        op.f("ix_actsearch_populations_search_id"), "actsearch_populations", ["search_id"]
    )
    op.create_index(
        "ix_actsearch_populations_state_heartbeat_at",
        "actsearch_populations",
        ["state", "heartbeat_at"],
    )
    op.create_table(
        "actsearch_trials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("population_id", sa.Integer(), nullable=True),
        sa.Column("study_name", sa.String(length=200), nullable=False),
        sa.Column("trial_number", sa.Integer(), nullable=True),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("family", sa.String(length=64), nullable=False),
        sa.Column("family_params", sa.JSON(), nullable=False),
        sa.Column("hparams", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("best_value", sa.Float(), nullable=True),
        sa.Column("test_value", sa.Float(), nullable=True),
        sa.Column("n_params", sa.BigInteger(), nullable=True),
        sa.Column("flops", sa.BigInteger(), nullable=True),
        sa.Column("device", sa.String(length=64), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_trial_number", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["population_id"],
            ["actsearch_populations.id"],
            name=op.f("fk_actsearch_trials_population_id_actsearch_populations"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["search_id"],
            ["actsearch_searches.id"],
            name=op.f("fk_actsearch_trials_search_id_actsearch_searches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_trials")),
        sa.UniqueConstraint(
            "study_name",
            "trial_number",
            "phase",
            "seed",
            name=op.f("uq_actsearch_trials_study_name_trial_number_phase_seed"),
        ),
    )
    op.create_index(op.f("ix_actsearch_trials_family"), "actsearch_trials", ["family"])
    op.create_index(
        op.f("ix_actsearch_trials_population_id"), "actsearch_trials", ["population_id"]
    )
    op.create_index(op.f("ix_actsearch_trials_search_id"), "actsearch_trials", ["search_id"])
    op.create_index(op.f("ix_actsearch_trials_state"), "actsearch_trials", ["state"])
    op.create_index(
        "ix_actsearch_trials_study_name_trial_number",
        "actsearch_trials",
        ["study_name", "trial_number"],
    )
    op.create_table(
        "actsearch_curves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("x", sa.LargeBinary(), nullable=False),
        sa.Column("y", sa.LargeBinary(), nullable=False),
        sa.Column("y_shape", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["actsearch_trials.id"],
            name=op.f("fk_actsearch_curves_trial_id_actsearch_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_curves")),
        sa.UniqueConstraint(
            "trial_id", "layer", "epoch", name=op.f("uq_actsearch_curves_trial_id_layer_epoch")
        ),
    )
    op.create_table(
        "actsearch_epoch_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Float(), nullable=True),
        sa.Column("val_loss", sa.Float(), nullable=True),
        sa.Column("val_metric", sa.Float(), nullable=True),
        sa.Column("elapsed_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["actsearch_trials.id"],
            name=op.f("fk_actsearch_epoch_metrics_trial_id_actsearch_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_epoch_metrics")),
        sa.UniqueConstraint(
            "trial_id", "epoch", name=op.f("uq_actsearch_epoch_metrics_trial_id_epoch")
        ),
    )
    op.create_table(
        "actsearch_preact_stats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("min", sa.Float(), nullable=True),
        sa.Column("max", sa.Float(), nullable=True),
        sa.Column("mean", sa.Float(), nullable=True),
        sa.Column("std", sa.Float(), nullable=True),
        sa.Column("quantiles", sa.JSON(), nullable=False),
        sa.Column("hist", sa.LargeBinary(), nullable=False),
        sa.Column("edges", sa.LargeBinary(), nullable=False),
        sa.Column("dead_fraction", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["actsearch_trials.id"],
            name=op.f("fk_actsearch_preact_stats_trial_id_actsearch_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_preact_stats")),
        sa.UniqueConstraint(
            "trial_id",
            "layer",
            "epoch",
            name=op.f("uq_actsearch_preact_stats_trial_id_layer_epoch"),
        ),
    )
    op.create_table(
        "actsearch_weights",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("artifact_id", sa.Integer(), nullable=False),
        sa.Column("scaler", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("label_map", sa.JSON(none_as_null=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["actsearch_artifacts.id"],
            name=op.f("fk_actsearch_weights_artifact_id_actsearch_artifacts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["actsearch_trials.id"],
            name=op.f("fk_actsearch_weights_trial_id_actsearch_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actsearch_weights")),
        sa.UniqueConstraint("trial_id", name=op.f("uq_actsearch_weights_trial_id")),
    )
    op.create_index(op.f("ix_actsearch_weights_artifact_id"), "actsearch_weights", ["artifact_id"])


def downgrade() -> None:
    # Children first; their indices go with them. Optuna's tables are not ours to drop.
    for table in (
        "actsearch_weights",
        "actsearch_preact_stats",
        "actsearch_epoch_metrics",
        "actsearch_curves",
        "actsearch_trials",
        "actsearch_populations",
        "actsearch_searches",
        "actsearch_datasets",
        "actsearch_artifacts",
    ):
        op.drop_table(table)
