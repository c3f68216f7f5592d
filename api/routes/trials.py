"""``/trials``: query trials across searches; one trial's details and learned activations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api import services
from api.deps import PageDep, PrincipalDep, SessionDep
from api.schemas import (
    ArchitectureKind,
    ErrorPublic,
    Phase,
    SortOrder,
    TrialActivations,
    TrialDetail,
    TrialPublic,
    TrialSort,
    TrialsPublic,
    TrialState,
)
from store import repo

router = APIRouter(prefix="/trials", tags=["trials"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorPublic}}


@router.get("", response_model=TrialsPublic, responses=_NOT_FOUND)
async def query_trials(
    session: SessionDep,
    page: PageDep,
    principal: PrincipalDep,
    family: str | None = None,
    dataset: Annotated[str | None, Query(description="dataset id, or a name (all versions)")] = None,
    min_value: Annotated[float | None, Query(description="validation metric at least",
                                           allow_inf_nan=False)] = None,
    max_value: Annotated[float | None, Query(description="validation metric at most",
                                           allow_inf_nan=False)] = None,
    architecture: Annotated[ArchitectureKind | None, Query(description="mlp, cnn, transformer or resnet")] = None,
    state: TrialState | None = None,
    phase: Phase | None = None,
    sort: TrialSort = "value",
    order: SortOrder = "desc",
) -> TrialsPublic:
    """Trials across every search, filtered by family, dataset, metric range, architecture."""
    owner = principal.scope
    dataset_ids = (services.resolve_trial_dataset(session, dataset=dataset, owner=owner)
                   if dataset else None)
    search_ids = (repo.search_ids_by_architecture(session, kind=architecture, owner=owner)
                  if architecture else None)
    rows, count = repo.query_trials(
        session, search_ids=search_ids, dataset_ids=dataset_ids, family=family, state=state,
        phase=phase, min_value=min_value, max_value=max_value, owner=owner,
        order_by=services.trial_sort_column(sort), descending=order == "desc",
        limit=page.limit, offset=page.offset,
    )
    return TrialsPublic(data=[TrialPublic.model_validate(r) for r in rows], count=count)


@router.get("/{trial_id}", response_model=TrialDetail, responses=_NOT_FOUND)
async def get_trial(trial_id: int, session: SessionDep, principal: PrincipalDep) -> TrialDetail:
    """One trial: hyperparameters, family parameters, per-epoch curve, statistics, timings."""
    return TrialDetail.model_validate(
        services.trial_detail(session, trial_id=trial_id, owner=principal.scope))


@router.get("/{trial_id}/activations", response_model=TrialActivations, responses=_NOT_FOUND)
def get_trial_activations(
    trial_id: int,
    session: SessionDep,
    principal: PrincipalDep,
    layer: Annotated[int | None, Query(ge=0)] = None,
    epoch: Annotated[int | None, Query(ge=0)] = None,
) -> TrialActivations:
    """Learned curves per layer and epoch, pre-activation histograms, and fitted forms."""
    return TrialActivations.model_validate(
        services.trial_activations(session, trial_id=trial_id, layer=layer, epoch=epoch,
                                   owner=principal.scope)
    )
