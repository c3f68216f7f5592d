"""The equal-compute control arm's steps: plan its rounds, its finalist, score it on test.

A search with ``control: relu`` does not complete when its finalists finish: the last
step of :func:`.finish.advance_search` calls :func:`advance_control` (search row lock
held, nothing pending or running) until it returns None, and only then scores the
control on test (:func:`score_control_test`) and finishes the search, whose leaderboard
then carries the control row and the verdict (:mod:`search.control`). Both modes run it:
the new populations go to whichever executor asked, like the finalists.

The budget: the main search's spent candidate-epochs ``M`` (epoch rows of its search and
finalist trials). The control's search phase gets ``M`` minus what its finalists will
cost (``finalist_seeds x epochs``), planned in rounds of ReLU populations of the main
search's K: each round plans just enough candidates to reach the target if none were
pruned (at most ``K - 1`` more when earlier rounds show that pruning saves epochs), and
the next round makes up what pruning saved. A round never overshoots by a population
(``K x epochs`` candidate-epochs), so the control's total equals ``M`` within one
population. A round that trained nothing (every population failed) ends the control
search, and so does a round cap, so a broken control cannot loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import optuna
from optuna.trial import TrialState
from sqlalchemy.orm import Session

from store import repo
from store.tables import PopulationRow, SearchRow, TrialRow

from ..control import (
    CONTROL_FAMILIES,
    CONTROL_FINALIST_PHASE,
    CONTROL_PHASE,
    MAIN_COMPUTE_PHASES,
    control_spec,
    control_study_name,
)
from ..protocol import best_per_family, build_leaderboard
from ..service import create_study
from ..spec import SearchSpec
from ..storage import optuna_storage
from .data import prepared_data
from .scoring import Evaluator, engine_evaluate
from .steps import Sessions, new_task_id

log = logging.getLogger(__name__)

#: Control populations beyond four times what an unpruned plan needs, at most (a safety cap).
MAX_EXTRA_ROUNDS = 50
ORPHAN_AT_ROUND_END = ("orphaned: asked by a control try cut short before it stored the trial "
                       "numbers; failed when the control round ended")


def ensure_control_study(spec: SearchSpec, study_name: str, storage_url: str) -> optuna.Study:
    """The control's Optuna study (created on first use, same sampler and pruner as the search)."""
    name = control_study_name(study_name)
    try:
        return optuna.load_study(study_name=name, storage=optuna_storage(storage_url))
    except KeyError:
        pass
    try:
        return create_study(control_spec(spec), name, storage_url)
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it meanwhile
        return optuna.load_study(study_name=name, storage=optuna_storage(storage_url))


def population_k(spec: SearchSpec, pops: Sequence[PopulationRow]) -> int:
    """The control's K: the largest population the main search trained (the engine fits it)."""
    main = [p.k for p in pops if p.phase == "search"]
    return max(main, default=spec.population_size or 1)


def control_target(spec: SearchSpec, compute: dict[str, int]) -> int:
    """Candidate-epochs the control's search phase should reach (its finalists make up the rest)."""
    spent = sum(compute.get(p, 0) for p in MAIN_COMPUTE_PHASES)
    return max(1, spent - spec.finalist_seeds * spec.epochs)


def round_candidates(*, target: int, spent: int, epochs: int, k: int,
                     trained: int) -> int:
    """Candidates the next round plans (0: the control search has its budget).

    ``trained``: control trials so far that trained at least an epoch; their mean cost
    (``spent / trained``) says how much pruning saves, but a round may never plan more
    than ``ceil(left / epochs) + k - 1`` candidates, so that even if none is pruned it
    overshoots the target by less than one population (``k x epochs``).
    """
    left = target - spent
    if left <= 0:
        return 0
    full = math.ceil(left / epochs)
    if trained <= 0 or spent <= 0:
        return full
    mean_cost = max(1.0, spent / trained)
    return max(full, min(math.ceil(left / mean_cost), full + k - 1))


def advance_control(session: Session, search: SearchRow, spec: SearchSpec,
                    storage_url: str | None) -> list[int] | None:
    """Plan the control's next populations; None once it is done (or has nothing to compare).

    Called under the search row lock with every population finished. Returns the new
    populations' ids (a round of the control search, or its finalist population).
    """
    pops = repo.list_populations(session, search_id=search.id)
    control = [p for p in pops if p.phase == CONTROL_PHASE]
    if any(p.phase == CONTROL_FINALIST_PHASE for p in pops):
        return None  # its finalists finished: score and finish
    if not control:
        trials = repo.list_trials(session, search_id=search.id, limit=None)
        if build_leaderboard(trials, "metric").winner is None:
            return None  # no final choice: nothing to compare the control with
        if storage_url is not None:  # Optuna writes first, before ours in this transaction
            ensure_control_study(spec, search.study_name, storage_url)
    elif storage_url is not None:
        _close_round(session, search, spec, pops, storage_url)
    trials = repo.list_trials(session, search_id=search.id, phase=CONTROL_PHASE, limit=None)
    compute = repo.search_candidate_epochs(session, search_id=search.id)
    k = population_k(spec, pops)
    target = control_target(spec, compute)
    n = round_candidates(target=target, spent=compute.get(CONTROL_PHASE, 0), epochs=spec.epochs,
                         k=k, trained=_trained(trials))
    if n > 0 and _may_plan_round(control, trials, target=target, k=k, spec=spec):
        return _plan(session, search.id, n, k)
    best = best_per_family(trials, phase=CONTROL_PHASE).get(CONTROL_FAMILIES[0])
    if best is None:
        log.warning("search %s: the control arm has no completed trial; finishing without it",
                    search.id)
        return None
    row = repo.add_population(session, search_id=search.id, family=best.family, structural={},
                              k=spec.finalist_seeds, phase=CONTROL_FINALIST_PHASE,
                              task_id=new_task_id())
    row.source_trial_number = best.trial_number
    session.flush()
    return [row.id]


def _trained(trials: Sequence[TrialRow]) -> int:
    """Control trials that trained (the pruning-aware cost estimate counts them)."""
    return sum(1 for t in trials if t.state in ("complete", "pruned"))


def _may_plan_round(control: Sequence[PopulationRow], trials: Sequence[TrialRow], *,
                    target: int, k: int, spec: SearchSpec) -> bool:
    """False when the control search should stop short: nothing trains, or too many rounds."""
    if not control:
        return True
    if not _trained(trials):
        log.warning("control arm: no control trial trained; stopping its search")
        return False
    unpruned = math.ceil(math.ceil(target / spec.epochs) / k)  # populations if none were pruned
    if len(control) >= 4 * unpruned + MAX_EXTRA_ROUNDS:
        log.warning("control arm: population cap reached; stopping its search short of its "
                    "budget")
        return False
    return True


def _plan(session: Session, search_id: int, n: int, k: int) -> list[int]:
    ids = []
    while n > 0:
        size = min(k, n)
        row = repo.add_population(session, search_id=search_id, family=CONTROL_FAMILIES[0],
                                  structural={}, k=size, phase=CONTROL_PHASE,
                                  task_id=new_task_id())
        ids.append(row.id)
        n -= size
    return ids


def _close_round(session: Session, search: SearchRow, spec: SearchSpec,
                 pops: Sequence[PopulationRow], storage_url: str) -> None:
    """Between rounds no control trial trains: fail what is still RUNNING, record the unrecorded."""
    from .recovery import fail_running_trials, record_unrecorded

    study = ensure_control_study(spec, search.study_name, storage_url)
    running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if running:
        fail_running_trials(study, running, ORPHAN_AT_ROUND_END)
    record_unrecorded(session, search, spec, pops, storage_url, cutoff=None, phase=CONTROL_PHASE)


def score_control_test(sessions: Sessions, *, search_id: int, dataset_id: int,
                       spec: SearchSpec, evaluator: Evaluator = engine_evaluate) -> int:
    """Test metric of the control finalist's seeds, as the final choice's is scored; returns how many.

    Idempotent: seeds already scored are skipped. The data load before the write.
    ``evaluator``: who computes the metric (:mod:`.scoring`).
    """
    data = prepared_data(sessions, dataset_id=dataset_id, spec=spec)
    s = data.splits
    arch = spec.arch_spec()
    scored = 0
    with sessions.begin() as session:
        for trial in repo.list_trials(session, search_id=search_id, phase=CONTROL_FINALIST_PHASE,
                                      limit=None):
            if trial.state != "complete" or trial.test_value is not None:
                continue
            state_dict, _, _ = repo.load_weights(session, trial_id=trial.id)
            value = evaluator(arch, trial.family, trial.family_params, state_dict,
                             np.asarray(s.X_test), np.asarray(s.y_test), data.n_outputs,
                             data.dataset.task)
            repo.set_trial_test_value(session, trial_id=trial.id, test_value=value)
            scored += 1
    return scored
