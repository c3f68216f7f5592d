"""Settings from environment variables (prefix ``ACTSEARCH_``), shared by every entry point."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(os.environ.get("ACTSEARCH_HOME", Path.home() / ".actsearch"))


class LimitSettings(BaseModel):
    """Caps that keep one request from exhausting a worker."""

    max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_rows: int = Field(default=2_000_000, gt=0)
    max_features: int = Field(default=100_000, gt=0)
    max_trials: int = Field(default=5_000, gt=0)
    max_epochs: int = Field(default=1_000, gt=0)
    max_layers: int = Field(default=16, gt=0)
    max_width: int = Field(default=8_192, gt=0)
    # JSON (non-upload) request bodies; uploads have max_upload_bytes (api/body_limit.py).
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Per-owner limits, enforced by each API process (see api/limits.py). The defaults
    # leave room for 5 owners submitting 20 searches at once plus 200 reads/s in all.
    requests_per_second_per_owner: float = Field(default=100.0, gt=0)
    request_burst_per_owner: int = Field(default=200, ge=1)
    max_active_searches_per_owner: int = Field(default=25, ge=1)
    # A schedule may not fire more often than this (a cron of every second would
    # queue a search per second for ever).
    min_schedule_interval_s: int = Field(default=60, ge=0)
    # Schedules one owner may hold (each firing is a search, so they add up).
    max_schedules_per_owner: int = Field(default=50, ge=1)
    # Slow operations (uploads, built-in generation, exports, importance) one owner may
    # have in flight at once; more get 429. They run on their own thread pool of
    # slow_operation_threads threads, so reads keep the request threads to themselves.
    max_slow_operations_per_owner: int = Field(default=4, ge=1)
    slow_operation_threads: int = Field(default=8, ge=1)
    # Processes that generate built-in datasets (numpy-heavy, and the generator's memory
    # is freed with the process's arrays rather than staying in the API's heap).
    generation_processes: int = Field(default=2, ge=1)


class AuthSettings(BaseModel):
    """API-key authentication (``ACTSEARCH_AUTH__ENABLED``).

    ``enabled=None`` picks by mode: on in distributed mode (a shared service, a
    broker is configured), off in embedded mode (one user on one machine).
    """

    enabled: bool | None = None


class TrainingSettings(BaseModel):
    """Guards on the processes that train (embedded children and worker children).

    ``ACTSEARCH_TRAINING__POPULATION_TIME_LIMIT_S``: a population still training after
    this many seconds is stopped and failed with a "time limit" error (the search goes
    on); None: no limit beyond the search's own time budget. ``MEMORY_LIMIT_MB``: memory
    one population may allocate in its training process (``RLIMIT_DATA``), so a model
    too big for the machine fails with "out of memory" instead of taking it down. ``NICE``:
    training runs at this lower CPU priority, so the API and the coordinator stay
    responsive while it trains.
    ``MEMORY_BUDGET_MB``: the estimated training memory a population may need (see
    ``models.sizing.estimate_training_bytes``); checked before anything is built.
    ``DATA_CACHE_MB``: prepared datasets a long-lived training process (a warm embedded
    trainer, a Celery worker's child) keeps between populations and searches, least
    recently used dropped first; one dataset in use is kept even when larger.
    """

    population_time_limit_s: float | None = Field(default=None, gt=0)
    memory_limit_mb: int | None = Field(default=None, ge=256)
    nice: int = Field(default=10, ge=0, le=19)
    # What one population may need by the estimate of models.sizing (parameters, Adam
    # state, activations): a spec whose single candidate exceeds it is refused at
    # submission, and the K chooser stays within it. Default: half the physical RAM.
    memory_budget_mb: int = Field(default_factory=lambda: default_memory_budget_mb(), ge=64)
    data_cache_mb: int = Field(default=1024, ge=0)


def physical_memory_bytes() -> int:
    """The machine's physical RAM (8 GiB when it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 << 30


def default_memory_budget_mb() -> int:
    """Half the physical RAM, in MiB: room for the API, the database and the OS beside it."""
    return max(64, physical_memory_bytes() // 2 // 2**20)


class HttpSettings(BaseModel):
    """What the HTTP server accepts (``ACTSEARCH_HTTP__*``).

    Attributes:
        allowed_hosts: ``Host`` names served besides localhost, 127.0.0.1, [::1] and the
            bound host (JSON list, e.g. ``'["api.example.org"]'``); ``["*"]`` accepts any
            (behind a proxy that checks it). Refusing other names defeats DNS rebinding.
        allowed_origins: browser origins (``https://ui.example.org``) allowed to send
            state-changing requests besides the service's own origin.
        bound_host: the interface ``actsearch serve`` listens on (it sets this itself).
        timeout_keep_alive_s: an idle keep-alive connection is closed after this.
        request_read_timeout_s: a request's headers must arrive within this many seconds,
            and a body may not pause longer; slower connections are closed. Off (None) by
            default: the deadline runs on uvicorn's pure-Python h11 parser, which cost the
            load test p95 868 ms against < 250 ms with the default httptools parser (200
            reads/s, 2 cores); a service exposed to slow clients should set it (e.g. 30).
    """

    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_origins: list[str] = Field(default_factory=list)
    bound_host: str | None = None
    timeout_keep_alive_s: float = Field(default=5.0, gt=0)
    request_read_timeout_s: float | None = Field(default=None, gt=0)


# Margin added to the longest task for the broker's visibility timeout: the
# population's final write (tell, rows, weights) and a slow queue pick-up.
VISIBILITY_MARGIN_S = 3600.0


class WorkerSettings(BaseModel):
    """Distributed mode: heartbeats, the reconciler, task deadlines, queues (``ACTSEARCH_WORKER__*``).

    Attributes:
        reconcile_interval_s: how often beat sends ``search.reconcile`` (tests use 2 s).
        heartbeat_interval_s: how often a running population stamps its row.
        stale_after_s: a running population whose heartbeat is older is given up
            (its worker is presumed dead); must exceed a few heartbeat intervals.
        max_attempts: attempts per population (the first included) before it stays failed.
        task_deadline_s: the engine's deadline for one population task. Celery's
            time limits are not used: the solo pool ignores them, and a hard kill
            would lose the epochs trained; the engine stops cleanly and keeps them.
        transient_retry_budget_s: how long a task keeps retrying while the database
            (or the broker) is unreachable, counted from its first failed try; past it
            the task fails saying what was unreachable and for how long. Its queued
            work is not lost then either: the reconciler re-sends pending populations.
        transient_retry_max_backoff_s: the cap of the exponential backoff (1, 2, 4, ...
            seconds, full jitter) between those retries; once the database is back, a
            waiting task starts within this many seconds at most.
        device: ``auto`` (CUDA when the worker's GPU is visible, else CPU), ``cpu``
            or ``cuda:0``.
        queue: where population tasks go.
        control_queue: ``search.start`` and ``search.reconcile``, so they never wait
            behind a long backlog of populations.
    """

    reconcile_interval_s: float = Field(default=30.0, ge=1.0)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    stale_after_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    task_deadline_s: float = Field(default=6 * 3600.0, gt=0)
    transient_retry_budget_s: float = Field(default=300.0, ge=0)
    transient_retry_max_backoff_s: float = Field(default=30.0, ge=1.0)
    device: str = "auto"
    queue: str = "actsearch"
    control_queue: str = "actsearch.control"

    @model_validator(mode="after")
    def _stale_after_heartbeats(self) -> WorkerSettings:
        if self.stale_after_s < 3 * self.heartbeat_interval_s:
            raise ValueError(
                "ACTSEARCH_WORKER__STALE_AFTER_S must be at least 3 heartbeat intervals "
                f"({3 * self.heartbeat_interval_s:g} s), or live workers would be given up"
            )
        return self

    @property
    def visibility_timeout_s(self) -> int:
        """Redis visibility timeout: longer than the longest task, so no live task is redelivered.

        With ``acks_late`` a message stays unacknowledged while its task runs;
        Redis hands it to another worker once this timeout passes. The longest
        task is bounded by ``task_deadline_s`` (the engine's deadline) plus the
        final write, hence the margin.
        """
        return int(self.task_deadline_s + VISIBILITY_MARGIN_S)


class Settings(BaseSettings):
    """Everything configurable; fails fast on a bad value."""

    model_config = SettingsConfigDict(
        env_prefix="ACTSEARCH_", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None
    broker_url: str | None = Field(
        default=None, description="redis://... : distributed mode (Celery workers); unset: embedded"
    )
    artifact_dir: Path | None = None
    compile_cache_dir: Path | None = Field(
        default=None, description="torch's on-disk compiled kernels (default: <home>/compile); "
                                  "workers sharing one reuse each other's kernels")
    torch_threads: int = Field(default=0, ge=0)
    workers: int = Field(default=1, ge=1)
    schedule_tick_s: float = Field(
        default=15.0, gt=0,
        description="embedded mode: seconds between the runner's checks for due schedules",
    )
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)

    @field_validator("database_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError(
                "ACTSEARCH_DATABASE_URL must be sqlite:///PATH or postgresql+psycopg://..."
            )
        return value

    @property
    def distributed(self) -> bool:
        """True when a broker is configured: searches run on Celery workers."""
        return self.broker_url is not None

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need an API key: the explicit setting, else on iff distributed."""
        if self.auth.enabled is not None:
            return self.auth.enabled
        return self.distributed

    @property
    def compile_dir(self) -> Path:
        """Where training processes keep torch's compiled kernels across processes."""
        return self.compile_cache_dir or self.home / "compile"

    @property
    def resolved_database_url(self) -> str:
        """The database URL: the configured one, or the embedded SQLite file under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'actsearch.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call ``get_settings.cache_clear()``)."""
    return Settings()
