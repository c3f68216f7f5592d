"""Waiting for a search's curve analysis (fits, distillation), which runs after it completes."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from store import repo

Sessions = sessionmaker[Session]


def analysis_state(sessions: Sessions, search_id: int) -> tuple[str | None, str | None]:
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        return row.analysis_state, row.analysis_error


def wait_analysis(sessions: Sessions, search_id: int, *, run_here: bool = False,
                  timeout_s: float = 120.0, describe: Any = None) -> str:
    """The search's analysis, finished: ``done`` is asserted; returns the state.

    ``run_here``: an embedded test (no runner, no worker) runs it in this process, as
    ``actsearch search`` does after its leaderboard; otherwise it is polled for (a
    Celery worker's ``search.analyse``, a runner's thread) for up to ``timeout_s``.
    """
    if run_here:
        from search.analysis.run import analyse_search

        analyse_search(sessions, search_id)
    end = time.monotonic() + timeout_s
    state, error = analysis_state(sessions, search_id)
    while state in ("pending", "running") and time.monotonic() < end:
        time.sleep(0.25)
        state, error = analysis_state(sessions, search_id)
    if state is None and not _has_trainable_trial(sessions, search_id):
        return "none"  # nothing to analyse: the search trained no trainable family
    extra = describe() if callable(describe) else ""
    assert state == "done", f"analysis of search {search_id} is {state}: {error}\n{extra}"
    return state


def analyse_url(url: str, search_id: int) -> str:
    """:func:`wait_analysis` run here, on a database given by URL (its own engine)."""
    from store.db import make_engine, session_factory

    engine = make_engine(url)
    try:
        return wait_analysis(session_factory(engine), search_id, run_here=True)
    finally:
        engine.dispose()


def _has_trainable_trial(sessions: Sessions, search_id: int) -> bool:
    from models.catalogue import is_trainable

    with sessions() as session:
        return any(t.state == "complete" and is_trainable(t.family)
                   for t in repo.list_trials(session, search_id=search_id, limit=None))
