"""The search state machine's steps, over the database rows; both modes call these.

A search is the same sequence of calls in embedded and distributed mode:

    plan_search -> (claim -> prepare -> train -> commit_result | fail_owned)* -> advance_search

* :func:`plan_search` creates every search-phase population (the planner's
  round-robin, equal budgets), state ``pending``, and moves the search to ``running``.
* :func:`claim` takes one pending population (a conditional UPDATE, so a duplicate
  delivery does nothing); :func:`prepare` asks its K trials from Optuna *now*
  (later populations learn from earlier ones) and stores their numbers at once
  (recovery needs them), or rebuilds them from Optuna when the population was
  interrupted after its ask (a resumed search re-trains those same trials).
* The executor trains the :class:`Prepared` job: a training child of the embedded
  coordinator (:mod:`.local`) or the Celery task's own process (:mod:`.inline`).
* :func:`commit_result` tells Optuna and writes the rows under the population's row
  lock; :func:`fail_owned` records a population whose training raised.
* :func:`advance_search` moves the search on when its phase is finished: plans the
  finalists, then scores the final choice on test and completes the search.

No step imports Celery or touches processes; the executors hold that plumbing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import optuna
from optuna.samplers import PartialFixedSampler
from optuna.trial import Trial, TrialState
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models.engine import PopulationResult, evaluate
from models.spec import Candidate, TrainConfig
from store import repo
from store.tables import POPULATION_FINISHED_STATES, PopulationRow, utcnow

from ..planner import planner_for
from ..population import (
    AskedTrial,
    PruningReporter,
    ask_population,
    candidate_seed,
    fail_population,
    tell_population,
)
from ..protocol import Leaderboard, best_per_family, build_leaderboard, task_metric
from ..results import (
    TrialIdentity,
    analyse_finalist_networks,
    nothing_completed_error,
    record_failed_population,
    record_population,
)
from ..service import PreparedData, open_study
from ..space import FAMILY_KEY, structural_params, suggest_candidate
from ..spec import SearchSpec
from .data import prepared_data

log = logging.getLogger(__name__)

Sessions = sessionmaker[Session]

ACTIVE_SEARCH_STATES = ("running", "finalizing")
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


def is_transient(exc: BaseException) -> bool:
    """A database that went away (retry later), not a failure of the work itself."""
    return isinstance(exc, TRANSIENT_DB_ERRORS)


def population_seed(search_seed: int, population_id: int) -> int:
    """The sampler seed of one population's asks.

    Each population re-opens the study with a fresh sampler; seeding every one with
    the search's seed would replay the same random draws (TPE's start-up phase) in
    every population. Mixing in the population id keeps asks distinct and still
    reproducible from the database.
    """
    return (search_seed * 1_000_003 + population_id * 104_729) % (2**31 - 1)


def finalist_seeds(spec: SearchSpec) -> list[int]:
    """The fresh seeds the finalists re-train on."""
    return [(spec.seed + 1) * 10_007 + j * 101 for j in range(spec.finalist_seeds)]


def new_task_id() -> str:
    """A population's broker task id, planned on its row before it is enqueued."""
    return uuid.uuid4().hex


def time_left(spec: SearchSpec, started_at: datetime | None) -> float | None:
    """Seconds of the search's time budget left (0.0 when spent; None without a budget)."""
    if spec.time_budget_s is None or started_at is None:
        return None
    return max(0.0, spec.time_budget_s - (utcnow() - started_at).total_seconds())


# --------------------------------------------------------------------------- planning


def plan_search(session: Session, *, search_id: int, from_states: Sequence[str] = ("pending",)
                ) -> list[int]:
    """Create every search-phase population of a search about to run; returns their ids.

    The search moves to ``running`` in the same transaction, atomically, so a second
    ``search.start`` delivery plans nothing. ``from_states`` adds ``running`` for a
    search created already running by ``actsearch search`` (planned by the process
    that holds its lock, and only while it has no population yet). Each population
    gets its broker task id now, so the caller enqueues with a known id after commit.
    """
    search = repo.get_search(session, search_id=search_id)
    if search.state == "running" and "running" in from_states:
        if repo.list_populations(session, search_id=search_id):
            return []
    elif not repo.transition_search(session, search_id=search_id, from_states=from_states,
                                    to_state="running"):
        return []
    spec = SearchSpec.model_validate(search.spec)
    dataset = repo.get_dataset(session, dataset_id=search.dataset_id)
    n_outputs = dataset.n_classes if dataset.task == "classification" else 1
    planner = planner_for(spec, n_inputs=dataset.n_features, n_outputs=n_outputs or 1)
    ids: list[int] = []
    while (planned := planner.next()) is not None:
        family, k = planned
        row = repo.add_population(session, search_id=search_id, family=family, structural={},
                                  k=k, phase="search", task_id=new_task_id())
        ids.append(row.id)
    return ids


# --------------------------------------------------------------------------- claim


@dataclass
class PopulationOutcome:
    """What happened to one population.

    status: ``complete``, ``failed`` (training raised: its trials told FAIL),
    ``skipped`` (not pending: a duplicate delivery or a population already given
    up), ``cancelled`` (its search was cancelled or out of time) or ``lost`` (the
    reconciler took it over while it ran; results discarded).
    """

    population_id: int
    status: str
    search_id: int | None = None
    trials: dict[int, str] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Claimed:
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
    trial_numbers: list[int] | None
    search_started_at: datetime | None
    worker: str


def claim(sessions: Sessions, population_id: int, worker: str, task_id: str | None = None
          ) -> tuple[Claimed | None, PopulationOutcome | None]:
    """Take a pending population for ``worker``; or say why not (exactly one of the two)."""
    with sessions.begin() as session:
        pop = repo.get_population(session, population_id=population_id)
        search = repo.get_search(session, search_id=pop.search_id)
        if pop.state != "pending":
            return None, PopulationOutcome(population_id, "skipped", pop.search_id)
        spec = SearchSpec.model_validate(search.spec)
        reason = None
        if search.state not in ACTIVE_SEARCH_STATES:
            reason = f"search {search.state}"
        elif (pop.phase == "search" and not pop.trial_numbers
              and time_left(spec, search.started_at) == 0.0):
            reason = "time budget spent"  # asked trials still train: they are Optuna's RUNNING
        if reason is not None:
            repo.cancel_pending_populations(
                session, search_id=pop.search_id, population_id=population_id, reason=reason)
            return None, PopulationOutcome(population_id, "cancelled", pop.search_id, error=reason)
        if not repo.claim_population(session, population_id=population_id, worker=worker,
                                     task_id=task_id):
            return None, PopulationOutcome(population_id, "skipped", pop.search_id)
        return Claimed(
            population_id=population_id, search_id=search.id, study_name=search.study_name,
            dataset_id=search.dataset_id, spec=spec, phase=pop.phase, family=pop.family,
            k=pop.k, source_trial_number=pop.source_trial_number,
            trial_numbers=list(pop.trial_numbers) if pop.trial_numbers else None,
            search_started_at=search.started_at, worker=worker,
        ), None


def next_pending(session: Session, *, search_id: int) -> int | None:
    """The id of the search's oldest pending population (the embedded loop's queue)."""
    pending = repo.list_populations(session, search_id=search_id, state="pending")
    return pending[0].id if pending else None


# --------------------------------------------------------------------------- prepare


@dataclass
class Prepared:
    """A claimed population ready to train: who its candidates are and how to train them."""

    claimed: Claimed
    data: PreparedData
    identities: list[TrialIdentity]
    config: TrainConfig
    study: optuna.Study | None = None
    asked: list[AskedTrial] = field(default_factory=list)
    reporter: PruningReporter | None = None
    started_at: datetime = field(default_factory=utcnow)

    @property
    def candidates(self) -> list[Candidate]:
        return [i.candidate for i in self.identities]


def _identities(asked: Sequence[AskedTrial]) -> list[TrialIdentity]:
    return [TrialIdentity(a.candidate(), a.act_params, a.hparams, trial_number=a.number)
            for a in asked]


def _reopen_asked(study: optuna.Study, claimed: Claimed) -> list[AskedTrial]:
    """The population's asked trials, rebuilt from Optuna (a resumed population).

    Suggesting again on a trial returns the values it already holds, so the
    candidates are exactly those asked before the interruption; a trial interrupted
    between its ask and its suggestions gets its values now, with the family and
    the population's structure fixed as for a fresh ask.
    """
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    base = study.sampler
    fixed: dict[str, Any] = {FAMILY_KEY: claimed.family}
    asked: list[AskedTrial] = []
    try:
        for number in claimed.trial_numbers or []:
            ft = frozen.get(number)
            if ft is None or ft.state != TrialState.RUNNING:
                continue  # finished meanwhile (recorded by the recovery), or gone
            study.sampler = PartialFixedSampler(dict(fixed), base)
            trial = Trial(study, ft._trial_id)
            act_params, hparams = suggest_candidate(trial, claimed.family, claimed.spec)
            if not asked:
                fixed.update(structural_params(claimed.family, act_params))
            asked.append(AskedTrial(trial, act_params, hparams,
                                    candidate_seed(claimed.spec.seed, number),
                                    reported=frozenset(ft.intermediate_values)))
    finally:
        study.sampler = base
    return asked


def prepare(sessions: Sessions, claimed: Claimed, storage_url: str, *,
            max_task_s: float | None = None, device: str = "cpu") -> Prepared:
    """Ask (or re-open) the population's trials and build its training job."""
    data = prepared_data(sessions, dataset_id=claimed.dataset_id, spec=claimed.spec)
    if claimed.phase != "search":
        identities = _finalist_identities(sessions, claimed)
        config = _train_config(claimed, identities[0].candidate.seed, max_task_s, device)
        return Prepared(claimed, data, identities, config)
    study = open_study(claimed.spec, claimed.study_name, storage_url,
                       population_seed(claimed.spec.seed, claimed.population_id))
    # A population asked in full before an interruption re-trains its trials still
    # RUNNING; one asked in part (or given orphaned trials on resume) asks the rest.
    asked = _reopen_asked(study, claimed) if claimed.trial_numbers else []
    missing = claimed.k - len(claimed.trial_numbers or [])
    if missing > 0:
        shared = structural_params(claimed.family, asked[0].act_params) if asked else None
        asked += ask_population(study, study.sampler, claimed.family, missing, claimed.spec,
                                structural=shared)
        with sessions.begin() as session:
            repo.record_asked_trials(
                session, population_id=claimed.population_id,
                trial_numbers=[*(claimed.trial_numbers or []), *(a.number for a in asked[-missing:])],
                structural=structural_params(claimed.family, asked[0].act_params))
    if not asked:
        raise RuntimeError(f"population {claimed.population_id} has no running trial left")
    reporter = PruningReporter(asked, multi_objective=claimed.spec.multi_objective)
    config = _train_config(claimed, asked[0].seed, max_task_s, device)
    return Prepared(claimed, data, _identities(asked), config, study, asked, reporter)


def _train_config(claimed: Claimed, data_seed: int, max_task_s: float | None,
                  device: str) -> TrainConfig:
    spec = claimed.spec
    deadline = max_task_s
    if claimed.phase == "search":
        left = time_left(spec, claimed.search_started_at)
        if left is not None:
            left = max(1.0, left)
            deadline = left if deadline is None else min(deadline, left)
    return TrainConfig(epochs=spec.epochs, batch_size=spec.batch_size, optimizer=spec.optimizer,
                       schedule=spec.schedule, data_seed=data_seed, deadline_s=deadline,
                       device=device)


def _finalist_identities(sessions: Sessions, claimed: Claimed) -> list[TrialIdentity]:
    """Re-runs of the family's best search trial on fresh seeds."""
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


# --------------------------------------------------------------------------- tell and record


def _still_running(study: optuna.Study, numbers: Sequence[int]) -> bool:
    trials = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    return all(trials.get(n) == TrialState.RUNNING for n in numbers)


def commit_result(sessions: Sessions, job: Prepared, result: PopulationResult
                  ) -> PopulationOutcome:
    """Tell Optuna and write the rows, holding the population's row lock.

    The reconciler gives a population up with a conditional UPDATE on the same
    row, so it waits for this transaction and then finds the population
    complete; or it went first, and this worker finds the row no longer its own
    and discards its results (the retry population trains them again).
    """
    claimed = job.claimed
    pid = claimed.population_id
    with sessions.begin() as session:
        row = repo.lock_population(session, population_id=pid)
        if row.state != "running" or row.worker != claimed.worker:
            return PopulationOutcome(pid, "lost", claimed.search_id)
        told: dict[int, str] | None = None
        if job.study is not None:
            if not _still_running(job.study, [a.number for a in job.asked]):
                return PopulationOutcome(pid, "lost", claimed.search_id)
            told = tell_population(job.study, claimed.spec, job.asked, result.candidates,
                                   result.n_params, result.flops)
        weights = None
        if claimed.phase == "finalist":
            weights = {"scaler": job.data.splits.scaler, "label_map": job.data.splits.label_map}
        record_population(session, search_id=claimed.search_id, study_name=claimed.study_name,
                          population_id=pid, phase=claimed.phase, family=claimed.family,
                          identities=job.identities, result=result, told=told,
                          save_weights_with=weights, started_at=job.started_at)
        repo.set_population_state(session, population_id=pid, state="complete")
    return PopulationOutcome(pid, "complete", claimed.search_id, trials=told or {})


def fail_owned(sessions: Sessions, claimed: Claimed, error: str, *,
               study: optuna.Study | None = None, asked: Sequence[AskedTrial] = (),
               identities: Sequence[TrialIdentity] = (),
               started_at: datetime | None = None) -> PopulationOutcome:
    """A training error (not transient): FAIL its trials and the population, if still ours.

    Each candidate gets a ``failed`` trial row carrying the error, so the failure
    shows in the search's trials and Optuna's trial count matches ours.
    """
    pid = claimed.population_id
    with sessions.begin() as session:
        row = repo.lock_population(session, population_id=pid)
        if row.state != "running" or row.worker != claimed.worker:
            return PopulationOutcome(pid, "lost", claimed.search_id)
        if study is not None and asked:
            running = [a for a in asked if _still_running(study, [a.number])]
            fail_population(study, running, error)
            told = {a.number for a in running}
            identities = [i for i in identities if i.trial_number in told]
        record_failed_population(
            session, search_id=claimed.search_id, study_name=claimed.study_name,
            population_id=pid, phase=claimed.phase, family=claimed.family,
            identities=identities, error=error, started_at=started_at)
        repo.set_population_state(session, population_id=pid, state="failed", error=error[:4000])
    return PopulationOutcome(pid, "failed", claimed.search_id, error=error[:500])


def fail_prepared(sessions: Sessions, job: Prepared, error: str) -> PopulationOutcome:
    """:func:`fail_owned` for a population whose training job was built."""
    return fail_owned(sessions, job.claimed, error, study=job.study, asked=job.asked,
                      identities=job.identities, started_at=job.started_at)


# --------------------------------------------------------------------------- advancing a search


def unfinished(pops: Sequence[PopulationRow], phase: str | None = None) -> list[PopulationRow]:
    """The populations still pending or running (of one phase, or all)."""
    return [p for p in pops if p.state not in POPULATION_FINISHED_STATES
            and (phase is None or p.phase == phase)]


#: Scores the final choice's finalists on test in place of the built-in network's
#: evaluation: ``(session, search_id, data, family)``. A user-module search
#: (``actsearch.search_module``) passes one, since only its process can build the module.
TestScorer = Callable[[Session, int, PreparedData, str], None]


def advance_search(sessions: Sessions, *, search_id: int,
                   storage_url: str | None = None,
                   test_scorer: TestScorer | None = None) -> list[int]:
    """Move a search on when its current phase is finished; returns populations to train.

    Holds the search row lock, so when two workers finish the last two
    populations at once exactly one plans the finalists (the other then sees
    ``finalizing``). Before the finalists are planned, Optuna trials that
    finished without our row (their worker's write was lost to a database
    outage) are recorded from ``storage_url``, so the search phase ends with one
    row per Optuna trial. After the finalists: the winner's test score, then
    ``complete`` with ``best``. A cancelled search only has its pending
    populations marked cancelled. Finishing reads only our tables (no Optuna).
    """
    from .recovery import record_unrecorded

    with sessions.begin() as session:
        search = repo.lock_search(session, search_id=search_id)
        if search.state == "cancelled":
            repo.cancel_pending_populations(session, search_id=search_id,
                                            reason="search cancelled")
            return []
        if search.state not in ACTIVE_SEARCH_STATES:
            return []
        pops = repo.list_populations(session, search_id=search_id)
        if unfinished(pops):
            return []
        spec = SearchSpec.model_validate(search.spec)
        if search.state == "running":
            if storage_url is not None:
                record_unrecorded(session, search, spec, pops, storage_url, cutoff=None)
            new_ids = _plan_finalists(session, search_id, spec)
            repo.set_search_state(session, search_id=search_id, state="finalizing")
            if new_ids:
                return new_ids
        dataset_id = search.dataset_id
    # Every finalist is finished (or there were none): score and complete.
    try:
        _finish(sessions, search_id, dataset_id, spec, test_scorer)
    except Exception as exc:
        if is_transient(exc):
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
                                  task_id=new_task_id())
        row.source_trial_number = best[family].trial_number
        ids.append(row.id)
    session.flush()
    return ids


def _finish(sessions: Sessions, search_id: int, dataset_id: int, spec: SearchSpec,
            test_scorer: TestScorer | None = None) -> None:
    """The test score of the final choice only, the leaderboard, then ``complete`` with best.

    The data (and torch, for the test evaluation) load before the row lock is
    taken, to keep the lock short.
    """
    data = prepared_data(sessions, dataset_id=dataset_id, spec=spec)
    metric = task_metric(data.dataset.task)
    with sessions.begin() as session:
        search = repo.lock_search(session, search_id=search_id)
        if search.state != "finalizing":
            return  # another worker finished it while we loaded the data
        trials = repo.list_trials(session, search_id=search_id, limit=None)
        board = build_leaderboard(trials, metric)
        if board.winner is not None and test_scorer is not None:
            test_scorer(session, search_id, data, board.winner.family)
            trials = repo.list_trials(session, search_id=search_id, limit=None)
            board = build_leaderboard(trials, metric)
        elif board.winner is not None:
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
                              best=best_summary(board))


def best_summary(board: Leaderboard) -> dict[str, Any] | None:
    """What a finished search row says of its final choice (``SearchRow.best``)."""
    if board.winner is None:
        return None
    w, b = board.winner, board.baseline
    return {"family": w.family, "mean": w.mean, "ci95": w.ci95, "test_mean": w.test_mean,
            "test_ci95": w.test_ci95, "baseline_mean": b.mean if b else None,
            "delta_vs_baseline": w.delta_vs_baseline, "metric": board.metric}


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
