"""The ``actsearch_*`` tables (SQLAlchemy 2.0 typed declarative).

Optuna owns trial state in its own tables in the same database; these tables add
what Optuna lacks and point at its study by name and its trial by number. Every
table name starts with ``actsearch_`` so that our Alembic migrations (and
autogenerate) can filter on the prefix and never touch Optuna's tables.

Types are portable (SQLite and PostgreSQL): ``sqlalchemy.JSON`` for readable
structures, ``LargeBinary`` for float32 arrays and blobs, timezone-aware UTC
datetimes through :class:`UTCDateTime`. Allowed state values are kept as tuples
here and checked by ``store.repo`` (not as database CHECK constraints, so a new
state does not need a table rebuild on SQLite).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TABLE_PREFIX = "actsearch_"
VERSION_TABLE = "actsearch_alembic_version"

ARTIFACT_KINDS = ("dataset", "weights")
DATASET_SOURCES = ("builtin", "upload")
# "interrupted": its process stopped (Ctrl-C, shutdown, crash) and it can be resumed; neither
# active (it trains nothing, and does not count against the owner's limit) nor terminal.
SEARCH_STATES = ("pending", "running", "finalizing", "interrupted", "complete", "failed",
                 "cancelled")
SEARCH_TERMINAL_STATES = ("complete", "failed", "cancelled")
POPULATION_STATES = ("pending", "running", "complete", "failed", "cancelled")
# A population in one of these states will never train again (cancelled: its
# search was cancelled or ran out of time before a worker claimed it).
POPULATION_FINISHED_STATES = ("complete", "failed", "cancelled")
# control / control_finalist: the equal-compute ReLU control arm (``control: relu``), run
# after the search's leaderboard is decided (its trials live in the study "<name>-control").
PHASES = ("search", "finalist", "control", "control_finalist")
TRIAL_STATES = ("running", "complete", "pruned", "failed")
# A complete search's curve analysis (fits, distillation: search.analysis.run), off the
# critical path; NULL where there is nothing to analyse (or it finished before 0006).
ANALYSIS_STATES = ("pending", "running", "done", "failed")

# Deterministic constraint names: Alembic batch mode (SQLite) and PostgreSQL both
# need names to drop or alter a constraint in a later migration.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (the only zone stored)."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A datetime stored in UTC and always returned timezone-aware.

    SQLite keeps no zone and hands back naive values; PostgreSQL converts to the
    session's zone. Normalising here makes both backends return aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _json_nullable() -> JSON:
    # Python None -> SQL NULL (not JSON 'null'), so `IS NULL` filters work.
    return JSON(none_as_null=True)


class Base(DeclarativeBase):
    """Declarative base for every ``actsearch_*`` table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created_at() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, server_default=func.now(), nullable=False)


class Artifact(Base):
    """A blob (dataset file, trained weights): in the database or in a shared directory."""

    __tablename__ = "actsearch_artifacts"
    __table_args__ = (UniqueConstraint("sha256", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _created_at()


ArtifactRow = Artifact


class DatasetRow(Base):
    """A named, versioned dataset; the content lives in an artifact.

    Names are per owner (0005): two owners may each have a ``mydata`` with its own
    versions, and neither learns that the other's exists.
    """

    __tablename__ = "actsearch_datasets"
    __table_args__ = (UniqueConstraint("owner", "name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    content_hash: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    task: Mapped[str] = mapped_column(String(32), nullable=False)
    n_rows: Mapped[int] = mapped_column(BigInteger, nullable=False)
    n_features: Mapped[int] = mapped_column(Integer, nullable=False)
    n_classes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    input_shape: Mapped[Any | None] = mapped_column(_json_nullable(), nullable=True)
    schema: Mapped[Any | None] = mapped_column(_json_nullable(), nullable=True)
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_artifacts.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    created_at: Mapped[datetime] = _created_at()


class SearchRow(Base):
    """One search request: its spec, its Optuna study name and its lifecycle state."""

    __tablename__ = "actsearch_searches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    study_name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_datasets.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    spec: Mapped[Any] = mapped_column(JSON, nullable=False)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    best: Mapped[Any | None] = mapped_column(_json_nullable(), nullable=True)
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Added in 0003: the schedule that created this search (NULL once it is deleted).
    schedule_id: Mapped[int | None] = mapped_column(
        ForeignKey("actsearch_schedules.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # Added in 0006: fits and distillation run after the leaderboard is stored
    # (pending -> running -> done | failed; None: finished before 0006, or no analysis).
    analysis_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    analysis_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class PopulationRow(Base):
    """K same-shape candidates of one family trained together (one task)."""

    __tablename__ = "actsearch_populations"
    __table_args__ = (
        Index("ix_actsearch_populations_state_heartbeat_at", "state", "heartbeat_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_searches.id", ondelete="CASCADE"), nullable=False, index=True
    )
    family: Mapped[str] = mapped_column(String(64), nullable=False)
    structural: Mapped[Any] = mapped_column(JSON, nullable=False)
    k: Mapped[int] = mapped_column(Integer, nullable=False)
    phase: Mapped[str] = mapped_column(String(16), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Added beyond INTERFACES.md: the broker's task id (revoke on cancel, reconciler)
    # and the failure reason.
    task_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = _created_at()
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Added in 0002 for the distributed mode. trial_numbers: the Optuna trials a
    # worker asked for this population, stored right after asking so the
    # reconciler can fail them if the worker dies. source_trial_number: the
    # search trial a finalist population re-trains. retry_of: the population
    # whose lost attempt this one repeats (no foreign key: history only).
    trial_numbers: Mapped[Any | None] = mapped_column(_json_nullable(), nullable=True)
    source_trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    retry_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Added in 0006. families: one per candidate slot of a mixed population (``family``
    # is then "mixed"); source_trial_numbers: per slot, what a mixed finalist population
    # re-trains; epochs: a raced rung's epochs (None: the spec's); rung: its race index.
    families: Mapped[Any | None] = mapped_column(_json_nullable(), nullable=True)
    source_trial_numbers: Mapped[Any | None] = mapped_column(_json_nullable(), nullable=True)
    epochs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rung: Mapped[int | None] = mapped_column(Integer, nullable=True)

    def slot_families(self) -> list[str]:
        """The family of each candidate slot (a one-family population repeats it)."""
        return list(self.families) if self.families else [self.family] * self.k


class TrialRow(Base):
    """What Optuna lacks about one trial (or one finalist re-run on a seed)."""

    __tablename__ = "actsearch_trials"
    __table_args__ = (
        UniqueConstraint("study_name", "trial_number", "phase", "seed"),
        Index("ix_actsearch_trials_study_name_trial_number", "study_name", "trial_number"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    search_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_searches.id", ondelete="CASCADE"), nullable=False, index=True
    )
    population_id: Mapped[int | None] = mapped_column(
        ForeignKey("actsearch_populations.id", ondelete="SET NULL"), nullable=True, index=True
    )
    study_name: Mapped[str] = mapped_column(String(200), nullable=False)
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    phase: Mapped[str] = mapped_column(String(16), nullable=False)
    family: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    family_params: Mapped[Any] = mapped_column(JSON, nullable=False)
    hparams: Mapped[Any] = mapped_column(JSON, nullable=False)
    seed: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    best_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    test_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    flops: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    device: Mapped[str | None] = mapped_column(String(64), nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    source_trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)


class EpochMetricRow(Base):
    """One epoch of one trial (the learning curve)."""

    __tablename__ = "actsearch_epoch_metrics"
    __table_args__ = (UniqueConstraint("trial_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_trials.id", ondelete="CASCADE"), nullable=False
    )
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_metric: Mapped[float | None] = mapped_column(Float, nullable=True)
    elapsed_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class PreactStatRow(Base):
    """Pre-activation statistics of one layer at one recorded epoch."""

    __tablename__ = "actsearch_preact_stats"
    # Added: unique (trial, layer, epoch); it also serves as the trial_id index.
    __table_args__ = (UniqueConstraint("trial_id", "layer", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_trials.id", ondelete="CASCADE"), nullable=False
    )
    layer: Mapped[int] = mapped_column(Integer, nullable=False)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    min: Mapped[float | None] = mapped_column(Float, nullable=True)
    max: Mapped[float | None] = mapped_column(Float, nullable=True)
    mean: Mapped[float | None] = mapped_column(Float, nullable=True)
    std: Mapped[float | None] = mapped_column(Float, nullable=True)
    quantiles: Mapped[Any] = mapped_column(JSON, nullable=False)
    hist: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    edges: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    dead_fraction: Mapped[float | None] = mapped_column(Float, nullable=True)


class CurveRow(Base):
    """A learned activation curve: one layer, one recorded epoch, every unit."""

    __tablename__ = "actsearch_curves"
    # Added: unique (trial, layer, epoch); it also serves as the trial_id index.
    __table_args__ = (UniqueConstraint("trial_id", "layer", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_trials.id", ondelete="CASCADE"), nullable=False
    )
    layer: Mapped[int] = mapped_column(Integer, nullable=False)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    params: Mapped[Any] = mapped_column(JSON, nullable=False)
    x: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    y: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    y_shape: Mapped[Any] = mapped_column(JSON, nullable=False)


FIT_KINDS = ("closed_form", "linear", "distilled", "network")  # network: layer -1, the whole net


class FitRow(Base):
    """One analysis result of a learned curve: a closed form, the line, or a distilled copy."""

    __tablename__ = "actsearch_fits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_trials.id", ondelete="CASCADE"), nullable=False, index=True
    )
    layer: Mapped[int] = mapped_column(Integer, nullable=False)
    epoch: Mapped[int] = mapped_column(Integer, nullable=False)
    unit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    family: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[Any] = mapped_column(JSON, nullable=False)
    rmse: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_error: Mapped[float | None] = mapped_column(Float, nullable=True)
    r2: Mapped[float | None] = mapped_column(Float, nullable=True)
    extra: Mapped[Any] = mapped_column(JSON, nullable=False)


class WeightsRow(Base):
    """Trained weights of one trial (an npz artifact) with its scaler and label map."""

    __tablename__ = "actsearch_weights"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_trials.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    artifact_id: Mapped[int] = mapped_column(
        ForeignKey("actsearch_artifacts.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    scaler: Mapped[Any | None] = mapped_column(_json_nullable(), nullable=True)
    label_map: Mapped[Any | None] = mapped_column(_json_nullable(), nullable=True)


SCHEDULE_STATES = ("active", "paused")
SCHEDULE_KINDS = ("rerun", "add_trials")


class ScheduleRow(Base):
    """A recurring search: a cron expression and a template, fired by the scheduler.

    Everything the scheduler needs is here (``next_run_at`` above all), so a
    restarted scheduler carries on where the last one stopped. ``next_run_at`` is
    also the claim token: a firing is taken with ``UPDATE ... WHERE id = ? AND
    next_run_at = <old>``, so two schedulers never fire one schedule twice.
    ``last_search_id`` is history only (no foreign key: searches point here).
    """

    __tablename__ = "actsearch_schedules"
    __table_args__ = (
        Index("ix_actsearch_schedules_state_next_run_at", "state", "next_run_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    cron: Mapped[str] = mapped_column(String(200), nullable=False)
    timezone: Mapped[str] = mapped_column(
        String(64), nullable=False, default="UTC", server_default="UTC"
    )
    template: Mapped[Any] = mapped_column(JSON, nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_search_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    created_at: Mapped[datetime] = _created_at()


class ApiKeyRow(Base):
    """An API key: only its SHA-256 is stored; the raw key is shown once, at creation.

    ``prefix`` (the first 8 characters) lets people tell keys apart in listings
    without revealing them. A revoked key keeps its row (``revoked_at`` set) so
    listings show who had access and when it ended.
    """

    __tablename__ = "actsearch_api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), nullable=False, index=True)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    admin: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
