"""Searches: creation, state changes, listings, progress and race-safe transitions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select, update
from sqlalchemy.orm import Session

from core.errors import Conflict, NotFound
from store.repo._common import _check, _lock, _page, _require, _require_owned, _won, jsonable
from store.repo.datasets import get_dataset
from store.tables import (
    ANALYSIS_STATES,
    SEARCH_STATES,
    SEARCH_TERMINAL_STATES,
    EpochMetricRow,
    PopulationRow,
    SearchRow,
    TrialRow,
    utcnow,
)

_SEARCH_RANK = {"pending": 0, "running": 1, "finalizing": 2}


def create_search(
    session: Session,
    *,
    name: str,
    study_name: str,
    dataset_id: int,
    spec: Mapping[str, Any],
    owner: str | None = None,
) -> SearchRow:
    """A pending search row for the Optuna study ``study_name`` (unique)."""
    get_dataset(session, dataset_id=dataset_id)
    taken = session.scalars(select(SearchRow.id).where(SearchRow.study_name == study_name)).first()
    if taken is not None:
        raise Conflict(f"study name {study_name!r} is already used by search {taken}")
    row = SearchRow(
        name=name,
        study_name=study_name,
        dataset_id=dataset_id,
        spec=jsonable(spec),
        owner=owner,
        state="pending",
    )
    session.add(row)
    session.flush()
    return row


def set_search_state(
    session: Session,
    *,
    search_id: int,
    state: str,
    error: str | None = None,
    best: Mapping[str, Any] | None = None,
) -> SearchRow:
    """Move a search forward (pending -> running -> finalizing -> a terminal state).

    Terminal states (complete, failed, cancelled) are final and a search never
    moves backwards: either raises Conflict. Setting the current state again is
    allowed (to update ``error`` or ``best``). Stamps started_at / finished_at.
    """
    _check(state, SEARCH_STATES, "search state")
    row: SearchRow = _require(session, SearchRow, search_id, "search")
    if state != row.state:
        current_final = row.state in SEARCH_TERMINAL_STATES
        backwards = state in _SEARCH_RANK and _SEARCH_RANK[state] < _SEARCH_RANK.get(row.state, 3)
        if current_final or backwards:
            raise Conflict(f"search {search_id} is {row.state}; it cannot become {state}")
    now = utcnow()
    if state in ("running", "finalizing") and row.started_at is None:
        row.started_at = now
    if state in SEARCH_TERMINAL_STATES and row.finished_at is None:
        row.finished_at = now
    row.state = state
    if error is not None:
        row.error = error
    if best is not None:
        row.best = jsonable(best)
    session.flush()
    return row


def get_search(session: Session, *, search_id: int, owner: str | None = None) -> SearchRow:
    """The search row ``search_id``; NotFound if it is not ``owner``'s (None: anyone's)."""
    return _require_owned(session, SearchRow, search_id, "search", owner)


ACTIVE_SEARCH_STATES = ("pending", "running", "finalizing")


def count_active_searches(session: Session, *, owner: str | None) -> int:
    """Searches of ``owner`` (None: the anonymous owner) that are queued or running."""
    owner_is = SearchRow.owner.is_(None) if owner is None else SearchRow.owner == owner
    stmt = select(func.count(SearchRow.id)).where(
        owner_is, SearchRow.state.in_(ACTIVE_SEARCH_STATES)
    )
    return int(session.scalar(stmt) or 0)


def get_search_by_study(session: Session, *, study_name: str) -> SearchRow:
    """The search that owns the Optuna study ``study_name``."""
    row = session.scalars(select(SearchRow).where(SearchRow.study_name == study_name)).first()
    if row is None:
        raise NotFound(f"no search for study {study_name!r}")
    return row


def _search_filters(
    state: str | None, dataset_id: int | None, owner: str | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if state is not None:
        where.append(SearchRow.state == _check(state, SEARCH_STATES, "search state"))
    if dataset_id is not None:
        where.append(SearchRow.dataset_id == dataset_id)
    if owner is not None:
        where.append(SearchRow.owner == owner)
    return where


def list_searches(
    session: Session,
    *,
    state: str | None = None,
    dataset_id: int | None = None,
    owner: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[SearchRow]:
    """Searches, newest first, optionally filtered."""
    stmt = select(SearchRow).where(*_search_filters(state, dataset_id, owner))
    stmt = stmt.order_by(SearchRow.created_at.desc(), SearchRow.id.desc())
    return list(session.scalars(_page(stmt, limit, offset)))


def count_searches(
    session: Session,
    *,
    state: str | None = None,
    dataset_id: int | None = None,
    owner: str | None = None,
) -> int:
    """How many searches :func:`list_searches` would return without paging."""
    stmt = select(func.count(SearchRow.id)).where(*_search_filters(state, dataset_id, owner))
    return int(session.scalar(stmt) or 0)


def oldest_pending_search(session: Session) -> SearchRow | None:
    """The search that has waited longest in ``pending`` (what a runner picks next)."""
    stmt = select(SearchRow).where(SearchRow.state == "pending")
    stmt = stmt.order_by(SearchRow.created_at.asc(), SearchRow.id.asc()).limit(1)
    return session.scalars(stmt).first()


def _architecture_kind(spec: Any) -> str | None:
    """``"mlp"``/``"cnn"`` from a stored spec's architecture (short string or dict form)."""
    arch = spec.get("architecture") if isinstance(spec, Mapping) else None
    if isinstance(arch, str):
        return arch.partition(":")[0].strip().lower() or None
    if isinstance(arch, Mapping):
        return str(arch.get("kind", "mlp")).lower()
    return None


def search_ids_by_architecture(
    session: Session, *, kind: str, owner: str | None = None
) -> list[int]:
    """Ids of ``owner``'s searches whose architecture is of ``kind`` (``mlp`` or ``cnn``).

    The kind lives inside the spec's JSON, whose query syntax differs between
    SQLite and PostgreSQL; the searches table is small, so it is read in Python.
    """
    where = [] if owner is None else [SearchRow.owner == owner]
    rows = session.execute(
        select(SearchRow.id, SearchRow.spec).where(*where).order_by(SearchRow.id)
    )
    return [sid for sid, spec in rows if _architecture_kind(spec) == kind.lower()]


# Built once (with bind parameters), like the other statements that every progress read
# runs: building a statement costs about as much as running it (measured in the API).
_TRIAL_COUNTS = (
    select(TrialRow.phase, TrialRow.state, func.count(TrialRow.id))
    .where(TrialRow.search_id == bindparam("search_id"))
    .group_by(TrialRow.phase, TrialRow.state)
)


def search_trial_counts(session: Session, *, search_id: int) -> dict[str, dict[str, int]]:
    """Recorded trials of a search counted by phase, then state: ``{"search": {"complete": 3}}``."""
    out: dict[str, dict[str, int]] = {}
    for phase, state, n in session.execute(_TRIAL_COUNTS, {"search_id": search_id}):
        out.setdefault(phase, {})[state] = int(n)
    return out


def search_candidate_epochs(session: Session, *, search_id: int) -> dict[str, int]:
    """Candidate-epochs a search trained, by phase: its epoch rows (one per trial and epoch).

    The compute the equal-compute control arm matches (``{"search": 412, "finalist": 96}``).
    """
    stmt = (
        select(TrialRow.phase, func.count(EpochMetricRow.id))
        .join(EpochMetricRow, EpochMetricRow.trial_id == TrialRow.id)
        .where(TrialRow.search_id == search_id)
        .group_by(TrialRow.phase)
    )
    return {phase: int(n) for phase, n in session.execute(stmt)}


_POPULATION_COUNTS = (
    select(PopulationRow.phase, PopulationRow.state, func.count(PopulationRow.id),
           func.coalesce(func.sum(PopulationRow.k), 0))
    .where(PopulationRow.search_id == bindparam("search_id"))
    .group_by(PopulationRow.phase, PopulationRow.state)
)


def search_population_counts(
    session: Session, *, search_id: int
) -> dict[str, dict[str, tuple[int, int]]]:
    """A search's populations by phase, then state: ``(populations, candidates)``.

    Trials are written when their population finishes, so the candidates of
    pending and running populations are what a search has in flight.
    """
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for phase, state, n, k in session.execute(_POPULATION_COUNTS, {"search_id": search_id}):
        out.setdefault(phase, {})[state] = (int(n), int(k))
    return out


_BEST_SEARCH_TRIAL = (
    select(TrialRow)
    .where(TrialRow.search_id == bindparam("search_id"), TrialRow.phase == "search",
           TrialRow.state == "complete", TrialRow.value.is_not(None))
    .order_by(TrialRow.value.desc(), TrialRow.id.asc())
    .limit(1)
)


def best_search_trial(session: Session, *, search_id: int) -> TrialRow | None:
    """The completed search-phase trial with the highest validation metric, if any."""
    return session.scalars(_BEST_SEARCH_TRIAL, {"search_id": search_id}).first()


_PHASE_POPULATION_STATES = (
    select(PopulationRow.state, PopulationRow.family, PopulationRow.families)
    .where(PopulationRow.search_id == bindparam("search_id"),
           PopulationRow.phase == bindparam("phase"))
)


def phase_population_states(session: Session, *, search_id: int,
                            phase: str) -> list[tuple[str, list[str]]]:
    """``(state, families of its slots)`` of each population of one phase (no ORM loading)."""
    out: list[tuple[str, list[str]]] = []
    for state, family, families in session.execute(
            _PHASE_POPULATION_STATES, {"search_id": search_id, "phase": phase}):
        out.append((state, list(families) if families else [family]))
    return out


def lock_search(session: Session, *, search_id: int) -> SearchRow:
    """The search row, locked until the transaction ends (``SELECT ... FOR UPDATE``).

    Serialises the decisions made once per search (plan the finalists, finish)
    between workers. SQLite has no row locks; its single writer serialises anyway.
    """
    return _lock(session, SearchRow, search_id, "search")


def transition_search(
    session: Session, *, search_id: int, from_states: Sequence[str], to_state: str
) -> bool:
    """Move a search to ``to_state`` only from one of ``from_states``; True if this call did.

    The atomic form of :func:`set_search_state` for transitions that exactly one
    process may make (pending -> running when the search is planned).
    """
    _check(to_state, SEARCH_STATES, "search state")
    now = utcnow()
    values: dict[str, Any] = {"state": to_state}
    if to_state in ("running", "finalizing"):
        values["started_at"] = func.coalesce(SearchRow.started_at, now)
    if to_state in SEARCH_TERMINAL_STATES:
        values["finished_at"] = func.coalesce(SearchRow.finished_at, now)
    stmt = (
        update(SearchRow)
        .where(SearchRow.id == search_id, SearchRow.state.in_(list(from_states)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


def set_analysis_state(
    session: Session,
    *,
    search_id: int,
    state: str | None,
    error: str | None = None,
    from_states: Sequence[str | None] | None = None,
) -> bool:
    """Set a search's curve-analysis state (and its error: cleared unless given).

    Touches only ``analysis_state`` and ``analysis_error``, never the search's own
    state, best or leaderboard. ``from_states``: only if the analysis is in one of
    them now (``None`` in the list matches NULL); returns True if this call set it.
    """
    if state is not None:
        _check(state, ANALYSIS_STATES, "analysis state")
    _require(session, SearchRow, search_id, "search")
    stmt = update(SearchRow).where(SearchRow.id == search_id)
    if from_states is not None:
        named = [s for s in from_states if s is not None]
        cond = SearchRow.analysis_state.in_(named)
        if None in from_states:
            cond = cond | SearchRow.analysis_state.is_(None)
        stmt = stmt.where(cond)
    stmt = stmt.values(analysis_state=state, analysis_error=error).execution_options(
        synchronize_session=False)
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


def searches_with_analysis(session: Session, *, states: Sequence[str]) -> list[SearchRow]:
    """Searches whose analysis is in one of ``states`` (e.g. pending, running), oldest first."""
    stmt = select(SearchRow).where(SearchRow.analysis_state.in_(list(states)))
    return list(session.scalars(stmt.order_by(SearchRow.id)))
