"""search_progress: what a bar shows, read from the rows (never 18/16, running = training now)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from search.progress import search_progress
from search.service import create_search
from search.spec import parse_spec
from store import repo
from store.db import init_db, make_engine, session_factory

SPEC = {"dataset": "iris", "architecture": "mlp:4", "families": ["relu"], "trials": 4,
        "epochs": 2, "population_size": 2}


@pytest.fixture
def search(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], int]]:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        sid = create_search(session=session, spec=parse_spec(SPEC), storage_url=url).id
        repo.set_search_state(session, search_id=sid, state="running")
    yield sessions, sid
    engine.dispose()


def _progress(sessions: sessionmaker[Session], sid: int) -> dict:
    with sessions() as session:
        return search_progress(session, row=repo.get_search(session, search_id=sid))


def _trials(session: Session, sid: int, pop_id: int, state: str, first: int, n: int) -> None:
    study = repo.get_search(session, search_id=sid).study_name
    for number in range(first, first + n):
        repo.add_trial(session, search_id=sid, population_id=pop_id, study_name=study,
                       trial_number=number, phase="search", family="relu", family_params={},
                       hparams={}, seed=number, state=state)


def test_running_counts_the_candidates_training_not_those_waiting(search) -> None:
    sessions, sid = search
    with sessions.begin() as session:
        a = repo.add_population(session, search_id=sid, family="relu", structural={}, k=2)
        repo.add_population(session, search_id=sid, family="relu", structural={}, k=2)
        repo.claim_population(session, population_id=a.id, worker="w")
    p = _progress(sessions, sid)
    assert p["running"] == 2 and p["done"] == 0 and p["budget"] == 4


def test_a_retried_population_raises_the_budget_so_done_never_exceeds_it(search) -> None:
    sessions, sid = search
    with sessions.begin() as session:
        first = repo.add_population(session, search_id=sid, family="relu", structural={}, k=2)
        second = repo.add_population(session, search_id=sid, family="relu", structural={}, k=2)
        _trials(session, sid, first.id, "complete", 0, 2)
        _trials(session, sid, second.id, "failed", 2, 2)  # its worker died: failed ...
        repo.set_population_state(session, population_id=first.id, state="complete")
        repo.set_population_state(session, population_id=second.id, state="failed")
        repo.add_population(session, search_id=sid, family="relu", structural={}, k=2)  # retry
    p = _progress(sessions, sid)
    assert p["done"] == 4 and p["budget"] == 6
    with sessions.begin() as session:
        retry = repo.list_populations(session, search_id=sid, state="pending")[0]
        _trials(session, sid, retry.id, "complete", 4, 2)
        repo.set_population_state(session, population_id=retry.id, state="complete")
    p = _progress(sessions, sid)
    assert p["done"] == 6 and p["budget"] == 6  # 6/6, not 6/4
