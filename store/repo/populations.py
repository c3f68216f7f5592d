"""Populations: creation, state, heartbeats, and the race-safe claims of distributed mode.

Distributed mode: workers and the reconciler race for the same rows from different
processes and machines. Each claim helper is one conditional UPDATE (or a row lock)
whose result says whether this caller won, so a duplicate task delivery, a late
worker and the reconciler can never all act on one population.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidInput
from store.repo._common import _check, _lock, _require, _won, jsonable
from store.repo.searches import get_search
from store.tables import (
    PHASES,
    POPULATION_STATES,
    PopulationRow,
    utcnow,
)


def add_population(
    session: Session,
    *,
    search_id: int,
    family: str,
    structural: Mapping[str, Any],
    k: int,
    phase: str = "search",
    task_id: str | None = None,
    families: Sequence[str] | None = None,
    source_trial_numbers: Sequence[int] | None = None,
    epochs: int | None = None,
    rung: int | None = None,
) -> PopulationRow:
    """A pending population of ``k`` candidates of ``family`` for ``search_id``.

    A mixed population has ``family="mixed"`` and ``families``, one per slot (``k`` of
    them); a mixed finalist population names, per slot, the search trial it re-trains.
    """
    get_search(session, search_id=search_id)
    if k < 1:
        raise InvalidInput(f"a population needs k >= 1, got {k}")
    if families is not None and len(families) != k:
        raise InvalidInput(f"a population of k={k} needs {k} slot families, got {len(families)}")
    if source_trial_numbers is not None and len(source_trial_numbers) != k:
        raise InvalidInput(f"a finalist population of k={k} needs {k} source trials, "
                           f"got {len(source_trial_numbers)}")
    row = PopulationRow(
        search_id=search_id,
        family=family,
        structural=jsonable(structural),
        k=int(k),
        phase=_check(phase, PHASES, "phase"),
        state="pending",
        task_id=task_id,
        attempts=0,
        families=list(families) if families is not None else None,
        source_trial_numbers=([int(n) for n in source_trial_numbers]
                              if source_trial_numbers is not None else None),
        epochs=epochs,
        rung=rung,
    )
    session.add(row)
    session.flush()
    return row


def set_population_state(
    session: Session,
    *,
    population_id: int,
    state: str,
    worker: str | None = None,
    task_id: str | None = None,
    error: str | None = None,
) -> PopulationRow:
    """Record a population's progress.

    ``running`` counts an attempt and stamps start and heartbeat; ``pending``
    again is how the reconciler re-enqueues; ``complete`` is final (Conflict).
    """
    _check(state, POPULATION_STATES, "population state")
    row: PopulationRow = _require(session, PopulationRow, population_id, "population")
    if row.state == "complete" and state != "complete":
        raise Conflict(f"population {population_id} is complete; it cannot become {state}")
    now = utcnow()
    if state == "running" and row.state != "running":
        row.attempts += 1
        row.started_at = now
        row.heartbeat_at = now
        row.finished_at = None
    if state in ("complete", "failed"):
        row.finished_at = now
    row.state = state
    if worker is not None:
        row.worker = worker
    if task_id is not None:
        row.task_id = task_id
    if error is not None:
        row.error = error
    session.flush()
    return row


def heartbeat_population(session: Session, *, population_id: int) -> datetime:
    """Stamp the population as alive now (the task calls this while it trains)."""
    row: PopulationRow = _require(session, PopulationRow, population_id, "population")
    row.heartbeat_at = utcnow()
    session.flush()
    return row.heartbeat_at


def stale_populations(
    session: Session, *, older_than_s: float, now: datetime | None = None
) -> list[PopulationRow]:
    """Running populations whose last heartbeat is older than ``older_than_s`` seconds."""
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    stmt = select(PopulationRow).where(
        PopulationRow.state == "running", PopulationRow.heartbeat_at < cutoff
    )
    return list(session.scalars(stmt.order_by(PopulationRow.id)))


def get_population(session: Session, *, population_id: int) -> PopulationRow:
    """The population row ``population_id``."""
    return _require(session, PopulationRow, population_id, "population")


def list_populations(
    session: Session, *, search_id: int, state: str | None = None
) -> list[PopulationRow]:
    """A search's populations in creation order."""
    stmt = select(PopulationRow).where(PopulationRow.search_id == search_id)
    if state is not None:
        stmt = stmt.where(PopulationRow.state == _check(state, POPULATION_STATES, "state"))
    return list(session.scalars(stmt.order_by(PopulationRow.id)))


def claim_population(
    session: Session, *, population_id: int, worker: str, task_id: str | None = None
) -> bool:
    """Take a pending population for ``worker`` (pending -> running); False if someone else did.

    Counts the attempt and stamps started_at and heartbeat_at. A broker that
    delivers the same task twice finds the population running and gets False.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "state": "running",
        "worker": worker,
        "attempts": PopulationRow.attempts + 1,
        "started_at": now,
        "heartbeat_at": now,
        "finished_at": None,
        "error": None,
    }
    if task_id is not None:
        values["task_id"] = task_id
    stmt = (
        update(PopulationRow)
        .where(PopulationRow.id == population_id, PopulationRow.state == "pending")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


def heartbeat_owned_population(session: Session, *, population_id: int, worker: str) -> bool:
    """Stamp the heartbeat if ``worker`` still runs the population; False once it lost it.

    Unlike :func:`heartbeat_population` this never revives a population the
    reconciler has already failed: the worker learns that it should stop.
    """
    stmt = (
        update(PopulationRow)
        .where(
            PopulationRow.id == population_id,
            PopulationRow.state == "running",
            PopulationRow.worker == worker,
        )
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return _won(session.execute(stmt))


def release_population(session: Session, *, population_id: int, worker: str, attempt: int
                       ) -> bool:
    """running -> pending, if still claimed by ``worker`` at ``attempt``; False otherwise.

    For a claim whose try was cut short (the database went away): the attempt is
    not counted, the asked ``trial_numbers`` stay, so the next claim re-trains them.
    """
    stmt = (
        update(PopulationRow)
        .where(
            PopulationRow.id == population_id,
            PopulationRow.state == "running",
            PopulationRow.worker == worker,
            PopulationRow.attempts == attempt,
        )
        .values(state="pending", worker=None, heartbeat_at=None, started_at=None,
                attempts=PopulationRow.attempts - 1)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


LONG_AGO = datetime(2000, 1, 1, tzinfo=timezone.utc)


def expire_worker_populations(session: Session, *, worker: str, error: str) -> list[int]:
    """Mark the running populations of a worker process known dead for the reconciler.

    Their heartbeat is set far in the past (so the next reconciler pass gives them up,
    whatever ``stale_after_s``) and ``error`` says what happened; returns their ids.
    """
    stmt = (
        update(PopulationRow)
        .where(PopulationRow.state == "running", PopulationRow.worker == worker)
        .values(heartbeat_at=LONG_AGO, error=error)
        .returning(PopulationRow.id)
        .execution_options(synchronize_session=False)
    )
    ids = [int(i) for i in session.scalars(stmt)]
    session.expire_all()
    return ids


def record_asked_trials(
    session: Session,
    *,
    population_id: int,
    trial_numbers: Sequence[int],
    structural: Mapping[str, Any] | None = None,
) -> PopulationRow:
    """Remember which Optuna trials a population asked (and the structure they share)."""
    row: PopulationRow = _require(session, PopulationRow, population_id, "population")
    row.trial_numbers = [int(n) for n in trial_numbers]
    if structural is not None:
        row.structural = jsonable(structural)
    session.flush()
    return row


def fail_stale_population(
    session: Session,
    *,
    population_id: int,
    older_than_s: float,
    error: str,
    now: datetime | None = None,
) -> bool:
    """running -> failed if its heartbeat is still older than ``older_than_s``; False otherwise.

    The condition is re-checked inside the UPDATE: a worker that heartbeated
    since the reconciler listed the population keeps it.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    stmt = (
        update(PopulationRow)
        .where(
            PopulationRow.id == population_id,
            PopulationRow.state == "running",
            PopulationRow.heartbeat_at < cutoff,
        )
        .values(state="failed", error=error, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


def cancel_pending_populations(
    session: Session, *, search_id: int, population_id: int | None = None, reason: str = "cancelled"
) -> list[int]:
    """pending -> cancelled for a search's populations (or just ``population_id``).

    Returns the ids that changed; a population a worker has already claimed is
    left to finish.
    """
    where = [PopulationRow.search_id == search_id, PopulationRow.state == "pending"]
    if population_id is not None:
        where.append(PopulationRow.id == population_id)
    ids = list(session.scalars(select(PopulationRow.id).where(*where)))
    if not ids:
        return []
    stmt = (
        update(PopulationRow)
        .where(PopulationRow.id.in_(ids), PopulationRow.state == "pending")
        .values(state="cancelled", error=reason, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)
    session.expire_all()
    return [
        pid
        for pid in session.scalars(
            select(PopulationRow.id).where(
                PopulationRow.id.in_(ids), PopulationRow.state == "cancelled"
            )
        )
    ]


def lock_population(session: Session, *, population_id: int) -> PopulationRow:
    """The population row, locked until the transaction ends (a worker's final write)."""
    return _lock(session, PopulationRow, population_id, "population")


def waiting_populations(
    session: Session, *, older_than_s: float, now: datetime | None = None
) -> list[PopulationRow]:
    """Populations still ``pending`` (never claimed) that were created over ``older_than_s`` ago.

    Only meaningful when the broker's queue is empty: then their task messages
    were lost (a broker restarted without persistence) and must be sent again.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    stmt = select(PopulationRow).where(
        PopulationRow.state == "pending", PopulationRow.created_at < cutoff
    )
    return list(session.scalars(stmt.order_by(PopulationRow.id)))


def requeue_population(session: Session, *, population_id: int) -> PopulationRow:
    """A running population whose process is gone goes back to ``pending``.

    It keeps the Optuna trials it asked (``trial_numbers``): whoever claims it next
    trains those same trials, so none is asked twice.
    """
    row: PopulationRow = _require(session, PopulationRow, population_id, "population")
    row.state = "pending"
    row.worker = None
    row.heartbeat_at = None
    row.started_at = None
    session.flush()
    return row
