"""``/schedules``: recurring searches (cron + template) fired by the scheduler."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from sqlalchemy.orm import Session

from api.deps import PageDep, PrincipalDep, SessionDep, SettingsDep
from api.schemas import (
    ErrorPublic,
    ScheduleCreate,
    ScheduleDetail,
    SchedulePublic,
    ScheduleRunPublic,
    SchedulesPublic,
    ScheduleState,
)
from search import schedules
from store import repo

router = APIRouter(prefix="/schedules", tags=["schedules"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorPublic}}
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorPublic}}
_EXAMPLES = {
    "rerun": {
        "summary": "re-run a search every night on the latest version of a dataset",
        "value": {"name": "nightly my-table", "cron": "0 3 * * *", "timezone": "Europe/Paris",
                  "template": {"kind": "rerun", "spec": {
                      "dataset": "my-table", "architecture": "mlp:64,64",
                      "families": ["relu", "gelu", "rational"], "trials": 48, "epochs": 20}}},
    },
    "add_trials": {
        "summary": "add 16 warm-started trials to search 3 every hour",
        "value": {"cron": "@hourly", "template": {"kind": "add_trials", "search_id": 3,
                                                  "trials": 16}},
    },
}
RunsLimit = Annotated[int, Query(ge=0, le=500, description="searches listed in `runs`")]


def _detail(session: Session, row: Any, runs_limit: int = 20) -> ScheduleDetail:
    runs = repo.schedule_searches(session, schedule_id=row.id, limit=runs_limit)
    return ScheduleDetail.model_validate(
        {**SchedulePublic.model_validate(row).model_dump(),
         "runs": [ScheduleRunPublic.model_validate(r) for r in runs]})


@router.post("", status_code=201, response_model=ScheduleDetail,
             responses={422: {"model": ErrorPublic}, 429: {"model": ErrorPublic}})
def create_schedule(
    body: Annotated[ScheduleCreate, Body(openapi_examples=_EXAMPLES)],
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> ScheduleDetail:
    """Create an active schedule; its first firing is the next cron time from now."""
    row = schedules.create_schedule(session, name=body.name, cron=body.cron,
                                    template=body.template_dict(), tz=body.timezone,
                                    allow_files=False, limits=settings.limits,
                                    training=settings.training,
                                    # an add_trials firing re-reads its parent's dataset in
                                    # the schedule owner's namespace: own searches only, admins too
                                    owner=principal.owner, scope=principal.owner)
    return _detail(session, row)


@router.get("", response_model=SchedulesPublic)
def list_schedules(session: SessionDep, page: PageDep, principal: PrincipalDep,
                   state: ScheduleState | None = None) -> SchedulesPublic:
    """Schedules, newest first, optionally filtered by state."""
    owner = principal.scope
    rows = repo.list_schedules(session, state=state, owner=owner, limit=page.limit,
                               offset=page.offset)
    return SchedulesPublic(data=[SchedulePublic.model_validate(r) for r in rows],
                           count=repo.count_schedules(session, state=state, owner=owner))


@router.get("/{schedule_id}", response_model=ScheduleDetail, responses=_NOT_FOUND)
def get_schedule(schedule_id: int, session: SessionDep, principal: PrincipalDep,
                 runs_limit: RunsLimit = 20) -> ScheduleDetail:
    """One schedule with the searches it created (its runs), newest first."""
    row = repo.get_schedule(session, schedule_id=schedule_id, owner=principal.scope)
    return _detail(session, row, runs_limit)


@router.post("/{schedule_id}/pause", response_model=ScheduleDetail,
             responses={**_NOT_FOUND, **_CONFLICT})
def pause_schedule(schedule_id: int, session: SessionDep,
                   principal: PrincipalDep) -> ScheduleDetail:
    """Stop firing; searches already created carry on."""
    repo.get_schedule(session, schedule_id=schedule_id, owner=principal.scope)
    return _detail(session, schedules.pause_schedule(session, schedule_id=schedule_id))


@router.post("/{schedule_id}/resume", response_model=ScheduleDetail,
             responses={**_NOT_FOUND, **_CONFLICT})
def resume_schedule(schedule_id: int, session: SessionDep,
                    principal: PrincipalDep) -> ScheduleDetail:
    """Fire again from the next cron time after now (missed firings are not replayed)."""
    repo.get_schedule(session, schedule_id=schedule_id, owner=principal.scope)
    return _detail(session, schedules.resume_schedule(session, schedule_id=schedule_id))


@router.delete("/{schedule_id}", status_code=204, response_class=Response,
               responses=_NOT_FOUND)
def delete_schedule(schedule_id: int, session: SessionDep, principal: PrincipalDep) -> Response:
    """Delete a schedule; the searches it created stay."""
    repo.get_schedule(session, schedule_id=schedule_id, owner=principal.scope)
    schedules.delete_schedule(session, schedule_id=schedule_id)
    return Response(status_code=204)
