"""The distributed executor: a Celery task trains its population in its own process.

Every step is :mod:`.steps`'s; this module adds what a task on a shared cluster
needs around the training itself: a heartbeat thread (the reconciler gives up a
population whose heartbeat goes stale, and then this task stops at its next epoch),
the population time limit and the memory cap's error message.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from models.engine import train_population
from store import repo

from .limits import PopulationTimeLimit, describe_failure, population_time_limit
from .steps import (
    Claimed,
    ClaimInterrupted,
    ClaimToken,
    NothingToTrain,
    PopulationOutcome,
    Prepared,
    claim,
    commit_result,
    complete_told,
    fail_owned,
    fail_prepared,
    is_transient,
    prepare,
    release_claim,
)

log = logging.getLogger(__name__)

Heartbeat = Callable[[], bool]
DEFAULT_HEARTBEAT_INTERVAL_S = 10.0


class HeartbeatThread:
    """Calls ``heartbeat`` every ``interval_s`` while a population trains.

    A thread rather than only the per-epoch callback: one epoch on a large
    dataset can outlast the reconciler's staleness limit. When the heartbeat
    says the population is no longer ours, ``lost`` is set and the training
    loop stops every candidate at its next epoch.
    """

    def __init__(self, heartbeat: Heartbeat, interval_s: float) -> None:
        self.heartbeat = heartbeat
        self.interval_s = interval_s
        self.lost = threading.Event()
        self._last = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="actsearch-heartbeat", daemon=True)

    def beat_if_due(self, min_gap_s: float = 1.0) -> None:
        """Heartbeat from the epoch callback, at most once per ``min_gap_s`` (tiny epochs)."""
        if time.monotonic() - self._last >= min_gap_s:
            self.beat()

    def beat(self) -> None:
        self._last = time.monotonic()
        try:
            if not self.heartbeat():
                self.lost.set()
        except Exception as exc:  # noqa: BLE001 - a database blip must not kill training
            log.warning("heartbeat failed: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()

    def __enter__(self) -> HeartbeatThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(1.0, self.interval_s))


def owned_heartbeat(sessions: sessionmaker[Session], population_id: int, worker: str) -> Heartbeat:
    """Stamp the population's row while it is still ``worker``'s; False once it is not."""
    def beat() -> bool:
        with sessions.begin() as session:
            return repo.heartbeat_owned_population(session, population_id=population_id,
                                                   worker=worker)
    return beat


def run_population(
    sessions: sessionmaker[Session],
    *,
    population_id: int,
    storage_url: str,
    worker_name: str,
    heartbeat: Heartbeat | None = None,
    task_id: str | None = None,
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
    max_task_s: float | None = None,
    device: str = "cpu",
    time_limit_s: float | None = None,
    memory_limit_mb: int | None = None,
    release: ClaimToken | None = None,
) -> PopulationOutcome:
    """Claim, prepare, train, then commit (or fail) one population, in this process.

    Args:
        sessions: session factory of the shared database.
        population_id: the population row to train.
        storage_url: Optuna's RDB storage (the same database).
        worker_name: recorded on the row; the heartbeat and the final write check it.
        heartbeat: called every ``heartbeat_interval_s`` and after each epoch; returns
            False once the population is no longer ours. Default: stamp the row.
        task_id: the broker's task id, kept on the row.
        max_task_s: the engine's deadline for this task; the search's remaining time
            budget tightens it further.
        device: torch device for training.
        time_limit_s: past it the population is stopped and failed with a "time limit" error.
        memory_limit_mb: the process's memory cap, named in an "out of memory" error.
        release: the claim of an earlier try of this task that a transient error cut
            short (:class:`~.steps.ClaimInterrupted`); handed back before claiming.

    Returns:
        What happened; the caller then calls :func:`~.steps.advance_search`.

    Raises:
        ClaimInterrupted: a transient (database) error after the claim, raised from it.
    """
    if release is not None and release.population_id == population_id:
        if release_claim(sessions, release):
            log.info("population %s released from its interrupted %s", population_id, release)
    claimed, outcome = claim(sessions, population_id, worker_name, task_id)
    if claimed is None:
        assert outcome is not None
        return outcome
    try:
        return _train_claimed(sessions, claimed, storage_url=storage_url,
                              heartbeat=heartbeat or owned_heartbeat(sessions, population_id,
                                                                     worker_name),
                              heartbeat_interval_s=heartbeat_interval_s, max_task_s=max_task_s,
                              device=device, time_limit_s=time_limit_s,
                              memory_limit_mb=memory_limit_mb)
    except Exception as exc:
        if is_transient(exc):
            # The database went away: nobody trains the population now, yet its row
            # says running under this claim. The task's retry (on any worker) hands
            # it back by this token and trains it again once the database answers.
            raise ClaimInterrupted(claimed.token) from exc
        raise


def _train_claimed(sessions: sessionmaker[Session], claimed: Claimed, *, storage_url: str,
                   heartbeat: Heartbeat, heartbeat_interval_s: float,
                   max_task_s: float | None, device: str, time_limit_s: float | None,
                   memory_limit_mb: int | None) -> PopulationOutcome:
    """Prepare, train and commit (or fail) a claimed population; transient errors propagate."""
    population_id = claimed.population_id
    job: Prepared | None = None
    # The heartbeat starts right after the claim: loading data and asking Optuna
    # count against the staleness limit too.
    with HeartbeatThread(heartbeat, heartbeat_interval_s) as beats:
        try:
            job = prepare(sessions, claimed, storage_url, max_task_s=max_task_s, device=device)
            reporter = job.reporter

            def on_epoch(report: Any) -> list[int]:
                beats.beat_if_due()
                if beats.lost.is_set():
                    return list(report.candidates)  # given up by the reconciler: stop now
                return list(reporter(report)) if reporter is not None else []

            with population_time_limit(time_limit_s):
                family = None if claimed.mixed else claimed.family  # mixed: per candidate
                result = train_population(claimed.spec.arch_spec(), family,
                                          job.candidates, job.data.tensor_data(device),
                                          job.config,
                                          on_epoch=on_epoch)
            if beats.lost.is_set():
                return PopulationOutcome(population_id, "lost", claimed.search_id)
            return commit_result(sessions, job, result)
        except NothingToTrain:
            # told before an interruption cut our own write: Optuna has the results
            return complete_told(sessions, claimed)
        except Exception as exc:
            if is_transient(exc):
                raise
            if isinstance(exc, PopulationTimeLimit):
                error = str(exc)
            else:
                error = describe_failure(exc, memory_limit_mb=memory_limit_mb)
            log.error("population %s failed: %s", population_id, error.splitlines()[0])
            if job is not None:
                return fail_prepared(sessions, job, error)
            return fail_owned(sessions, claimed, error)
