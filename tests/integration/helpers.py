"""Shared helpers of the integration tests: create searches, read their state, wait."""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy.orm import Session, sessionmaker

from search.service import create_search
from search.spec import SearchSpec
from store import repo

Sessions = sessionmaker[Session]


def new_search(sessions: Sessions, storage_url: str, **spec: Any) -> int:
    """A committed, pending search (its Optuna study created) for ``spec``."""
    with sessions.begin() as session:
        row = create_search(session=session, spec=SearchSpec(**spec), storage_url=storage_url)
        return int(row.id)


def search_state(sessions: Sessions, search_id: int) -> str:
    with sessions() as session:
        return str(repo.get_search(session, search_id=search_id).state)


def populations(sessions: Sessions, search_id: int) -> list[Any]:
    with sessions() as session:
        return repo.list_populations(session, search_id=search_id)


def trials(sessions: Sessions, search_id: int, **filters: Any) -> list[Any]:
    with sessions() as session:
        return repo.list_trials(session, search_id=search_id, limit=None, **filters)


def optuna_states(sessions: Sessions, search_id: int, storage_url: str) -> dict[int, TrialState]:
    with sessions() as session:
        study_name = repo.get_search(session, search_id=search_id).study_name
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        return {t.number: t.state for t in study.get_trials(deepcopy=False)}
    finally:
        storage.engine.dispose()


def wait_state(sessions: Sessions, search_id: int, states: tuple[str, ...], timeout_s: float,
               describe: Any = None) -> str:
    """Poll until the search reaches one of ``states``; fail with the populations and logs."""
    end = time.monotonic() + timeout_s
    state = search_state(sessions, search_id)
    while state not in states and time.monotonic() < end:
        time.sleep(0.5)
        state = search_state(sessions, search_id)
    if state not in states:
        pops = [(p.id, p.phase, p.family, p.state, p.worker, p.attempts, p.error)
                for p in populations(sessions, search_id)]
        extra = describe() if callable(describe) else ""
        raise AssertionError(f"search {search_id} is {state}, wanted {states} within "
                             f"{timeout_s:.0f}s; populations: {pops}\n{extra}")
    return state


def submit(search_id: int) -> None:
    """Send a planned search's start message to the broker, as the API does."""
    from worker.enqueue import submit_search

    submit_search(search_id)
