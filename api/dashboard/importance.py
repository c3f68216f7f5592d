"""JSON read from a search's Optuna study: parameter importance and intermediate values.

Optuna owns trial state (DESIGN.md), so what only the study knows is read from
it: the importance of each searched parameter (Optuna's evaluators) and the
per-epoch values each trial reported (what the pruner saw). Both are read-only.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Annotated, Any, Literal

import optuna
from fastapi import APIRouter, Query, Request
from optuna.importance import (
    FanovaImportanceEvaluator,
    MeanDecreaseImpurityImportanceEvaluator,
    PedAnovaImportanceEvaluator,
)
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.deps import FinishedDep, PrincipalDep, SessionDep, SlowDep
from api.schemas import ErrorPublic
from search.service import read_study
from search.storage import optuna_storage
from store import repo

router = APIRouter(prefix="/searches", tags=["searches"])

Evaluator = Literal["fanova", "mean_decrease_impurity", "ped_anova"]
MIN_COMPLETE = 2
_EVALUATORS: dict[str, Any] = {
    "fanova": lambda: FanovaImportanceEvaluator(seed=0),
    "mean_decrease_impurity": lambda: MeanDecreaseImpurityImportanceEvaluator(seed=0),
    "ped_anova": lambda: PedAnovaImportanceEvaluator(),
}
_CACHE_SIZE = 64
_cache: OrderedDict[tuple[str, str, int, int], ImportancePublic] = OrderedDict()
_lock = threading.Lock()


class ParamImportance(BaseModel):
    param: str
    importance: float


class ImportancePublic(BaseModel):
    search_id: int
    evaluator: Evaluator
    n_complete: int = Field(description="completed search-phase trials the evaluator used")
    importances: list[ParamImportance] = Field(description="highest first, summing to 1")
    message: str | None = Field(default=None, description="why the list is empty, if it is")


class IntermediateTrial(BaseModel):
    number: int
    state: Literal["running", "complete", "pruned", "failed", "waiting"]
    family: str | None
    value: float | None
    steps: list[int]
    values: list[float | None]


class IntermediatePublic(BaseModel):
    search_id: int
    directions: list[str]
    trials: list[IntermediateTrial]


def _storage(request: Request) -> optuna.storages.RDBStorage:
    """The process's Optuna storage for the service's database (not one per request)."""
    return optuna_storage(request.app.state.settings.resolved_database_url)


def _study(request: Request, study_name: str) -> optuna.Study:
    return read_study(study_name, request.app.state.settings.resolved_database_url)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@router.get("/{search_id}/importance", response_model=ImportancePublic,
            responses={404: {"model": ErrorPublic}})
async def get_importance(
    search_id: int,
    session: SessionDep,
    request: Request,
    principal: PrincipalDep,
    slow: SlowDep,
    finished: FinishedDep,
    evaluator: Annotated[Evaluator, Query(description="Optuna importance evaluator")] = "fanova",
) -> ImportancePublic:
    """Importance of each searched parameter (family included) for the validation metric."""
    row = repo.get_search(session, search_id=search_id, owner=principal.scope)
    kept = finished.peek(row, "importance", evaluator)
    if kept is not None:
        return kept
    out = await slow.run_shared(("importance", search_id, evaluator), principal.owner,
                                "importance", _cached_importance, session, request,
                                search_id=search_id, owner=principal.scope, evaluator=evaluator)
    finished.put(row, "importance", evaluator, out)
    return out


def _cached_importance(session: Session, request: Request, *, search_id: int,
                       owner: str | None, evaluator: Evaluator) -> ImportancePublic:
    row = repo.get_search(session, search_id=search_id, owner=owner)
    study = _study(request, row.study_name)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    key = (row.study_name, evaluator, len(complete), len(study.trials))
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    out = _importance(search_id, study, complete, evaluator)
    with _lock:
        _cache[key] = out
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return out


def _importance(search_id: int, study: optuna.Study, complete: list[FrozenTrial],
                evaluator: Evaluator) -> ImportancePublic:
    def empty(message: str) -> ImportancePublic:
        return ImportancePublic(search_id=search_id, evaluator=evaluator,
                                n_complete=len(complete), importances=[], message=message)

    if len(complete) < MIN_COMPLETE:
        return empty(f"parameter importance needs at least {MIN_COMPLETE} completed trials; "
                     f"{len(complete)} so far")
    # Multi-objective studies: the importance for the first value (the metric).
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    try:
        raw = optuna.importance.get_param_importances(
            study, evaluator=_EVALUATORS[evaluator](), target=target, normalize=True)
    except (RuntimeError, ValueError) as exc:  # e.g. no parameter varies yet
        return empty(f"importance not available yet: {exc}")
    items = [ParamImportance(param=k, importance=float(v)) for k, v in raw.items()
             if math.isfinite(v)]
    if not items:
        return empty("no searched parameter varies across the completed trials")
    return ImportancePublic(search_id=search_id, evaluator=evaluator, n_complete=len(complete),
                            importances=items)


_STATES = {TrialState.RUNNING: "running", TrialState.COMPLETE: "complete",
           TrialState.PRUNED: "pruned", TrialState.FAIL: "failed", TrialState.WAITING: "waiting"}


@router.get("/{search_id}/intermediate", response_model=IntermediatePublic,
            responses={404: {"model": ErrorPublic}})
async def get_intermediate_values(search_id: int, session: SessionDep, request: Request,
                                  principal: PrincipalDep,
                                  finished: FinishedDep) -> IntermediatePublic:
    """Per-epoch validation values every search trial reported to the pruner (pruned included)."""
    row = repo.get_search(session, search_id=search_id, owner=principal.scope)
    return finished.get(row, "intermediate", None,
                        lambda: _intermediate(search_id, _storage(request), row.study_name))


_study_ids: dict[tuple[str, str], int] = {}  # (database, study name) -> id: fixed once made


def _intermediate(search_id: int, storage: optuna.storages.BaseStorage,
                  study_name: str) -> IntermediatePublic:
    """Straight from the storage, without ``load_study`` (a third of the cost, measured)."""
    key = (str(getattr(storage, "url", "")), study_name)
    study_id = _study_ids.get(key)
    if study_id is None:
        study_id = _study_ids[key] = storage.get_study_id_from_name(study_name)
    trials = []
    for t in storage.get_all_trials(study_id, deepcopy=False):
        steps = sorted(t.intermediate_values)
        value = t.values[0] if t.values else None
        trials.append(IntermediateTrial(
            number=t.number, state=_STATES[t.state], family=t.params.get("family"),
            value=_finite(value), steps=steps,
            values=[_finite(t.intermediate_values[s]) for s in steps],
        ))
    return IntermediatePublic(
        search_id=search_id,
        directions=[d.name.lower() for d in storage.get_study_directions(study_id)],
        trials=trials)
