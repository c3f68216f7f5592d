"""The distributed mode's conditional updates in store.repo (SQLite here; PostgreSQL in
tests/integration): each says whether this caller won, and never revives a lost row."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from core.errors import NotFound
from store import repo
from store.tables import PopulationRow, SearchRow, utcnow
from tests.store.test_repo import _search


def _population(session: Session, search: SearchRow, **kw: object) -> PopulationRow:
    return repo.add_population(session, search_id=search.id, family="relu", structural={}, k=2,
                               **kw)  # type: ignore[arg-type]


def test_claim_wins_once_and_counts_the_attempt(session: Session) -> None:
    search = _search(session)
    pop = _population(session, search, task_id="t-planned")
    assert repo.claim_population(session, population_id=pop.id, worker="a:1", task_id="t-1")
    assert not repo.claim_population(session, population_id=pop.id, worker="b:2")
    row = repo.get_population(session, population_id=pop.id)
    assert (row.state, row.worker, row.attempts, row.task_id) == ("running", "a:1", 1, "t-1")
    assert row.heartbeat_at is not None and row.started_at is not None


def test_owned_heartbeat_never_revives_a_lost_population(session: Session) -> None:
    search = _search(session)
    pop = _population(session, search)
    assert not repo.heartbeat_owned_population(session, population_id=pop.id, worker="a:1")
    repo.claim_population(session, population_id=pop.id, worker="a:1")
    assert repo.heartbeat_owned_population(session, population_id=pop.id, worker="a:1")
    assert not repo.heartbeat_owned_population(session, population_id=pop.id, worker="b:2")
    row = repo.get_population(session, population_id=pop.id)
    row.heartbeat_at = utcnow() - timedelta(seconds=100)
    session.flush()
    assert not repo.fail_stale_population(session, population_id=pop.id, older_than_s=200,
                                          error="x")
    assert repo.fail_stale_population(session, population_id=pop.id, older_than_s=50,
                                      error="lost")
    assert not repo.fail_stale_population(session, population_id=pop.id, older_than_s=50,
                                          error="again")
    assert not repo.heartbeat_owned_population(session, population_id=pop.id, worker="a:1")
    row = repo.get_population(session, population_id=pop.id)
    assert (row.state, row.error) == ("failed", "lost") and row.finished_at is not None


def test_asked_trials_and_structure_are_recorded(session: Session) -> None:
    search = _search(session)
    pop = _population(session, search)
    row = repo.record_asked_trials(session, population_id=pop.id, trial_numbers=[4, 5],
                                   structural={"degree": 3})
    assert row.trial_numbers == [4, 5] and row.structural == {"degree": 3}


def test_cancel_pending_leaves_claimed_populations_alone(session: Session) -> None:
    search = _search(session)
    running, waiting, other = (_population(session, search) for _ in range(3))
    repo.claim_population(session, population_id=running.id, worker="a:1")
    only = repo.cancel_pending_populations(session, search_id=search.id,
                                           population_id=waiting.id, reason="r")
    assert only == [waiting.id]
    assert repo.cancel_pending_populations(session, search_id=search.id) == [other.id]
    states = [p.state for p in repo.list_populations(session, search_id=search.id)]
    assert states == ["running", "cancelled", "cancelled"]
    assert repo.list_populations(session, search_id=search.id, state="cancelled")[0].error == "r"


def test_transition_search_is_atomic_and_stamps_times(session: Session) -> None:
    search = _search(session)
    assert repo.transition_search(session, search_id=search.id, from_states=("pending",),
                                  to_state="running")
    assert not repo.transition_search(session, search_id=search.id, from_states=("pending",),
                                      to_state="running")
    row = repo.get_search(session, search_id=search.id)
    assert row.state == "running" and row.started_at is not None and row.finished_at is None
    assert repo.transition_search(session, search_id=search.id,
                                  from_states=("running", "finalizing"), to_state="cancelled")
    assert repo.get_search(session, search_id=search.id).finished_at is not None


def test_locks_and_waiting_populations(session: Session) -> None:
    search = _search(session)
    pop = _population(session, search)
    assert repo.lock_search(session, search_id=search.id).id == search.id
    assert repo.lock_population(session, population_id=pop.id).id == pop.id
    with pytest.raises(NotFound):
        repo.lock_population(session, population_id=10_000)
    pop.created_at = utcnow() - timedelta(seconds=100)
    session.flush()
    assert [p.id for p in repo.waiting_populations(session, older_than_s=50)] == [pop.id]
    assert repo.waiting_populations(session, older_than_s=500) == []
