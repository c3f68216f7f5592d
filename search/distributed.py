"""The distributed coordinator: the embedded search semantics, spread over stateless tasks.

The embedded coordinator (:mod:`search.embedded`) keeps the whole search in one
process. Here any number of workers on any number of machines share it through
PostgreSQL, so every decision that the embedded loop makes in memory becomes a
row and an atomic transition:

* :func:`plan_search` creates every search-phase population upfront (the
  :class:`~search.planner.FamilyPlanner`'s round-robin, equal budgets), state
  ``pending``. The broker then hands them to whichever worker is free.
* :func:`run_population` claims one (``pending -> running`` in a conditional
  UPDATE, so a duplicate delivery does nothing), asks its K trials from the
  Optuna RDB study *at task start* (later populations learn from earlier ones),
  stores the asked trial numbers at once (the reconciler needs them), trains,
  reports each epoch to Optuna (pruning) and heartbeats, then tells and records
  under a row lock so a reconciler that gave the population up cannot race it.
* :func:`advance_search` runs after each population: when the search phase is
  finished exactly one caller (row lock on the search) plans the finalists; when
  they are finished it scores the winner on test and completes the search, as
  ``EmbeddedCoordinator._finish`` does.
* :func:`reconcile` (run periodically by beat) fails what a dead worker left
  RUNNING, re-queues its population as a fresh one (up to ``max_attempts``),
  and advances searches that nobody advanced.

This module never imports Celery: the tasks in :mod:`worker.tasks` are thin
wrappers that commit, then enqueue the ids these functions return.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models.engine import PopulationResult, evaluate, train_population
from models.spec import Candidate, TrainConfig
from store import repo
from store.tables import POPULATION_FINISHED_STATES, PopulationRow, SearchRow, utcnow

from .factories import make_pruner, make_sampler
from .limits import PopulationTimeLimit, describe_failure, population_time_limit
from .planner import planner_for
from .population import (
    AskedTrial,
    PruningReporter,
    ask_population,
    candidate_seed,
    fail_population,
    tell_population,
)
from .protocol import Leaderboard, best_per_family, build_leaderboard
from .results import (
    TrialIdentity,
    analyse_finalist_networks,
    nothing_completed_error,
    record_failed_population,
    record_population,
)
from .service import PreparedData, prepare_data
from .space import FAMILY_KEY
from .spec import SearchSpec
from .storage import clear_storages, optuna_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)

Sessions = sessionmaker[Session]
Heartbeat = Callable[[], bool]

ACTIVE_SEARCH_STATES = ("running", "finalizing")
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_HEARTBEAT_INTERVAL_S = 10.0
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)

__all__ = [
    "ACTIVE_SEARCH_STATES",
    "PopulationOutcome",
    "ReconcileReport",
    "advance_search",
    "cancel_search",
    "clear_caches",
    "finalist_seeds",
    "plan_search",
    "reconcile",
    "run_population",
]


# --------------------------------------------------------------------------- caches
# One worker process trains many populations of the same search: loading and
# splitting the dataset once, and keeping one Optuna storage (one connection
# pool) per database, saves a round of work per task. Both are per process
# (prefork children each have their own), never shared across a fork.

_DATA_CACHE_SIZE = 4
_data_cache: OrderedDict[tuple[Any, ...], PreparedData] = OrderedDict()
_cache_lock = threading.Lock()


def clear_caches() -> None:
    """Forget cached datasets and Optuna storages (after a fork, and in tests)."""
    with _cache_lock:
        _data_cache.clear()
    clear_storages()


def prepared_data(sessions: Sessions, *, dataset_id: int, spec: SearchSpec) -> PreparedData:
    """The search's splits, from the dataset artifact in the database, cached per process.

    Keyed by (dataset, seed, fractions): exactly what :func:`search.service.prepare_data`
    depends on. The artifact comes from the database, never from the API's disk.
    """
    key = (dataset_id, spec.seed, spec.val_fraction, spec.test_fraction)
    with _cache_lock:
        hit = _data_cache.get(key)
        if hit is not None:
            _data_cache.move_to_end(key)
            return hit
    with sessions() as session:
        data = prepare_data(session, dataset_id=dataset_id, spec=spec)
    with _cache_lock:
        _data_cache[key] = data
        while len(_data_cache) > _DATA_CACHE_SIZE:
            _data_cache.popitem(last=False)
    return data


def _population_seed(search_seed: int, population_id: int) -> int:
    """The sampler seed of one population's asks.

    Each task re-opens the study with a fresh sampler; seeding every one with the
    search's seed would replay the same random draws (TPE's start-up phase) in
    every population. Mixing in the population id keeps asks distinct and still
    reproducible from the database.
    """
    return (search_seed * 1_000_003 + population_id * 104_729) % (2**31 - 1)


def _load_study(spec: SearchSpec, study_name: str, storage_url: str, seed: int) -> optuna.Study:
    return optuna.load_study(
        study_name=study_name,
        storage=optuna_storage(storage_url),
        sampler=make_sampler(spec.sampler, seed, spec.multi_objective),
        pruner=make_pruner("none" if spec.multi_objective else spec.pruner, spec.epochs),
    )


def finalist_seeds(spec: SearchSpec) -> list[int]:
    """The fresh seeds finalists re-train on (the same as the embedded coordinator's)."""
    return [(spec.seed + 1) * 10_007 + j * 101 for j in range(spec.finalist_seeds)]


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS)


# --------------------------------------------------------------------------- planning


def _new_task_id() -> str:
    return uuid.uuid4().hex


def plan_search(session: Session, *, search_id: int) -> list[int]:
    """Create every search-phase population of a pending search; returns their ids.

    The search moves ``pending -> running`` in the same transaction, atomically,
    so a second ``search.start`` delivery plans nothing. Each population gets
    its broker task id now, so the caller enqueues with a known id after commit
    (and the id can be revoked or looked up in Flower).
    """
    if not repo.transition_search(
        session, search_id=search_id, from_states=("pending",), to_state="running"
    ):
        return []
    search = repo.get_search(session, search_id=search_id)
    spec = SearchSpec.model_validate(search.spec)
    dataset = repo.get_dataset(session, dataset_id=search.dataset_id)
    n_outputs = dataset.n_classes if dataset.task == "classification" else 1
    planner = planner_for(spec, n_inputs=dataset.n_features, n_outputs=n_outputs or 1)
    ids: list[int] = []
    while (planned := planner.next()) is not None:
        family, k = planned
        row = repo.add_population(
            session, search_id=search_id, family=family, structural={}, k=k, phase="search",
            task_id=_new_task_id(),
        )
        ids.append(row.id)
    return ids


def cancel_search(session: Session, *, search_id: int) -> list[int]:
    """Cancel a search: no new populations start; those running finish or are pruned.

    Returns the pending populations marked cancelled. The API may equally just
    set the state: workers skip the pending populations of a cancelled search
    and the reconciler marks them.
    """
    search = repo.get_search(session, search_id=search_id)
    if search.state not in ("cancelled", "complete", "failed"):
        repo.set_search_state(session, search_id=search_id, state="cancelled")
    return repo.cancel_pending_populations(session, search_id=search_id, reason="search cancelled")


# --------------------------------------------------------------------------- one population


@dataclass
class PopulationOutcome:
    """What :func:`run_population` did.

    status: ``complete``, ``failed`` (training raised: its trials told FAIL),
    ``skipped`` (not pending: a duplicate delivery or a population already
    given up), ``cancelled`` (its search was cancelled or out of time) or ``lost``
    (the reconciler took it over while it ran; results discarded).
    """

    population_id: int
    status: str
    search_id: int | None = None
    trials: dict[int, str] = field(default_factory=dict)
    error: str | None = None


@dataclass
class _Claimed:
    """A claimed population's plain facts, read once so no ORM object outlives its session."""

    population_id: int
    search_id: int
    study_name: str
    dataset_id: int
    spec: SearchSpec
    phase: str
    family: str
    k: int
    source_trial_number: int | None
    search_started_at: datetime | None


def _claim(
    sessions: Sessions, population_id: int, worker_name: str, task_id: str | None
) -> tuple[_Claimed | None, PopulationOutcome | None]:
    with sessions.begin() as session:
        pop = repo.get_population(session, population_id=population_id)
        search = repo.get_search(session, search_id=pop.search_id)
        if pop.state != "pending":
            return None, PopulationOutcome(population_id, "skipped", pop.search_id)
        spec = SearchSpec.model_validate(search.spec)
        reason = None
        if search.state not in ACTIVE_SEARCH_STATES:
            reason = f"search {search.state}"
        elif pop.phase == "search" and _time_left(spec, search.started_at) == 0.0:
            reason = "time budget spent"
        if reason is not None:
            repo.cancel_pending_populations(
                session, search_id=pop.search_id, population_id=population_id, reason=reason
            )
            return None, PopulationOutcome(population_id, "cancelled", pop.search_id, error=reason)
        if not repo.claim_population(
            session, population_id=population_id, worker=worker_name, task_id=task_id
        ):
            return None, PopulationOutcome(population_id, "skipped", pop.search_id)
        return _Claimed(
            population_id=population_id, search_id=search.id, study_name=search.study_name,
            dataset_id=search.dataset_id, spec=spec, phase=pop.phase, family=pop.family,
            k=pop.k, source_trial_number=pop.source_trial_number,
            search_started_at=search.started_at,
        ), None


def _time_left(spec: SearchSpec, started_at: datetime | None) -> float | None:
    """Seconds of the search's time budget left (0.0 when spent; None without a budget)."""
    if spec.time_budget_s is None or started_at is None:
        return None
    left = spec.time_budget_s - (utcnow() - started_at).total_seconds()
    return max(0.0, left)


def _structural(family: str, act_params: dict[str, Any]) -> dict[str, Any]:
    from models.activations import get_activation

    cls = get_activation(family)
    return {p.name: act_params[p.name] for p in cls.space() if p.structural}


class _HeartbeatThread:
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

    def __enter__(self) -> _HeartbeatThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(1.0, self.interval_s))


def run_population(
    sessions: Sessions,
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
) -> PopulationOutcome:
    """Claim, ask, train, tell and record one population (search phase or finalist).

    Args:
        sessions: session factory of the shared database.
        population_id: the population row to train.
        storage_url: Optuna's RDB storage (the same database).
        worker_name: recorded on the row; the heartbeat and the final write check it.
        heartbeat: called every ``heartbeat_interval_s`` and after each epoch; returns
            False once the population is no longer ours. Default: stamp the row
            (only while it is still running and ours).
        task_id: the broker's task id, kept on the row.
        max_task_s: the engine's deadline for this task (the solo pool ignores
            Celery's time limits, and a hard limit would lose the work done); the
            search's remaining time budget tightens it further.
        device: torch device for training.
        time_limit_s: the training's time limit (``ACTSEARCH_TRAINING__POPULATION_TIME_LIMIT_S``):
            past it the population is stopped and failed with a "time limit" error.
        memory_limit_mb: the process's memory cap, named in an "out of memory" error.

    Returns:
        What happened; the caller then calls :func:`advance_search`.
    """
    claimed, outcome = _claim(sessions, population_id, worker_name, task_id)
    if claimed is None:
        assert outcome is not None
        return outcome
    if heartbeat is None:
        def heartbeat() -> bool:
            with sessions.begin() as session:
                return repo.heartbeat_owned_population(
                    session, population_id=population_id, worker=worker_name
                )

    study: optuna.Study | None = None
    asked: list[AskedTrial] = []
    identities: list[TrialIdentity] = []
    started_at = utcnow()
    # The heartbeat starts right after the claim: loading data and asking Optuna
    # count against the staleness limit too.
    with _HeartbeatThread(heartbeat, heartbeat_interval_s) as beats:
        try:
            data = prepared_data(sessions, dataset_id=claimed.dataset_id, spec=claimed.spec)
            if claimed.phase == "search":
                study = _load_study(claimed.spec, claimed.study_name, storage_url,
                                    _population_seed(claimed.spec.seed, population_id))
                asked = ask_population(study, study.sampler, claimed.family, claimed.k,
                                       claimed.spec)
                with sessions.begin() as session:
                    repo.record_asked_trials(
                        session, population_id=population_id,
                        trial_numbers=[a.number for a in asked],
                        structural=_structural(claimed.family, asked[0].act_params),
                    )
                identities = [TrialIdentity(a.candidate(), a.act_params, a.hparams,
                                            trial_number=a.number) for a in asked]
                reporter: PruningReporter | None = PruningReporter(
                    asked, multi_objective=claimed.spec.multi_objective)
                data_seed = asked[0].seed
            else:
                identities = _finalist_identities(sessions, claimed)
                reporter = None
                data_seed = identities[0].candidate.seed
            config = _train_config(claimed, data_seed, max_task_s, device)

            def on_epoch(report: Any) -> list[int]:
                beats.beat_if_due()
                if beats.lost.is_set():
                    return list(report.candidates)  # given up by the reconciler: stop now
                return list(reporter(report)) if reporter is not None else []

            with population_time_limit(time_limit_s):
                result = train_population(
                    claimed.spec.arch_spec(), claimed.family,
                    [i.candidate for i in identities], data.tensor_data(), config,
                    on_epoch=on_epoch,
                )
            if beats.lost.is_set():
                return PopulationOutcome(population_id, "lost", claimed.search_id)
            return _commit_result(sessions, claimed, worker_name, study, asked, identities,
                                  result, data)
        except Exception as exc:
            if _is_transient(exc):
                # The database went away: leave the population running; its heartbeat
                # goes stale and the reconciler re-queues it as a fresh attempt.
                raise
            if isinstance(exc, PopulationTimeLimit):
                error = str(exc)
            else:
                error = describe_failure(exc, memory_limit_mb=memory_limit_mb)
            log.error("population %s failed: %s", population_id, error.splitlines()[0])
            if not identities and asked:
                identities = [TrialIdentity(a.candidate(), a.act_params, a.hparams,
                                            trial_number=a.number) for a in asked]
            _fail_owned(sessions, claimed, worker_name, study, asked, error, identities,
                        started_at)
            return PopulationOutcome(population_id, "failed", claimed.search_id,
                                     error=error[:500])


def _train_config(claimed: _Claimed, data_seed: int, max_task_s: float | None,
                  device: str) -> TrainConfig:
    spec = claimed.spec
    deadline = max_task_s
    if claimed.phase == "search":
        left = _time_left(spec, claimed.search_started_at)
        if left is not None:
            left = max(1.0, left)
            deadline = left if deadline is None else min(deadline, left)
    return TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, optimizer=spec.optimizer,
                       schedule=spec.schedule, data_seed=data_seed, deadline_s=deadline,
                       device=device)


def _finalist_identities(sessions: Sessions, claimed: _Claimed) -> list[TrialIdentity]:
    """Re-runs of the family's best search trial on fresh seeds (as the embedded mode does)."""
    if claimed.source_trial_number is None:
        raise RuntimeError(f"finalist population {claimed.population_id} names no source trial")
    with sessions() as session:
        best = repo.find_trial(session, study_name=claimed.study_name,
                               trial_number=claimed.source_trial_number, phase="search")
        family_params, hparams = dict(best.family_params), dict(best.hparams)
    return [
        TrialIdentity(Candidate(seed=s, lr=hparams["lr"], weight_decay=hparams["weight_decay"],
                                act_params=dict(family_params)),
                      dict(family_params), hparams,
                      source_trial_number=claimed.source_trial_number)
        for s in finalist_seeds(claimed.spec)[: claimed.k]
    ]


def _still_running(study: optuna.Study, numbers: Sequence[int]) -> bool:
    trials = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    return all(trials.get(n) == TrialState.RUNNING for n in numbers)


def _commit_result(
    sessions: Sessions, claimed: _Claimed, worker_name: str, study: optuna.Study | None,
    asked: list[AskedTrial], identities: list[TrialIdentity], result: PopulationResult,
    data: PreparedData,
) -> PopulationOutcome:
    """Tell Optuna and write the rows, holding the population's row lock.

    The reconciler gives a population up with a conditional UPDATE on the same
    row, so it waits for this transaction and then finds the population
    complete; or it went first, and this worker finds the row no longer its own
    and discards its results (the retry population trains them again).
    """
    pid = claimed.population_id
    with sessions.begin() as session:
        row = repo.lock_population(session, population_id=pid)
        if row.state != "running" or row.worker != worker_name:
            return PopulationOutcome(pid, "lost", claimed.search_id)
        told: dict[int, str] | None = None
        if study is not None:
            if not _still_running(study, [a.number for a in asked]):
                return PopulationOutcome(pid, "lost", claimed.search_id)
            told = tell_population(study, claimed.spec, asked, result.candidates,
                                   result.n_params, result.flops)
        weights = None
        if claimed.phase == "finalist":
            weights = {"scaler": data.splits.scaler, "label_map": data.splits.label_map}
        record_population(session, search_id=claimed.search_id, study_name=claimed.study_name,
                          population_id=pid, phase=claimed.phase, family=claimed.family,
                          identities=identities, result=result, told=told,
                          save_weights_with=weights)
        repo.set_population_state(session, population_id=pid, state="complete")
    return PopulationOutcome(pid, "complete", claimed.search_id, trials=told or {})


def _fail_owned(sessions: Sessions, claimed: _Claimed, worker_name: str,
                study: optuna.Study | None, asked: list[AskedTrial], error: str,
                identities: Sequence[TrialIdentity] = (),
                started_at: datetime | None = None) -> None:
    """A training error (not transient): FAIL its trials and the population, if still ours.

    Each candidate gets a ``failed`` trial row carrying the error, so the failure
    shows in the search's trials and Optuna's trial count matches ours.
    """
    with sessions.begin() as session:
        row = repo.lock_population(session, population_id=claimed.population_id)
        if row.state != "running" or row.worker != worker_name:
            return
        if study is not None and asked:
            running = [a for a in asked if _still_running(study, [a.number])]
            fail_population(study, running, error)
            told = {a.number for a in running}
            identities = [i for i in identities if i.trial_number in told]
        record_failed_population(
            session, search_id=claimed.search_id, study_name=claimed.study_name,
            population_id=claimed.population_id, phase=claimed.phase, family=claimed.family,
            identities=identities, error=error, started_at=started_at)
        repo.set_population_state(session, population_id=claimed.population_id, state="failed",
                                  error=error[:4000])


# --------------------------------------------------------------------------- advancing a search


def _unfinished(pops: Sequence[PopulationRow], phase: str | None = None) -> list[PopulationRow]:
    return [p for p in pops if p.state not in POPULATION_FINISHED_STATES
            and (phase is None or p.phase == phase)]


def advance_search(sessions: Sessions, *, search_id: int,
                   storage_url: str | None = None) -> list[int]:
    """Move a search on when its current phase is finished; returns populations to enqueue.

    Holds the search row lock, so when two workers finish the last two
    populations at once exactly one plans the finalists (the other then sees
    ``finalizing``). Before the finalists are planned, Optuna trials that
    finished without our row (their worker's write was lost to a database
    outage) are recorded from ``storage_url``, so the search phase ends with one
    row per Optuna trial. After the finalists: the winner's test score, then
    ``complete`` with ``best``. A cancelled search only has its pending
    populations marked cancelled. Finishing reads only our tables (no Optuna).
    """
    with sessions.begin() as session:
        search = repo.lock_search(session, search_id=search_id)
        if search.state == "cancelled":
            repo.cancel_pending_populations(session, search_id=search_id,
                                            reason="search cancelled")
            return []
        if search.state not in ACTIVE_SEARCH_STATES:
            return []
        pops = repo.list_populations(session, search_id=search_id)
        if _unfinished(pops):
            return []
        spec = SearchSpec.model_validate(search.spec)
        if search.state == "running":
            if storage_url is not None:
                _record_unrecorded(session, search, spec, pops, storage_url, cutoff=None)
            new_ids = _plan_finalists(session, search_id, spec)
            repo.set_search_state(session, search_id=search_id, state="finalizing")
            if new_ids:
                return new_ids
        dataset_id = search.dataset_id
    # Every finalist is finished (or there were none): score and complete.
    try:
        _finish(sessions, search_id, dataset_id, spec)
    except Exception as exc:
        if _is_transient(exc):
            raise
        log.exception("finishing search %s failed", search_id)
        with sessions.begin() as session:
            search = repo.lock_search(session, search_id=search_id)
            if search.state in ACTIVE_SEARCH_STATES:
                repo.set_search_state(session, search_id=search_id, state="failed",
                                      error=f"finishing failed: {type(exc).__name__}: {exc}")
    return []


def _plan_finalists(session: Session, search_id: int, spec: SearchSpec) -> list[int]:
    trials = repo.list_trials(session, search_id=search_id, phase="search", limit=None)
    best = best_per_family(trials)
    ids = []
    for family in spec.families:
        if family not in best:
            continue
        row = repo.add_population(session, search_id=search_id, family=family, structural={},
                                  k=spec.finalist_seeds, phase="finalist",
                                  task_id=_new_task_id())
        row.source_trial_number = best[family].trial_number
        ids.append(row.id)
    session.flush()
    return ids


def _finish(sessions: Sessions, search_id: int, dataset_id: int, spec: SearchSpec) -> None:
    """The test score of the final choice only, the leaderboard, then ``complete`` with best.

    Mirrors ``EmbeddedCoordinator._finish``. The data (and torch, for the test
    evaluation) load before the row lock is taken, to keep the lock short.
    """
    data = prepared_data(sessions, dataset_id=dataset_id, spec=spec)
    metric = "accuracy" if data.dataset.task == "classification" else "r2"
    with sessions.begin() as session:
        search = repo.lock_search(session, search_id=search_id)
        if search.state != "finalizing":
            return  # another worker finished it while we loaded the data
        trials = repo.list_trials(session, search_id=search_id, limit=None)
        board = build_leaderboard(trials, metric)
        if board.winner is not None:
            _score_test(session, search_id, spec, data, board.winner.family)
            analyse_finalist_networks(session, search_id=search_id, arch=spec.arch_spec(),
                                      data=data.splits, n_outputs=data.n_outputs,
                                      test_family=board.winner.family)
            trials = repo.list_trials(session, search_id=search_id, limit=None)
            board = build_leaderboard(trials, metric)
        error = nothing_completed_error(trials)
        if error is not None:
            repo.set_search_state(session, search_id=search_id, state="failed", error=error)
            return
        repo.set_search_state(session, search_id=search_id, state="complete",
                              best=_best(board, metric))


def _best(board: Leaderboard, metric: str) -> dict[str, Any] | None:
    if board.winner is None:
        return None
    w, b = board.winner, board.baseline
    return {"family": w.family, "mean": w.mean, "ci95": w.ci95, "test_mean": w.test_mean,
            "test_ci95": w.test_ci95, "baseline_mean": b.mean if b else None,
            "delta_vs_baseline": w.delta_vs_baseline, "metric": metric}


def _score_test(session: Session, search_id: int, spec: SearchSpec, data: PreparedData,
                family: str) -> None:
    """Test metric of the final choice's re-runs only (never used to choose)."""
    s = data.splits
    arch = spec.arch_spec()
    for trial in repo.list_trials(session, search_id=search_id, phase="finalist", family=family,
                                  limit=None):
        if trial.state != "complete":
            continue
        state_dict, _, _ = repo.load_weights(session, trial_id=trial.id)
        value = evaluate(arch, family, trial.family_params, state_dict, np.asarray(s.X_test),
                         np.asarray(s.y_test), data.n_outputs, data.dataset.task)
        repo.set_trial_test_value(session, trial_id=trial.id, test_value=value)


# --------------------------------------------------------------------------- the reconciler


@dataclass
class ReconcileReport:
    """What one reconciler pass did; ``enqueue`` and ``restart`` are for the caller to send."""

    stale: list[int] = field(default_factory=list)  # populations given up
    failed_trials: int = 0  # Optuna trials told FAIL
    enqueue: list[int] = field(default_factory=list)  # retries and finalists to enqueue
    exhausted: list[int] = field(default_factory=list)  # stale, out of attempts
    restart: list[int] = field(default_factory=list)  # pending searches never planned
    advanced: list[int] = field(default_factory=list)  # searches moved on here
    recorded_trials: int = 0  # finished Optuna trials given the row their worker never wrote


def _fail_trials(study: optuna.Study, numbers: Sequence[int], error: str,
                 *, older_than: datetime | None = None) -> list[FrozenTrial]:
    """Tell FAIL for those of ``numbers`` that are still RUNNING (and started before ``older_than``)."""
    wanted = set(numbers)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number not in wanted:
            continue
        started = trial.datetime_start
        if older_than is not None and (started is None or started.astimezone() > older_than):
            continue  # Optuna stamps naive local times; astimezone() reads them as such
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "error", error[:500])
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError) as exc:  # its worker finished it meanwhile
            log.info("trial %s not failed: %s", trial.number, exc)
            continue
        failed.append(trial)
    return failed


def _record_lost_trials(session: Session, pop: PopulationRow, study_name: str, spec: SearchSpec,
                        trials: Sequence[FrozenTrial], error: str) -> None:
    """Failed rows in our table for trials a dead worker never recorded (progress counts them)."""
    for t in trials:
        params = dict(t.params)
        hparams: dict[str, Any] = {k: params.pop(k) for k in ("lr", "weight_decay")
                                   if k in params}
        params.pop(FAMILY_KEY, None)
        prefix = f"{pop.family}."
        family_params = {k.removeprefix(prefix): v for k, v in params.items()}
        repo.add_trial(session, search_id=pop.search_id, population_id=pop.id,
                       study_name=study_name, trial_number=t.number, phase="search",
                       family=pop.family, family_params=family_params, hparams=hparams,
                       seed=candidate_seed(spec.seed, t.number), state="failed", error=error,
                       started_at=t.datetime_start, finished_at=utcnow())


def _retry(session: Session, pop: PopulationRow) -> int:
    """A fresh pending population repeating ``pop`` (same family, k, phase, finalist source)."""
    row = repo.add_population(session, search_id=pop.search_id, family=pop.family,
                              structural={}, k=pop.k, phase=pop.phase, task_id=_new_task_id())
    row.attempts = pop.attempts
    row.retry_of = pop.id
    row.source_trial_number = pop.source_trial_number
    session.flush()
    return row.id


def _give_up(sessions: Sessions, pop_id: int, storage_url: str, stale_after_s: float,
             max_attempts: int, report: ReconcileReport) -> None:
    """Fail one stale population, its RUNNING trials, and queue a fresh attempt."""
    with sessions.begin() as session:
        pop = repo.get_population(session, population_id=pop_id)
        worker, beat = pop.worker, pop.heartbeat_at
        error = f"worker {worker} lost: no heartbeat since {beat.isoformat() if beat else '-'}"
        if not repo.fail_stale_population(session, population_id=pop_id,
                                          older_than_s=stale_after_s, error=error):
            return  # it heartbeated (or finished) meanwhile
        pop = repo.get_population(session, population_id=pop_id)
        search = repo.get_search(session, search_id=pop.search_id)
        spec = SearchSpec.model_validate(search.spec)
        report.stale.append(pop_id)
        if pop.phase == "search" and pop.trial_numbers:
            study = _load_study(spec, search.study_name, storage_url, spec.seed)
            failed = _fail_trials(study, pop.trial_numbers, error)
            _record_lost_trials(session, pop, search.study_name, spec, failed, error)
            report.failed_trials += len(failed)
        if search.state in ACTIVE_SEARCH_STATES and pop.attempts < max_attempts:
            report.enqueue.append(_retry(session, pop))
        else:
            report.exhausted.append(pop_id)
            log.warning("population %s given up after %s attempts", pop_id, pop.attempts)


def _sweep_orphans(sessions: Sessions, search_id: int, storage_url: str, stale_after_s: float,
                   report: ReconcileReport) -> None:
    """Close what no running population owns: Optuna trials RUNNING or without our row.

    RUNNING trials older than the limit come from a worker that died between
    asking and storing the trial numbers, or from a reconciler pass that died
    half-way: they are told FAIL. Finished trials with no row of ours come from a
    worker whose tell reached Optuna while its own write was lost (the database
    went away in between): they get a row mirroring Optuna's state, so every
    Optuna trial has exactly one row and none is silently missing from progress.
    """
    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        spec = SearchSpec.model_validate(search.spec)
        pops = repo.list_populations(session, search_id=search_id)
        owned = {n for p in pops if p.state == "running" for n in (p.trial_numbers or [])}
        study_name = search.study_name
    study = _load_study(spec, study_name, storage_url, spec.seed)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.number not in owned]
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    if running:
        failed = _fail_trials(study, running, "orphaned: no running population owns this trial",
                              older_than=cutoff)
        report.failed_trials += len(failed)
    with sessions.begin() as session:
        search = repo.get_search(session, search_id=search_id)
        report.recorded_trials += _record_unrecorded(session, search, spec, pops, storage_url,
                                                     cutoff=cutoff, owned=owned)


def _record_unrecorded(session: Session, search: SearchRow, spec: SearchSpec,
                       pops: Sequence[PopulationRow], storage_url: str, *,
                       cutoff: datetime | None, owned: set[int] | None = None) -> int:
    """Rows for finished Optuna trials that have none; returns how many were written.

    ``cutoff``: only trials finished before it (Optuna stamps naive local times),
    so a worker still committing its own row is left alone; ``None`` when no
    population of the search is unfinished, so no worker can be.
    """
    recorded = {t.trial_number for t in repo.list_trials(session, search_id=search.id,
                                                          phase="search", limit=None)}
    skip = recorded | (owned or set())
    study = _load_study(spec, search.study_name, storage_url, spec.seed)
    missing = [t for t in study.get_trials(deepcopy=False)
               if t.state in _ROW_STATES and t.number not in skip
               and t.datetime_complete is not None
               and (cutoff is None or t.datetime_complete.astimezone() < cutoff)]
    by_number = {n: p for p in pops for n in (p.trial_numbers or [])}
    for t in missing:
        _record_unrecorded_trial(session, search.id, search.study_name, spec, t,
                                 by_number.get(t.number))
    return len(missing)


_ROW_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed"}


def _record_unrecorded_trial(session: Session, search_id: int, study_name: str,
                             spec: SearchSpec, t: FrozenTrial, pop: PopulationRow | None) -> None:
    """Our row for a finished Optuna trial whose worker's write never landed."""
    params = dict(t.params)
    family = str(params.pop(FAMILY_KEY, pop.family if pop is not None else "unknown"))
    hparams: dict[str, Any] = {k: params.pop(k) for k in ("lr", "weight_decay") if k in params}
    family_params = {k.removeprefix(f"{family}."): v for k, v in params.items()}
    state = _ROW_STATES[t.state]
    note = t.user_attrs.get("error") or (
        "recorded by the reconciler from Optuna: the worker's own write of this trial was "
        "lost (e.g. the database restarted); its epochs and curves are not stored")
    repo.add_trial(session, search_id=search_id, population_id=pop.id if pop else None,
                   study_name=study_name, trial_number=t.number, phase="search", family=family,
                   family_params=family_params, hparams=hparams,
                   seed=candidate_seed(spec.seed, t.number), state=state,
                   value=t.value if state == "complete" and len(t.values or []) == 1 else None,
                   error=str(note)[:4000], started_at=t.datetime_start,
                   finished_at=t.datetime_complete or utcnow())


def reconcile(
    sessions: Sessions,
    *,
    storage_url: str,
    stale_after_s: float,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    restart_pending_after_s: float | None = None,
) -> ReconcileReport:
    """One pass of the reconciler; idempotent, safe to run from several processes at once.

    1. Populations ``running`` whose heartbeat is older than ``stale_after_s``:
       failed (conditional UPDATE, so a live worker keeps its population), their
       still-RUNNING Optuna trials told FAIL and recorded as failed, and a fresh
       population of the same family and k queued (``attempts`` carried over; after
       ``max_attempts`` the population stays failed and the search goes on without it).
    2. RUNNING Optuna trials of active searches that no running population owns,
       older than ``stale_after_s``: told FAIL. Nothing stays RUNNING forever.
    3. Active searches whose populations are all finished but that never
       advanced (the worker died after its last write) are advanced; cancelled
       searches get their pending populations marked cancelled.
    4. Searches still ``pending`` after ``restart_pending_after_s`` (default
       ``stale_after_s``) are listed in ``restart``: their start message was lost.
    """
    report = ReconcileReport()
    with sessions() as session:
        stale_ids = [p.id for p in repo.stale_populations(session, older_than_s=stale_after_s)]
    for pop_id in stale_ids:
        _give_up(sessions, pop_id, storage_url, stale_after_s, max_attempts, report)

    with sessions() as session:
        active = [s.id for state in (*ACTIVE_SEARCH_STATES, "cancelled")
                  for s in repo.list_searches(session, state=state, limit=None)
                  if state != "cancelled" or _recent(s.finished_at, stale_after_s)]
        pending_cutoff = utcnow() - timedelta(
            seconds=restart_pending_after_s if restart_pending_after_s is not None
            else stale_after_s)
        report.restart = [s.id for s in repo.list_searches(session, state="pending", limit=None)
                          if s.created_at < pending_cutoff]
    for search_id in active:
        _sweep_orphans(sessions, search_id, storage_url, stale_after_s, report)
        with sessions() as session:
            pops = repo.list_populations(session, search_id=search_id)
            state = repo.get_search(session, search_id=search_id).state
        pending = any(p.state == "pending" for p in pops)
        if _unfinished(pops) and not (state == "cancelled" and pending):
            continue  # still in progress: the worker that finishes the last one advances it
        report.enqueue += advance_search(sessions, search_id=search_id, storage_url=storage_url)
        report.advanced.append(search_id)
    return report


def _recent(when: datetime | None, stale_after_s: float) -> bool:
    """A cancelled search is swept for a while after its cancel (its populations drain)."""
    if when is None:
        return True
    return (utcnow() - when).total_seconds() < max(3600.0, 10 * stale_after_s)
