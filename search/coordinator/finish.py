"""The end of a search's phases: plan the finalists, score the final choice, complete.

:func:`advance_search` is the state machine's last step, called after every population
(by the embedded loop once no child is busy, by a Celery task after its population, by
the reconciler for searches nobody advanced). Split from :mod:`.steps` only for size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from optuna.trial import TrialState
from sqlalchemy.orm import Session

from models.engine import evaluate
from store import repo
from store.tables import POPULATION_FINISHED_STATES, PopulationRow

from ..protocol import Leaderboard, best_per_family, build_leaderboard, task_metric
from ..service import PreparedData, open_study
from ..spec import SearchSpec
from .control import advance_control, score_control_test
from .data import prepared_data
from .results import analyse_finalist_networks, nothing_completed_error
from .steps import ACTIVE_SEARCH_STATES, Sessions, is_transient, new_task_id

log = logging.getLogger(__name__)

ORPHAN_AT_PHASE_END = ("orphaned: asked by a try cut short before it stored the trial "
                       "numbers (e.g. the database went away); failed when the search phase ended")


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
    outage) are recorded from ``storage_url``, and trials still RUNNING (asked by a
    try that never stored their numbers) are failed and recorded, so the search
    phase ends with one row per Optuna trial and none RUNNING. After the finalists: the winner's test score, then
    ``complete`` with ``best``; with ``control: relu``, the control arm's rounds and
    finalist come in between (:mod:`.control`). A cancelled search only has its pending
    populations marked cancelled. Finishing reads only our tables (no Optuna).
    """
    from .recovery import fail_running_trials, record_unrecorded

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
                # No population is pending or running, so no search trial can still be
                # trained: one still RUNNING was asked by a try cut short before it
                # stored the trial numbers (a database outage). Failed, then recorded.
                study = open_study(spec, search.study_name, storage_url)
                running = [t.number for t in study.get_trials(
                    deepcopy=False, states=(TrialState.RUNNING,))]
                if running:
                    fail_running_trials(study, running, ORPHAN_AT_PHASE_END)
                record_unrecorded(session, search, spec, pops, storage_url, cutoff=None)
            new_ids = _plan_finalists(session, search_id, spec)
            repo.set_search_state(session, search_id=search_id, state="finalizing")
            if new_ids:
                return new_ids
        if spec.control:  # the equal-compute control arm runs once the finalists are done
            control_ids = advance_control(session, search, spec, storage_url)
            if control_ids:
                return control_ids
        dataset_id = search.dataset_id
    # Every finalist is finished (or there were none): score and complete.
    try:
        if spec.control:
            score_control_test(sessions, search_id=search_id, dataset_id=dataset_id, spec=spec)
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
        board.set_compute(repo.search_candidate_epochs(session, search_id=search_id))
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
            "delta_vs_baseline": w.delta_vs_baseline, "metric": board.metric,
            "control": board.control.as_dict() if board.control is not None else None}


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
