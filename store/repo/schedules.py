"""Schedules: recurring searches, due runs and their results."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from store.repo._common import _check, _page, _require, _require_owned, _won, jsonable
from store.tables import (
    SCHEDULE_KINDS,
    SCHEDULE_STATES,
    ScheduleRow,
    SearchRow,
)


def add_schedule(
    session: Session,
    *,
    name: str,
    cron: str,
    timezone: str,
    template: Mapping[str, Any],
    next_run_at: datetime,
    owner: str | None = None,
) -> ScheduleRow:
    """An active schedule row; the caller has validated the cron and the template."""
    if not name or len(name) > 200:
        raise InvalidInput("a schedule name must have 1 to 200 characters")
    _check(str(template.get("kind")), SCHEDULE_KINDS, "schedule template kind")
    row = ScheduleRow(name=name, cron=cron, timezone=timezone, template=jsonable(template),
                      state="active", owner=owner, next_run_at=next_run_at, run_count=0)
    session.add(row)
    session.flush()
    return row


def get_schedule(session: Session, *, schedule_id: int, owner: str | None = None) -> ScheduleRow:
    """The schedule row ``schedule_id``; NotFound if it is not ``owner``'s (None: anyone's)."""
    return _require_owned(session, ScheduleRow, schedule_id, "schedule", owner)


def _schedule_filters(state: str | None, owner: str | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if state is not None:
        where.append(ScheduleRow.state == _check(state, SCHEDULE_STATES, "schedule state"))
    if owner is not None:
        where.append(ScheduleRow.owner == owner)
    return where


def list_schedules(
    session: Session,
    *,
    state: str | None = None,
    owner: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[ScheduleRow]:
    """Schedules, newest first, optionally filtered."""
    stmt = select(ScheduleRow).where(*_schedule_filters(state, owner))
    stmt = stmt.order_by(ScheduleRow.id.desc())
    return list(session.scalars(_page(stmt, limit, offset)))


def count_schedules(session: Session, *, state: str | None = None,
                    owner: str | None = None) -> int:
    """How many schedules :func:`list_schedules` would return without paging."""
    stmt = select(func.count(ScheduleRow.id)).where(*_schedule_filters(state, owner))
    return int(session.scalar(stmt) or 0)


def due_schedules(session: Session, *, now: datetime) -> list[ScheduleRow]:
    """Active schedules whose ``next_run_at`` has come, the most overdue first."""
    stmt = select(ScheduleRow).where(
        ScheduleRow.state == "active", ScheduleRow.next_run_at.is_not(None),
        ScheduleRow.next_run_at <= now,
    )
    return list(session.scalars(stmt.order_by(ScheduleRow.next_run_at, ScheduleRow.id)))


def claim_schedule_run(
    session: Session,
    *,
    schedule_id: int,
    expected_next_run_at: datetime,
    next_run_at: datetime | None,
    now: datetime,
) -> bool:
    """Take one firing of a schedule: True for exactly one of several concurrent callers.

    A conditional UPDATE on ``next_run_at`` (the value the caller read) moves it to
    the next cron time and counts the run; a second scheduler that read the same
    value matches no row. A schedule paused meanwhile matches no row either.
    """
    stmt = (
        update(ScheduleRow)
        .where(ScheduleRow.id == schedule_id, ScheduleRow.state == "active",
               ScheduleRow.next_run_at == expected_next_run_at)
        .values(next_run_at=next_run_at, last_run_at=now,
                run_count=ScheduleRow.run_count + 1)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


def record_schedule_result(
    session: Session, *, schedule_id: int, search_id: int | None, error: str | None
) -> ScheduleRow:
    """After a firing: link the search it created (clearing the last error), or keep the error."""
    row: ScheduleRow = _require(session, ScheduleRow, schedule_id, "schedule")
    if search_id is not None:
        search: SearchRow = _require(session, SearchRow, search_id, "search")
        search.schedule_id = schedule_id
        row.last_search_id = search_id
    row.last_error = error
    session.flush()
    return row


def set_schedule_state(
    session: Session, *, schedule_id: int, state: str, next_run_at: datetime | None
) -> ScheduleRow:
    """Pause or resume a schedule (the caller decides whether the move is allowed)."""
    _check(state, SCHEDULE_STATES, "schedule state")
    row: ScheduleRow = _require(session, ScheduleRow, schedule_id, "schedule")
    row.state = state
    row.next_run_at = next_run_at
    session.flush()
    return row


def delete_schedule(session: Session, *, schedule_id: int) -> None:
    """Delete a schedule; the searches it created stay, unlinked."""
    _require(session, ScheduleRow, schedule_id, "schedule")
    # Explicit, not only ON DELETE SET NULL: a SQLite connection without
    # foreign_keys=ON would otherwise leave dangling ids.
    session.execute(update(SearchRow).where(SearchRow.schedule_id == schedule_id)
                    .values(schedule_id=None).execution_options(synchronize_session=False))
    session.execute(delete(ScheduleRow).where(ScheduleRow.id == schedule_id))
    session.expire_all()


def schedule_searches(
    session: Session, *, schedule_id: int, limit: int | None = 100, offset: int = 0
) -> list[SearchRow]:
    """The searches a schedule created, newest first."""
    stmt = select(SearchRow).where(SearchRow.schedule_id == schedule_id)
    stmt = stmt.order_by(SearchRow.id.desc())
    return list(session.scalars(_page(stmt, limit, offset)))
