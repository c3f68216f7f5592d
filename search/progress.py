"""What a search looks like while it runs and once it is done, read from the database only.

Shared by the API (``GET /searches/{id}``, the leaderboard) and the CLI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from store import repo
from store.tables import SEARCH_TERMINAL_STATES, SearchRow, utcnow

from .control import CONTROL_FINALIST_PHASE, CONTROL_PHASE, CONTROL_PHASES, MAIN_COMPUTE_PHASES
from .protocol import Leaderboard, build_leaderboard, task_metric
from .spec import SearchSpec


def _elapsed(row: SearchRow) -> float | None:
    if row.started_at is None:
        return None
    end: datetime = row.finished_at or utcnow()
    return max(0.0, (end - row.started_at).total_seconds())


def search_progress(session: Session, *, row: SearchRow) -> dict[str, Any]:
    """Trials done/pruned/failed/running of the budget, best so far, finalists, elapsed."""
    spec = SearchSpec.model_validate(row.spec)
    trials = repo.search_trial_counts(session, search_id=row.id)
    pops = repo.search_population_counts(session, search_id=row.id)
    search_t = trials.get("search", {})
    complete, pruned, failed = (search_t.get(s, 0) for s in ("complete", "pruned", "failed"))
    unfinished = ("pending", "running")
    # candidates training now (a pending population's trials have not started)
    running = sum(k for ph in pops.values() for st, (_, k) in ph.items() if st == "running")
    finalists_total, finalists_done = _finalist_families(session, row.id) if pops.get(
        "finalist") else (0, 0)
    best = repo.best_search_trial(session, search_id=row.id)
    if row.state in SEARCH_TERMINAL_STATES:
        phase = "done"
    elif row.state == "pending":
        phase = "pending"
    elif any(pops.get(p) for p in CONTROL_PHASES):
        phase = "control"
    elif finalists_total or row.state == "finalizing":
        phase = "finalists"
    else:
        phase = "search"
    # Retried populations (a dead worker's, in distributed mode) ask fresh trials: the
    # budget shown counts every trial planned so far, so "done" never exceeds it.
    pending = sum(k for st, (_, k) in pops.get("search", {}).items() if st in unfinished)
    budget = max(spec.planned_trials(),
                 complete + pruned + failed + pending)
    return {
        "state": row.state,
        "phase": phase,
        "budget": budget,
        "done": complete + pruned + failed,
        "complete": complete,
        "pruned": pruned,
        "failed": failed,
        "running": running,
        "best_value": best.value if best is not None else None,
        "best_family": best.family if best is not None else None,
        "best_trial_id": best.id if best is not None else None,
        "finalists_total": finalists_total or len(spec.families),
        "finalists_done": finalists_done,
        "elapsed_s": _elapsed(row),
        "control": _control_progress(session, row, spec, pops) if spec.control else None,
    }


def _control_progress(session: Session, row: SearchRow, spec: SearchSpec,
                      pops: dict[str, dict[str, tuple[int, int]]]) -> dict[str, Any]:
    """How far the equal-compute control arm is: its candidate-epochs against the search's."""
    compute = repo.search_candidate_epochs(session, search_id=row.id)
    trials = repo.search_trial_counts(session, search_id=row.id).get(CONTROL_PHASE, {})
    finalists = pops.get(CONTROL_FINALIST_PHASE, {})
    return {
        "family": "relu",
        "candidate_epochs": sum(compute.get(p, 0) for p in CONTROL_PHASES),
        "target_candidate_epochs": sum(compute.get(p, 0) for p in MAIN_COMPUTE_PHASES),
        "trials": sum(trials.values()),
        "running": sum(k for ph in CONTROL_PHASES for st, (_, k) in pops.get(ph, {}).items()
                       if st == "running"),
        "finalists_done": bool(finalists) and all(st not in ("pending", "running")
                                                  for st in finalists),
    }


def _finalist_families(session: Session, search_id: int) -> tuple[int, int]:
    """Families in the finalist phase, and those whose every re-run is finished (a mixed
    finalist population holds several families; a one-family one, one)."""
    state: dict[str, bool] = {}
    for pop_state, families in repo.phase_population_states(session, search_id=search_id,
                                                            phase="finalist"):
        finished = pop_state not in ("pending", "running")
        for family in set(families):
            state[family] = state.get(family, True) and finished
    return len(state), sum(state.values())


def search_analysis(row: SearchRow) -> dict[str, Any]:
    """The curve analysis of a search (fits, distillation; :mod:`search.analysis.run`).

    ``state``: ``pending``, ``running``, ``done``, ``failed`` (``error`` says why), or None
    where there is nothing to analyse (no complete trainable trial, a search not
    complete, or one finished before analysis ran apart from the search).
    """
    return {"state": row.analysis_state, "error": row.analysis_error}


def _metric(session: Session, row: SearchRow) -> str:
    if row.best and row.best.get("metric"):
        return str(row.best["metric"])
    task = repo.get_dataset(session, dataset_id=row.dataset_id).task
    return task_metric(task)



def search_leaderboard(session: Session, *, row: SearchRow) -> Leaderboard:
    """The leaderboard of a search from its stored trials (finalists per family, baseline marked)."""
    trials = repo.list_trials(session, search_id=row.id, limit=None)
    spec = SearchSpec.model_validate(row.spec)
    board = build_leaderboard(trials, _metric(session, row), repo.family_budgets(
        session, search_id=row.id, full_epochs=spec.epochs))
    if board.control is not None:
        board.set_compute(repo.search_candidate_epochs(session, search_id=row.id))
    return board
