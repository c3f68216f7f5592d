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

from store import repo
from store.tables import POPULATION_FINISHED_STATES, PopulationRow

from ..analysis.run import has_something_to_analyse
from ..protocol import Leaderboard, best_per_family, build_leaderboard, task_metric
from ..service import PreparedData, open_study
from ..spec import SearchSpec
from .control import advance_control, score_control_test
from .data import prepared_data
from .planner import MIXED, engine_k, plan_rung, sharing_groups
from .results import nothing_completed_error
from .scoring import Evaluator, engine_evaluate
from .steps import (
    ACTIVE_SEARCH_STATES,
    Sessions,
    add_planned,
    is_transient,
    new_task_id,
    rung_trials,
)

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
                   test_scorer: TestScorer | None = None,
                   evaluator: Evaluator = engine_evaluate) -> list[int]:
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
    populations marked cancelled. Finishing reads only our tables (no Optuna);
    ``evaluator`` computes the test metrics.
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
            if spec.racing:
                rung_ids = _plan_next_rung(session, search_id, spec, pops)
                if rung_ids:
                    return rung_ids  # the search stays running: the race goes on
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
            score_control_test(sessions, search_id=search_id, dataset_id=dataset_id, spec=spec,
                               evaluator=evaluator)
        _finish(sessions, search_id, dataset_id, spec, test_scorer, evaluator)
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


def _dataset_shape(session: Session, search_id: int) -> tuple[int, int]:
    dataset = repo.get_dataset(session, dataset_id=repo.get_search(
        session, search_id=search_id).dataset_id)
    n_outputs = (dataset.n_classes if dataset.task == "classification" else 1) or 1
    return dataset.n_features, n_outputs


def _plan_next_rung(session: Session, search_id: int, spec: SearchSpec,
                    pops: Sequence[PopulationRow]) -> list[int]:
    """Promote the best families of the rung just finished and plan the next rung (if any)."""
    from ..race import WARMUP_RUNG, promote, rung_ranking, schedule

    rungs = schedule(len(spec.families), spec.trials, spec.epochs)
    current = max((p.rung for p in pops if p.phase == "search" and p.rung is not None),
                  default=None)
    if current is None or current >= len(rungs) - 1:
        return []
    n_inputs, n_outputs = _dataset_shape(session, search_id)
    if current == WARMUP_RUNG:  # every family screens, on the warm-up's best points
        return add_planned(session, search_id, plan_rung(
            spec, 0, spec.families, n_inputs=n_inputs, n_outputs=n_outputs))
    raced = [f for f in spec.families
             if any(f in p.slot_families() for p in pops if p.rung == current)]
    trials = rung_trials(session, search_id, pops, current)
    losses = repo.best_val_losses(session, trial_ids=[t.id for t in trials])
    ranked = rung_ranking((t.family, t.state, t.value, losses.get(t.id)) for t in trials)
    promoted = promote(ranked, raced, rungs[current + 1].families)
    log.info("search %s rung %d: %s go on to rung %d", search_id, current,
             ", ".join(promoted), current + 1)
    return add_planned(session, search_id, plan_rung(
        spec, current + 1, promoted, n_inputs=n_inputs, n_outputs=n_outputs))


def _plan_finalists(session: Session, search_id: int, spec: SearchSpec) -> list[int]:
    """The finalists: each family's best search trial re-trained on the finalist seeds.

    Families that can share a population re-train in one (mixed) population, so the
    whole finalist phase is one batched pass where the engine can hold it. In a race
    only the last rung's families are finalists, from their trials at full epochs.
    """
    trials = repo.list_trials(session, search_id=search_id, phase="search", limit=None)
    if spec.racing:
        pops = repo.list_populations(session, search_id=search_id)
        last = max((p.rung for p in pops if p.phase == "search" and p.rung is not None),
                   default=None)
        if last is not None:
            trials = rung_trials(session, search_id, pops, last)
    best = best_per_family(trials)
    finalists = [f for f in spec.families if f in best]
    if spec.is_module:
        groups: list[list[str]] = [[f] for f in finalists]
        cap = spec.finalist_seeds
    else:
        split = sharing_groups(spec, finalists)
        groups = [*split.groups.values(), *([f] for f in split.solo)]
        n_inputs, n_outputs = _dataset_shape(session, search_id)
        cap = max(spec.finalist_seeds, engine_k(spec, finalists, n_inputs=n_inputs,
                                                n_outputs=n_outputs))
    ids = []
    for members in groups:
        slots = [(f, best[f].trial_number) for f in members for _ in range(spec.finalist_seeds)]
        per = max(spec.finalist_seeds, cap // spec.finalist_seeds * spec.finalist_seeds)
        for start in range(0, len(slots), per):
            chunk = slots[start:start + per]
            families = [f for f, _ in chunk]
            one = len(set(families)) == 1
            row = repo.add_population(
                session, search_id=search_id, family=families[0] if one else MIXED,
                families=None if one else families, structural={}, k=len(chunk),
                phase="finalist", task_id=new_task_id(),
                source_trial_numbers=None if one else [n for _, n in chunk])
            if one:
                row.source_trial_number = chunk[0][1]
            ids.append(row.id)
    session.flush()
    return ids


def _finish(sessions: Sessions, search_id: int, dataset_id: int, spec: SearchSpec,
            test_scorer: TestScorer | None = None,
            evaluator: Evaluator = engine_evaluate) -> None:
    """The test score of the final choice only, the leaderboard, then ``complete`` with best.

    The curve analysis (fits, distillation) is not done here: ``analysis_state`` becomes
    ``pending`` with ``complete`` (NULL when no complete trial has a trainable family)
    and :func:`search.analysis.run.analyse_search` runs after this commit. The data load
    before the row lock is taken, to keep the lock short.
    """
    data = prepared_data(sessions, dataset_id=dataset_id, spec=spec)
    metric = task_metric(data.dataset.task)
    with sessions.begin() as session:
        search = repo.lock_search(session, search_id=search_id)
        if search.state != "finalizing":
            return  # another worker finished it while we loaded the data
        trials = repo.list_trials(session, search_id=search_id, limit=None)
        budgets = repo.family_budgets(session, search_id=search_id, full_epochs=spec.epochs)
        board = build_leaderboard(trials, metric, budgets)
        if board.winner is not None and test_scorer is not None:
            test_scorer(session, search_id, data, board.winner.family)
            trials = repo.list_trials(session, search_id=search_id, limit=None)
            board = build_leaderboard(trials, metric, budgets)
        elif board.winner is not None:
            _score_test(session, search_id, spec, data, board.winner.family, evaluator)
            trials = repo.list_trials(session, search_id=search_id, limit=None)
            board = build_leaderboard(trials, metric, budgets)
        board.set_compute(repo.search_candidate_epochs(session, search_id=search_id))
        error = nothing_completed_error(trials)
        if error is not None:
            repo.set_search_state(session, search_id=search_id, state="failed", error=error)
            return
        repo.set_search_state(session, search_id=search_id, state="complete",
                              best=best_summary(board))
        # Fits and distillation run after this commit (search.analysis.run), never before it.
        search.analysis_state = "pending" if has_something_to_analyse(trials) else None


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
                family: str, evaluator: Evaluator = engine_evaluate) -> None:
    """Test metric of the final choice's re-runs only (never used to choose)."""
    s = data.splits
    arch = spec.arch_spec()
    for trial in repo.list_trials(session, search_id=search_id, phase="finalist", family=family,
                                  limit=None):
        if trial.state != "complete":
            continue
        state_dict, _, _ = repo.load_weights(session, trial_id=trial.id)
        value = evaluator(arch, family, trial.family_params, state_dict, np.asarray(s.X_test),
                         np.asarray(s.y_test), data.n_outputs, data.dataset.task)
        repo.set_trial_test_value(session, trial_id=trial.id, test_value=value)
