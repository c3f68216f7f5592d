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
* A transient error (:func:`is_transient`: the database went away, also under Optuna's
  ``StorageInternalError``) after the claim becomes :class:`ClaimInterrupted`; the
  task's retry hands the population back with :func:`release_claim` and claims it again.
* :func:`advance_search` moves the search on when its phase is finished: plans the
  finalists, then scores the final choice on test and completes the search.

No step imports Celery or touches processes; the executors hold that plumbing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.samplers import PartialFixedSampler
from optuna.trial import Trial, TrialState
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models.records import PopulationResult
from models.spec import Candidate, TrainConfig
from store import repo
from store.tables import utcnow

from ..control import ASKED_PHASES, FINALIST_SOURCES, spec_for_phase, study_for_phase
from ..race import WARMUP_RUNG
from ..service import PreparedData, open_study
from ..space import FAMILY_KEY, default_params, structural_params, suggest_candidate
from ..spec import SearchSpec
from .data import prepared_data
from .planner import MIXED, PlannedPopulation, plan_search_populations
from .population import (
    AskedTrial,
    PruningReporter,
    ask_population,
    candidate_seed,
    fail_population,
    own_structural,
    pruning_reporter,
    tell_population,
)
from .results import (
    TrialIdentity,
    record_failed_population,
    record_population,
)

log = logging.getLogger(__name__)

Sessions = sessionmaker[Session]

ACTIVE_SEARCH_STATES = ("running", "finalizing")
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
# Exceptions that only wrap their cause: Optuna's RDB storage turns every SQLAlchemy
# error of a commit into StorageInternalError ("... e.g. exceeding max length"), a
# refused connection included; an interrupted claim carries the error that cut it.
_WRAPPERS: tuple[type[BaseException], ...] = (optuna.exceptions.StorageInternalError,)


def is_transient(exc: BaseException) -> bool:
    """A database that went away (retry later), not a failure of the work itself.

    Looks through wrappers to their ``__cause__``: an Optuna ``StorageInternalError``
    raised *from* an ``OperationalError`` is a database outage, one raised from
    anything else (a value too long for its column) is not.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TRANSIENT_DB_ERRORS):
            return True
        if not isinstance(current, (*_WRAPPERS, ClaimInterrupted)):
            return False
        seen.add(id(current))
        current = current.__cause__
    return False


def root_cause(exc: BaseException) -> BaseException:
    """The error under the wrappers :func:`is_transient` looks through (for messages)."""
    current = exc
    while isinstance(current, (*_WRAPPERS, ClaimInterrupted)) and current.__cause__ is not None:
        current = current.__cause__
    return current


@dataclass(frozen=True)
class ClaimToken:
    """One claim of a population: who took it, at which attempt.

    The pair identifies a single try: a later claim of the same population (by a
    redelivered or re-sent message, even in the same process) counts a new attempt.
    """

    population_id: int
    worker: str
    attempt: int


class ClaimInterrupted(Exception):
    """A claimed population's try stopped on a transient error (raised ``from`` it).

    The population is still ``running`` under :attr:`token`, but nobody trains
    it: the task retries with the token, and the retry hands the population back
    with :func:`release_claim` before claiming it again, instead of leaving it to
    the reconciler's staleness limit.
    """

    def __init__(self, token: ClaimToken) -> None:
        super().__init__(f"population {token.population_id} interrupted "
                         f"(attempt {token.attempt} on {token.worker})")
        self.token = token


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
    return add_planned(session, search_id, plan_search_populations(
        spec, n_inputs=dataset.n_features, n_outputs=n_outputs or 1))


def add_planned(session: Session, search_id: int, planned: Sequence[PlannedPopulation],
                phase: str = "search") -> list[int]:
    """Create the pending rows of planned populations; returns their ids."""
    ids: list[int] = []
    for p in planned:
        row = repo.add_population(session, search_id=search_id, family=p.family,
                                  families=p.slot_families, structural={}, k=p.k, phase=phase,
                                  task_id=new_task_id(), epochs=p.epochs, rung=p.rung)
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
    family: str  # the one family, or "mixed"
    k: int
    source_trial_number: int | None
    trial_numbers: list[int] | None
    search_started_at: datetime | None
    worker: str
    attempt: int = 1
    families: list[str] = field(default_factory=list)  # per slot (a one-family one repeats it)
    source_trial_numbers: list[int] | None = None  # per slot, a mixed finalist population's
    epochs: int | None = None  # a raced rung's (None: the spec's)
    structural: dict[str, Any] = field(default_factory=dict)
    rung: int | None = None

    def __post_init__(self) -> None:
        if not self.families:
            self.families = [self.family] * self.k

    @property
    def token(self) -> ClaimToken:
        return ClaimToken(self.population_id, self.worker, self.attempt)

    @property
    def fidelity(self) -> int | None:
        """A raced population's epochs, kept on its trials (:data:`search.space.FIDELITY_ATTR`)
        so each is pruned only against trials trained as long; None when not raced."""
        return (self.epochs or self.spec.epochs) if self.rung is not None else None

    @property
    def mixed(self) -> bool:
        return self.family == MIXED

    @property
    def label(self) -> str:
        """What a progress line calls it: ``relu`` or ``mixed(8 families)``."""
        if not self.mixed:
            return self.family
        return f"{MIXED}({len(set(self.families))} families)"


def release_claim(sessions: Sessions, token: ClaimToken) -> bool:
    """Hand an interrupted claim's population back (``running`` -> ``pending``); True if it was.

    Only the exact claim of ``token`` is released (same worker and attempt, still
    running): the try that made it has given it up, so no live worker is robbed.
    The attempt it counted is taken back (a database outage is not the
    population's failure) and its asked trials are kept: the next claim re-trains
    those same trials.
    """
    with sessions.begin() as session:
        return repo.release_population(session, population_id=token.population_id,
                                       worker=token.worker, attempt=token.attempt)


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
        attempt = repo.get_population(session, population_id=population_id).attempts
        return Claimed(
            population_id=population_id, search_id=search.id,
            study_name=study_for_phase(search.study_name, pop.phase),
            dataset_id=search.dataset_id, spec=spec_for_phase(spec, pop.phase), phase=pop.phase,
            family=pop.family,
            k=pop.k, source_trial_number=pop.source_trial_number,
            trial_numbers=list(pop.trial_numbers) if pop.trial_numbers else None,
            search_started_at=search.started_at, worker=worker, attempt=attempt,
            families=pop.slot_families(),
            source_trial_numbers=(list(pop.source_trial_numbers)
                                  if pop.source_trial_numbers else None),
            epochs=pop.epochs, structural=dict(pop.structural or {}), rung=pop.rung,
        ), None


def may_ask_early(phase: str, rung: int | None, families: Sequence[str],
                  running: Sequence[Claimed]) -> bool:
    """Whether a pending population may be asked while ``running`` ones still train.

    Asked early, its trials are sampled before the running populations' results are told
    (as with Optuna's ``n_jobs``). That costs nothing when it would learn little from
    them: finalists ask nothing, a race's warm-up and first rung train fixed shared
    hyperparameters, and a population sharing no family with the running ones learns from
    them only through lr and weight decay. A population of the same family (an equal-budget
    search's next batch of ReLU) waits, so each batch learns from the last.
    """
    if phase not in ASKED_PHASES or rung in (WARMUP_RUNG, 0):
        return True
    mine = set(families)
    return not any(mine & set(c.families) for c in running)


def next_pending(session: Session, *, search_id: int) -> int | None:
    """The id of the search's oldest pending population (the embedded loop's queue)."""
    pending = repo.list_populations(session, search_id=search_id, state="pending")
    return pending[0].id if pending else None


# --------------------------------------------------------------------------- prepare


class NothingToTrain(RuntimeError):
    """Every trial the population asked is finished in Optuna: nothing is left to train.

    After an interruption this means its results were told before the database
    went away and only our own write was lost (see :func:`complete_told`).
    """


def complete_told(sessions: Sessions, claimed: Claimed) -> PopulationOutcome:
    """Mark a population whose trials Optuna already holds as complete, if still ours.

    Its trials' rows are written from Optuna's values by ``advance_search``
    (``record_unrecorded``) before the finalists are planned.
    """
    pid = claimed.population_id
    with sessions.begin() as session:
        row = repo.lock_population(session, population_id=pid)
        if row.state != "running" or row.worker != claimed.worker:
            return PopulationOutcome(pid, "lost", claimed.search_id)
        repo.set_population_state(session, population_id=pid, state="complete")
    return PopulationOutcome(pid, "complete", claimed.search_id)


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
    return [TrialIdentity(a.candidate(), a.act_params, a.hparams, trial_number=a.number,
                          family=a.family)
            for a in asked]


def _reopen_asked(study: optuna.Study, claimed: Claimed) -> list[AskedTrial]:
    """The population's asked trials, rebuilt from Optuna (a resumed population).

    Suggesting again on a trial returns the values it already holds, so the
    candidates are exactly those asked before the interruption; a trial interrupted
    between its ask and its suggestions gets its values now, with its family (the slot's
    it was asked for, as Optuna recorded it) and the population's structure fixed as for
    a fresh ask.
    """
    frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
    base = study.sampler
    shared = dict(claimed.structural)
    open_slots = list(claimed.families)
    asked: list[AskedTrial] = []
    try:
        for number in claimed.trial_numbers or []:
            ft = frozen.get(number)
            if ft is None or ft.state != TrialState.RUNNING:
                continue  # finished meanwhile (recorded by the recovery), or gone
            family = str(ft.params.get(FAMILY_KEY) or (open_slots or claimed.families)[0])
            if family in open_slots:
                open_slots.remove(family)
            study.sampler = PartialFixedSampler(
                {FAMILY_KEY: family, **own_structural(family, shared)}, base)
            trial = Trial(study, ft._trial_id)
            act_params, hparams = suggest_candidate(trial, family, claimed.spec)
            if not own_structural(family, shared):
                shared.update(structural_params(family, act_params))
            asked.append(AskedTrial(trial, family, act_params, hparams,
                                    candidate_seed(claimed.spec.seed, number),
                                    reported=frozenset(ft.intermediate_values)))
    finally:
        study.sampler = base
    return asked


def _unasked_slots(claimed: Claimed, asked: Sequence[AskedTrial]) -> list[str]:
    """The slot families no asked trial fills yet (in slot order)."""
    left = list(claimed.families)
    for a in asked:
        if a.family in left:
            left.remove(a.family)
    return left[: max(0, claimed.k - len(claimed.trial_numbers or []))]


def rung_trials(session: Session, search_id: int, pops: Sequence[Any], rung: int) -> list[Any]:
    """The search-phase trial rows of one race rung (``pops``: the search's populations)."""
    ids = {p.id for p in pops if p.phase == "search" and p.rung == rung}
    return [t for t in repo.list_trials(session, search_id=search_id, phase="search", limit=None)
            if t.population_id in ids]


def _shared_first_rung(sessions: Sessions, claimed: Claimed, asked: Sequence[AskedTrial],
                       missing: Sequence[str]) -> list[dict[str, Any]] | None:
    """The fixed lr and weight decay of a race's warm-up and first rung.

    Warm-up slot j trains the j-th shared point (:func:`search.race.shared_hparams`);
    at rung 0, trial j of every family trains the warm-up's j-th best point
    (:func:`search.race.first_rung_point`), so that rung compares families on the same
    hyperparameters, and each family's trial 0 takes its declared defaults
    (:func:`search.space.default_params`). j counts the family's slots in the rung's
    earlier populations, this one's asked trials, then the missing slots in order.
    """
    from ..race import first_rung_point, ranked_points, shared_hparams

    if claimed.rung not in (WARMUP_RUNG, 0) or not claimed.spec.racing:
        return None
    seen: dict[str, int] = {}
    ranked: list[dict[str, float]] = []
    with sessions() as session:
        pops = repo.list_populations(session, search_id=claimed.search_id)
        for pop in pops:
            if (pop.phase == "search" and pop.rung == claimed.rung
                    and pop.id < claimed.population_id):
                for f in pop.slot_families():
                    seen[f] = seen.get(f, 0) + 1
        if claimed.rung == 0:
            warm = rung_trials(session, claimed.search_id, pops, WARMUP_RUNG)
            ranked = ranked_points((t.state, t.value, t.hparams)
                                   for t in sorted(warm, key=lambda t: t.trial_number or 0))
    for a in asked:
        seen[a.family] = seen.get(a.family, 0) + 1
    lr, wd = claimed.spec.lr, claimed.spec.weight_decay
    out = []
    for family in missing:
        j = seen.get(family, 0)
        seen[family] = j + 1
        if claimed.rung == WARMUP_RUNG:
            out.append(shared_hparams(j, lr, wd))
            continue
        fixed = first_rung_point(j, ranked, lr, wd)
        if j == 0:  # each family's first screening trial: its declared defaults
            fixed.update(default_params(family, claimed.spec))
        out.append(fixed)
    return out


def _merged_structural(asked: Sequence[AskedTrial]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for a in asked:
        if not own_structural(a.family, merged):
            merged.update(structural_params(a.family, a.act_params))
    return merged


def prepare(sessions: Sessions, claimed: Claimed, storage_url: str, *,
            max_task_s: float | None = None, device: str = "cpu") -> Prepared:
    """Ask (or re-open) the population's trials and build its training job."""
    data = prepared_data(sessions, dataset_id=claimed.dataset_id, spec=claimed.spec)
    if claimed.phase not in ASKED_PHASES:
        identities = _finalist_identities(sessions, claimed)
        config = _train_config(claimed, identities[0].candidate.seed, max_task_s, device)
        return Prepared(claimed, data, identities, config)
    study = open_study(claimed.spec, claimed.study_name, storage_url,
                       population_seed(claimed.spec.seed, claimed.population_id))
    # A population asked in full before an interruption re-trains its trials still
    # RUNNING; one asked in part (or given orphaned trials on resume) asks the rest.
    asked = _reopen_asked(study, claimed) if claimed.trial_numbers else []
    missing = _unasked_slots(claimed, asked)
    if missing:
        fresh = ask_population(study, study.sampler, missing, None, claimed.spec,
                               fidelity=claimed.fidelity,
                               structural=_merged_structural(asked) or None,
                               fixed_per_slot=_shared_first_rung(sessions, claimed, asked, missing))
        asked += fresh
        with sessions.begin() as session:
            repo.record_asked_trials(
                session, population_id=claimed.population_id,
                trial_numbers=[*(claimed.trial_numbers or []), *(a.number for a in fresh)],
                structural=_merged_structural(asked))
    if not asked:
        raise NothingToTrain(f"population {claimed.population_id} has no running trial left")
    reporter = pruning_reporter(study, asked, multi_objective=claimed.spec.multi_objective,
                                fidelity=claimed.fidelity)
    config = _train_config(claimed, asked[0].seed, max_task_s, device)
    return Prepared(claimed, data, _identities(asked), config, study, asked, reporter)


def train_deadline(claimed: Claimed, max_task_s: float | None = None) -> float | None:
    """Seconds the population may train from now: the task's limit, and in the search
    phase what is left of the search's time budget (at least 1 s)."""
    deadline = max_task_s
    if claimed.phase == "search":
        left = time_left(claimed.spec, claimed.search_started_at)
        if left is not None:
            left = max(1.0, left)
            deadline = left if deadline is None else min(deadline, left)
    return deadline


def _train_config(claimed: Claimed, data_seed: int, max_task_s: float | None,
                  device: str) -> TrainConfig:
    spec = claimed.spec
    return TrainConfig(epochs=claimed.epochs or spec.epochs, batch_size=spec.batch_size,
                       optimizer=spec.optimizer, schedule=spec.schedule, data_seed=data_seed,
                       deadline_s=train_deadline(claimed, max_task_s), device=device)


def _finalist_identities(sessions: Sessions, claimed: Claimed) -> list[TrialIdentity]:
    """Re-runs of each slot family's best search (or control) trial on fresh seeds (seed j for its
    j-th slot)."""
    sources = claimed.source_trial_numbers or (
        [claimed.source_trial_number] * claimed.k if claimed.source_trial_number is not None
        else None)
    if not sources:
        raise RuntimeError(f"finalist population {claimed.population_id} names no source trial")
    seeds = finalist_seeds(claimed.spec)
    seen: dict[int, int] = {}
    identities = []
    with sessions() as session:
        for number in sources:
            best = repo.find_trial(session, study_name=claimed.study_name,
                                   trial_number=number,
                                   phase=FINALIST_SOURCES.get(claimed.phase, "search"))
            j = seen.get(number, 0)
            seen[number] = j + 1
            family_params, hparams = dict(best.family_params), dict(best.hparams)
            identities.append(TrialIdentity(
                Candidate(seed=seeds[j % len(seeds)], lr=hparams["lr"],
                          weight_decay=hparams["weight_decay"], act_params=dict(family_params),
                          family=best.family),
                dict(family_params), hparams, source_trial_number=number, family=best.family))
    return identities


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
            if job.reporter is not None:
                job.reporter.flush()  # the epochs' values before the trials are told
            told = tell_population(job.study, claimed.spec, job.asked, result.candidates,
                                   result.n_params, result.flops)
        weights = None
        if claimed.phase in FINALIST_SOURCES:
            weights = {"scaler": job.data.splits.scaler, "label_map": job.data.splits.label_map}
        record_population(session, search_id=claimed.search_id, study_name=claimed.study_name,
                          population_id=pid, phase=claimed.phase,
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
            population_id=pid, phase=claimed.phase,
            identities=identities, error=error, started_at=started_at)
        repo.set_population_state(session, population_id=pid, state="failed", error=error[:4000])
    return PopulationOutcome(pid, "failed", claimed.search_id, error=error[:500])


def fail_prepared(sessions: Sessions, job: Prepared, error: str) -> PopulationOutcome:
    """:func:`fail_owned` for a population whose training job was built."""
    if job.reporter is not None:
        try:
            job.reporter.flush()  # what the failed trials reached, for the dashboard
        except Exception:  # noqa: BLE001 - best effort; the failure is what matters
            log.warning("could not write the intermediate values of population %s",
                        job.claimed.population_id, exc_info=True)
    return fail_owned(sessions, job.claimed, error, study=job.study, asked=job.asked,
                      identities=job.identities, started_at=job.started_at)
