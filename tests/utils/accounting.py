"""Checks that a search's trials are accounted for exactly once, in Optuna and in our rows."""

from __future__ import annotations

from pathlib import Path

from store import repo
from store.db import make_engine, session_factory


def accounted_once(home: Path, search_id: int) -> dict[str, int]:
    """Every Optuna trial has exactly one row and none is RUNNING; returns trials per family."""
    import optuna
    from optuna.trial import TrialState

    url = f"sqlite:///{home / 'actsearch.db'}"
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            row = repo.get_search(session, search_id=search_id)
            trials = repo.list_trials(session, search_id=search_id, phase="search", limit=None)
            study_name = row.study_name
    finally:
        engine.dispose()
    numbers = [t.trial_number for t in trials]
    assert len(numbers) == len(set(numbers)), "a trial was recorded twice"
    study = optuna.load_study(study_name=study_name, storage=url)
    assert {t.number for t in study.trials} == set(numbers)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert all(t.state == "complete" for t in trials), [t.error for t in trials if t.error]
    per_family: dict[str, int] = {}
    for t in trials:
        per_family[t.family] = per_family.get(t.family, 0) + 1
    return per_family
