"""Recovery: what a dead worker or an interrupted coordinator left behind, made whole.

* :func:`reconcile` (distributed mode; beat runs it every few seconds) fails what a
  dead worker left RUNNING, re-queues its population as a fresh one (up to
  ``max_attempts``) and advances searches that nobody advanced.
* :func:`release_interrupted` (embedded mode, on resume): the process that ran the
  search is known dead (its lock is free), so its running populations go back to
  ``pending`` with the trials they asked; the resumed search re-trains exactly those
  trials, so every planned trial is trained and recorded once.
* :func:`record_unrecorded`: finished Optuna trials whose row never landed get one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from store import repo
from store.tables import PopulationRow, SearchRow, utcnow

from ..control import ASKED_PHASES, CONTROL_PHASE, spec_for_phase, study_for_phase
from ..service import open_study
from ..space import FAMILY_KEY
from ..spec import SearchSpec
from .finish import advance_search, unfinished
from .population import candidate_seed
from .steps import ACTIVE_SEARCH_STATES, Sessions, new_task_id

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 3


def split_trial_params(params: dict[str, Any], family: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """An Optuna trial's flat params as (family parameters, shared hyperparameters)."""
    params = dict(params)
    params.pop(FAMILY_KEY, None)
    hparams = {k: params.pop(k) for k in ("lr", "weight_decay") if k in params}
    return {k.removeprefix(f"{family}."): v for k, v in params.items()}, hparams


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


def fail_running_trials(study: optuna.Study, numbers: Sequence[int], error: str,
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
        family = str(t.params.get(FAMILY_KEY, pop.slot_families()[0]))
        family_params, hparams = split_trial_params(t.params, family)
        repo.add_trial(session, search_id=pop.search_id, population_id=pop.id,
                       study_name=study_name, trial_number=t.number, phase=pop.phase,
                       family=family, family_params=family_params, hparams=hparams,
                       seed=candidate_seed(spec.seed, t.number), state="failed", error=error,
                       started_at=t.datetime_start, finished_at=utcnow())


def _retry(session: Session, pop: PopulationRow) -> int:
    """A fresh pending population repeating ``pop`` (same families, k, phase, epochs, sources)."""
    row = repo.add_population(session, search_id=pop.search_id, family=pop.family,
                              structural={}, k=pop.k, phase=pop.phase, task_id=new_task_id(),
                              families=pop.families, source_trial_numbers=pop.source_trial_numbers,
                              epochs=pop.epochs, rung=pop.rung)
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
        # A worker's parent that saw its child die says so on the row (expire_worker_populations).
        error = pop.error or (
            f"worker {worker} lost: no heartbeat since {beat.isoformat() if beat else '-'}")
        if not repo.fail_stale_population(session, population_id=pop_id,
                                          older_than_s=stale_after_s, error=error):
            return  # it heartbeated (or finished) meanwhile
        pop = repo.get_population(session, population_id=pop_id)
        search = repo.get_search(session, search_id=pop.search_id)
        spec = SearchSpec.model_validate(search.spec)
        report.stale.append(pop_id)
        if pop.phase in ASKED_PHASES and pop.trial_numbers:
            name = study_for_phase(search.study_name, pop.phase)
            study = open_study(spec_for_phase(spec, pop.phase), name, storage_url)
            failed = fail_running_trials(study, pop.trial_numbers, error)
            _record_lost_trials(session, pop, name, spec, failed, error)
            report.failed_trials += len(failed)
        if search.state in ACTIVE_SEARCH_STATES and pop.attempts < max_attempts:
            report.enqueue.append(_retry(session, pop))
        else:
            report.exhausted.append(pop_id)
            log.warning("population %s given up after %s attempts", pop_id, pop.attempts)


def _sweep_orphans(sessions: Sessions, search_id: int, storage_url: str, stale_after_s: float,
                   report: ReconcileReport) -> None:
    """Close what no pending or running population owns: Optuna trials RUNNING or without our row.

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
        # A pending population may own trials too: one handed back after a database
        # outage (``release_claim``) re-trains the trials it asked.
        owned = {n for p in pops if p.state in ("pending", "running")
                 for n in (p.trial_numbers or [])}
        study_name = search.study_name
    study = open_study(spec, study_name, storage_url)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.number not in owned]
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    failed: list[FrozenTrial] = []
    if running:
        failed = fail_running_trials(study, running, "orphaned: no running population owns this trial",
                              older_than=cutoff)
        report.failed_trials += len(failed)
    with sessions.begin() as session:
        search = repo.get_search(session, search_id=search_id)
        # the trials failed just now get their rows now: the search may finish before
        # the next pass, and finished searches are not swept
        report.recorded_trials += record_unrecorded(session, search, spec, pops, storage_url,
                                                     cutoff=cutoff, owned=owned,
                                                     now={t.number for t in failed})


def record_unrecorded(session: Session, search: SearchRow, spec: SearchSpec,
                       pops: Sequence[PopulationRow], storage_url: str, *,
                       cutoff: datetime | None, owned: set[int] | None = None,
                       now: set[int] | None = None, phase: str = "search") -> int:
    """Rows for finished Optuna trials that have none; returns how many were written.

    ``phase``: ``search`` (the search's study) or ``control`` (the control arm's).

    ``cutoff``: only trials finished before it (Optuna stamps naive local times),
    so a worker still committing its own row is left alone; ``None`` when no
    population of the search is unfinished, so no worker can be. ``now``: trial
    numbers recorded whatever the cutoff (the caller has just failed them itself).
    """
    recorded = {t.trial_number for t in repo.list_trials(session, search_id=search.id,
                                                          phase=phase, limit=None)}
    skip = recorded | (owned or set())
    study_name = study_for_phase(search.study_name, phase)
    study = open_study(spec_for_phase(spec, phase), study_name, storage_url)
    missing = [t for t in study.get_trials(deepcopy=False)
               if t.state in _ROW_STATES and t.number not in skip
               and t.datetime_complete is not None
               and (cutoff is None or t.number in (now or set())
                    or t.datetime_complete.astimezone() < cutoff)]
    by_number = {n: p for p in pops if p.phase == phase for n in (p.trial_numbers or [])}
    for t in missing:
        _record_unrecorded_trial(session, search.id, study_name, spec, t,
                                 by_number.get(t.number), phase)
    return len(missing)


_ROW_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
               TrialState.FAIL: "failed"}


def _record_unrecorded_trial(session: Session, search_id: int, study_name: str,
                             spec: SearchSpec, t: FrozenTrial, pop: PopulationRow | None,
                             phase: str = "search") -> None:
    """Our row for a finished Optuna trial whose worker's write never landed."""
    family = str(t.params.get(FAMILY_KEY, pop.family if pop is not None else "unknown"))
    family_params, hparams = split_trial_params(t.params, family)
    state = _ROW_STATES[t.state]
    note = t.user_attrs.get("error") or (
        "recorded by the reconciler from Optuna: the worker's own write of this trial was "
        "lost (e.g. the database restarted); its epochs and curves are not stored")
    repo.add_trial(session, search_id=search_id, population_id=pop.id if pop else None,
                   study_name=study_name, trial_number=t.number, phase=phase, family=family,
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
        if unfinished(pops) and not (state == "cancelled" and pending):
            continue  # still in progress: the worker that finishes the last one advances it
        report.enqueue += advance_search(sessions, search_id=search_id, storage_url=storage_url)
        report.advanced.append(search_id)
    return report


def _recent(when: datetime | None, stale_after_s: float) -> bool:
    """A cancelled search is swept for a while after its cancel (its populations drain)."""
    if when is None:
        return True
    return (utcnow() - when).total_seconds() < max(3600.0, 10 * stale_after_s)


# --------------------------------------------------------------------------- embedded resume

LOCAL_WORKER_PREFIX = "local:"  # workers named so are the embedded coordinator's children


def release_interrupted(sessions: Sessions, *, search_id: int, storage_url: str) -> str:
    """Make an interrupted embedded search resumable; returns the state it resumes in.

    Call only while holding the search's lock (so the process that ran it is gone).
    Its running populations go back to ``pending`` keeping their asked trials;
    Optuna trials that no population owns are told FAIL; finished Optuna trials
    without our row get one; populations whose trials all finished are complete.
    Raises Conflict when the search is finished, or trained by cluster workers
    (the reconciler resumes those).
    """
    from core.errors import Conflict

    with sessions.begin() as session:
        search = repo.lock_search(session, search_id=search_id)
        if search.state not in (*ACTIVE_SEARCH_STATES, "interrupted"):
            raise Conflict(f"search {search_id} is {search.state}: only an interrupted (or "
                           "running, once its process died) search can be resumed")
        pops = repo.list_populations(session, search_id=search_id)
        foreign = sorted({p.worker or "?" for p in pops if p.state == "running"
                          and not (p.worker or "").startswith(LOCAL_WORKER_PREFIX)})
        if foreign:
            raise Conflict(f"search {search_id} is trained by cluster workers ({', '.join(foreign)}); "
                           "the reconciler (`actsearch beat`) resumes it")
        for p in pops:
            if p.state == "running":
                repo.requeue_population(session, population_id=p.id)
        resumed = "finalizing" if any(p.phase == "finalist" for p in pops) else "running"
        if search.state == "interrupted":
            repo.transition_search(session, search_id=search_id, from_states=["interrupted"],
                                   to_state=resumed)
        else:
            resumed = search.state
        spec = SearchSpec.model_validate(search.spec)
        study_name = search.study_name
    study = open_study(spec, study_name, storage_url)
    with sessions.begin() as session:
        pops = repo.list_populations(session, search_id=search_id)
        orphans = _adopt_orphans(session, study, pops)
        if orphans:
            fail_running_trials(study, orphans, "interrupted before its population recorded it")
        search = repo.get_search(session, search_id=search_id)
        record_unrecorded(session, search, spec, pops, storage_url, cutoff=None)
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for p in pops:
            if (p.phase == "search" and p.state == "pending" and p.trial_numbers
                    and not running & set(p.trial_numbers)):
                repo.set_population_state(session, population_id=p.id, state="complete")
    if spec.control and any(p.phase == CONTROL_PHASE for p in pops):
        _release_control(sessions, search_id, spec, study_name, storage_url)
    return resumed


def _release_control(sessions: Sessions, search_id: int, spec: SearchSpec, study_name: str,
                     storage_url: str) -> None:
    """:func:`release_interrupted` for the control arm's study (its trial numbers are its own).

    Its finished trials without our row get one, and a pending control population whose
    trials all finished is complete; RUNNING control trials that no population owns are
    failed when the control round ends (:mod:`.control`).
    """
    study = open_study(spec_for_phase(spec, CONTROL_PHASE),
                       study_for_phase(study_name, CONTROL_PHASE), storage_url)
    with sessions.begin() as session:
        pops = repo.list_populations(session, search_id=search_id)
        search = repo.get_search(session, search_id=search_id)
        record_unrecorded(session, search, spec, pops, storage_url, cutoff=None,
                          phase=CONTROL_PHASE)
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        for p in pops:
            if (p.phase == CONTROL_PHASE and p.state == "pending" and p.trial_numbers
                    and not running & set(p.trial_numbers)):
                repo.set_population_state(session, population_id=p.id, state="complete")


def _adopt_orphans(session: Session, study: optuna.Study, pops: Sequence[PopulationRow]) -> list[int]:
    """Give RUNNING trials that no population owns to pending ones of their family.

    They were asked by a population interrupted before it recorded them; the
    population that adopts them trains them (and asks only what it still lacks), so
    the search's trial count stays its budget. Returns the trials nobody could take.
    """
    owned = {n for p in pops for n in (p.trial_numbers or [])}
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.number not in owned]
    left = []
    for t in orphans:
        family = t.params.get(FAMILY_KEY)  # None: interrupted before its first suggestion
        taker = next((p for p in pops if p.state == "pending" and p.phase == "search"
                      and (family is None or family in p.slot_families())
                      and len(p.trial_numbers or []) < p.k),
                     None)
        if taker is None:
            left.append(t.number)
            continue
        repo.record_asked_trials(session, population_id=taker.id,
                                 trial_numbers=[*(taker.trial_numbers or []), t.number])
    return left


def interrupt(sessions: Sessions, *, search_id: int, worker: str | None = None) -> None:
    """Mark a search ``interrupted`` (Ctrl-C, SIGTERM, shutdown, or its process found dead).

    The populations ``worker`` was training (None: any embedded coordinator's) go back
    to ``pending`` with their asked trials, so the resumed search finds them; the
    search leaves the active states (it no longer counts against the owner's limit).
    """
    with sessions.begin() as session:
        search = repo.lock_search(session, search_id=search_id)
        for p in repo.list_populations(session, search_id=search_id, state="running"):
            if p.worker == worker or (worker is None
                                      and (p.worker or "").startswith(LOCAL_WORKER_PREFIX)):
                repo.requeue_population(session, population_id=p.id)
        if search.state in ACTIVE_SEARCH_STATES:
            repo.transition_search(session, search_id=search_id,
                                   from_states=ACTIVE_SEARCH_STATES, to_state="interrupted")


def fail_search(sessions: Sessions, *, search_id: int, storage_url: str, error: str) -> bool:
    """Fail a search that cannot go on, with its in-flight work; True if it was unfinished.

    Its pending and running populations fail, its Optuna trials still RUNNING are
    told FAIL and recorded, so Optuna agrees with our rows. The clean-up runs even
    when the search was already marked failed (a coordinator that died half-way).
    """
    from core.errors import NotFound
    from store.tables import SEARCH_TERMINAL_STATES

    with sessions.begin() as session:
        try:
            row = repo.get_search(session, search_id=search_id)
        except NotFound:
            return False
        was_unfinished = row.state not in SEARCH_TERMINAL_STATES
        for pop in repo.list_populations(session, search_id=search_id):
            if pop.state in ("pending", "running"):
                repo.set_population_state(session, population_id=pop.id, state="failed",
                                          error=error[:4000])
        if was_unfinished or row.state == "failed":
            repo.set_search_state(session, search_id=search_id, state="failed", error=error)
        spec = SearchSpec.model_validate(row.spec)
        study_name = row.study_name
    try:
        for phase in ASKED_PHASES if spec.control else ("search",):
            try:
                study = open_study(spec_for_phase(spec, phase),
                                   study_for_phase(study_name, phase), storage_url)
            except KeyError:  # the control arm's study: created when the control starts
                continue
            running = [t.number for t in study.get_trials(deepcopy=False,
                                                          states=(TrialState.RUNNING,))]
            fail_running_trials(study, running, error)
            with sessions.begin() as session:
                search = repo.get_search(session, search_id=search_id)
                record_unrecorded(session, search, spec, repo.list_populations(
                    session, search_id=search_id), storage_url, cutoff=None, phase=phase)
    except Exception as exc:  # noqa: BLE001 - best effort: our rows already say what happened
        log.warning("could not close the Optuna trials of search %s: %s", search_id, exc)
    return was_unfinished
