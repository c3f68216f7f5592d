"""``/searches``: submit, list, follow, cancel, and read results (trials, leaderboard, export)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Body, Query, Response

from api import services
from api.deps import FinishedDep, PageDep, PrincipalDep, SessionDep, SettingsDep, SlowDep
from api.schemas import (
    ErrorPublic,
    LeaderboardPublic,
    Phase,
    SearchCreate,
    SearchDetail,
    SearchesPublic,
    SearchPublic,
    SearchState,
    SortOrder,
    TrialPublic,
    TrialSort,
    TrialsPublic,
    TrialState,
)
from search.progress import search_analysis, search_progress
from store import repo

router = APIRouter(prefix="/searches", tags=["searches"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorPublic}}
_EXAMPLES = {
    "tabular": {
        "summary": "a small tabular search",
        "value": {"dataset": "iris", "architecture": "mlp:32,32",
                  "families": ["relu", "prelu", "gelu"], "trials": 24, "epochs": 20},
    },
    "uploaded": {
        "summary": "on an uploaded dataset (POST /datasets first)",
        "value": {"dataset": "my-table", "dataset_version": 2, "architecture": "mlp:64,64",
                  "families": ["relu", "rational", "vaf"], "trials": 60, "epochs": 30,
                  "time_budget_s": 600, "name": "my-table v2"},
    },
}


def _detail(session: Any, row: Any) -> SearchDetail:
    return SearchDetail.model_validate(
        {**SearchPublic.model_validate(row).model_dump(),
         "progress": search_progress(session, row=row), "analysis": search_analysis(row)}
    )


@router.post("", status_code=201, response_model=SearchDetail,
             responses={404: {"model": ErrorPublic, "description": "warm_start_from: no such "
                              "search"}, 422: {"model": ErrorPublic}})
def create_search(
    body: Annotated[SearchCreate, Body(openapi_examples=_EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    principal: PrincipalDep,
    slow: SlowDep,
) -> SearchDetail:
    """Submit a search; it starts when a runner (embedded) or worker (distributed) is free."""
    row = services.submit_search(session, spec=body.spec(), name=body.name, settings=settings,
                                 principal=principal, slow=slow)
    if settings.distributed:
        # Background tasks run after the session dependency has committed the row.
        background.add_task(services.enqueue_search, row.id)
    return _detail(session, row)


@router.get("", response_model=SearchesPublic)
async def list_searches(
    session: SessionDep,
    page: PageDep,
    principal: PrincipalDep,
    state: SearchState | None = None,
    dataset_id: Annotated[int | None, Query(ge=1)] = None,
) -> SearchesPublic:
    """Searches, newest first, filtered by state and dataset."""
    owner = principal.scope
    rows = repo.list_searches(session, state=state, dataset_id=dataset_id, owner=owner,
                              limit=page.limit, offset=page.offset)
    count = repo.count_searches(session, state=state, dataset_id=dataset_id, owner=owner)
    return SearchesPublic(data=[SearchPublic.model_validate(r) for r in rows], count=count)


@router.get("/{search_id}", response_model=SearchDetail, responses=_NOT_FOUND)
async def get_search(search_id: int, session: SessionDep, principal: PrincipalDep) -> SearchDetail:
    """One search with its progress: trials done of the budget, best so far, finalists."""
    return _detail(session, repo.get_search(session, search_id=search_id, owner=principal.scope))


@router.post("/{search_id}/cancel", response_model=SearchDetail,
             responses={**_NOT_FOUND, 409: {"model": ErrorPublic}})
def cancel_search(search_id: int, session: SessionDep, principal: PrincipalDep) -> SearchDetail:
    """Stop scheduling new trials; populations already training finish or are pruned."""
    return _detail(session, services.cancel_search(session, search_id=search_id,
                                                   owner=principal.scope))


@router.get("/{search_id}/trials", response_model=TrialsPublic, responses=_NOT_FOUND)
async def list_search_trials(
    search_id: int,
    session: SessionDep,
    page: PageDep,
    principal: PrincipalDep,
    sort: TrialSort = "value",
    order: SortOrder = "desc",
    family: str | None = None,
    state: TrialState | None = None,
    phase: Phase | None = None,
) -> TrialsPublic:
    """A search's trials, sortable by value, created, family or duration (missing values last)."""
    repo.get_search(session, search_id=search_id, owner=principal.scope)
    rows, count = repo.query_trials(
        session, search_ids=[search_id], family=family, state=state, phase=phase,
        order_by=services.trial_sort_column(sort), descending=order == "desc",
        limit=page.limit, offset=page.offset,
    )
    return TrialsPublic(data=[TrialPublic.model_validate(r) for r in rows], count=count)


@router.get("/{search_id}/leaderboard", response_model=LeaderboardPublic, responses=_NOT_FOUND)
async def get_leaderboard(search_id: int, session: SessionDep, principal: PrincipalDep,
                          finished: FinishedDep) -> LeaderboardPublic:
    """Finalists per family: mean ± 95% interval over seeds, the ReLU baseline marked."""
    row = repo.get_search(session, search_id=search_id, owner=principal.scope)
    return finished.get(row, "leaderboard", None, lambda: LeaderboardPublic.model_validate(
        services.leaderboard(session, search_id=search_id, owner=principal.scope)))


@router.get(
    "/{search_id}/export",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}},
              "description": "model.pt2 (torch.export), state_dict.pt, meta.json, README.txt"},
        **_NOT_FOUND,
        409: {"model": ErrorPublic, "description": "no finalist with weights yet"},
    },
)
async def export_best_model(
    search_id: int, session: SessionDep, principal: PrincipalDep, slow: SlowDep,
    activations: Annotated[Literal["learned", "distilled"], Query(
        description="learned: the trained activations; distilled: their piecewise-linear "
                    "copies (meta.json: knots and the measured accuracy change)")] = "learned",
) -> Response:
    """The best model (final choice, best seed) as a zip loadable with torch and numpy only."""
    data = await slow.run(principal.owner, "export", services.export_model, session,
                          search_id=search_id, owner=principal.scope, activations=activations)
    return Response(
        content=data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="actsearch-search-{search_id}.zip"'},
    )
