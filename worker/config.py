"""Settings of the distributed mode's workers, beat and reconciler.

They read ``ACTSEARCH_WORKER__<NAME>`` (the same names a nested ``worker``
section of :class:`actsearch.settings.Settings` would read, so the section can
move there without renaming anything). Kept here so the worker's knobs live
with the worker; everything else (database, broker, torch threads) comes from
the shared Settings.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Margin added to the longest task for the broker's visibility timeout: the
# population's final write (tell, rows, weights) and a slow queue pick-up.
VISIBILITY_MARGIN_S = 3600.0


class WorkerSettings(BaseSettings):
    """Timing of heartbeats, the reconciler and task deadlines; queue names.

    Attributes:
        reconcile_interval_s: how often beat sends ``search.reconcile`` (tests use 2 s).
        heartbeat_interval_s: how often a running population stamps its row.
        stale_after_s: a running population whose heartbeat is older is given up
            (its worker is presumed dead); must exceed a few heartbeat intervals.
        max_attempts: attempts per population (the first included) before it stays failed.
        task_deadline_s: the engine's deadline for one population task. Celery's
            time limits are not used: the solo pool ignores them, and a hard kill
            would lose the epochs trained; the engine stops cleanly and keeps them.
        device: ``auto`` (CUDA when the worker's GPU is visible, else CPU), ``cpu``
            or ``cuda:0``.
        queue: where population tasks go.
        control_queue: ``search.start`` and ``search.reconcile``, so they never wait
            behind a long backlog of populations.
    """

    model_config = SettingsConfigDict(env_prefix="ACTSEARCH_WORKER__", extra="ignore")

    reconcile_interval_s: float = Field(default=30.0, ge=1.0)
    heartbeat_interval_s: float = Field(default=10.0, gt=0)
    stale_after_s: float = Field(default=120.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    task_deadline_s: float = Field(default=6 * 3600.0, gt=0)
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
        final write, hence the margin. A redelivery would be harmless anyway
        (the population is no longer pending), but it would waste a pick-up.
        """
        return int(self.task_deadline_s + VISIBILITY_MARGIN_S)


@lru_cache(maxsize=1)
def get_worker_settings() -> WorkerSettings:
    """The process-wide worker settings (tests call ``get_worker_settings.cache_clear()``)."""
    return WorkerSettings()
