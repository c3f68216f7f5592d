"""Schedules obey every limit a direct search obeys, at creation and at each firing.

A firing is a search created without a request, so without these checks a schedule
would be a way around the service's limits: a width the API refuses, more searches
than ``max_active_searches_per_owner``, any number of schedules per owner.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.errors import InvalidInput, LimitExceeded
from core.settings import LimitSettings, TrainingSettings
from search import schedules
from search.datasets import load_builtin
from search.service import register_dataset
from store import repo
from store.db import init_db, make_engine, session_factory
from store.tables import DatasetRow, SearchRow

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)
SPEC = {"dataset": "iris", "architecture": "mlp:8", "families": ["relu"], "trials": 2,
        "epochs": 2}
TRAINING = TrainingSettings(memory_budget_mb=1024)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session]]]:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    engine = make_engine(url)
    yield url, session_factory(engine)
    engine.dispose()


def _create(sessions: sessionmaker[Session], limits: LimitSettings, *,
            spec: dict[str, Any] | None = None, owner: str | None = "alice") -> int:
    with sessions.begin() as session:
        return schedules.create_schedule(
            session, name=None, cron="0 3 * * *", now=T0, owner=owner, allow_files=False,
            template={"kind": "rerun", "spec": spec or SPEC}, limits=limits,
            training=TRAINING).id


def _fire(url: str, sessions: sessionmaker[Session], schedule_id: int, limits: LimitSettings,
          training: TrainingSettings = TRAINING) -> int | None:
    with sessions() as session:
        due = repo.get_schedule(session, schedule_id=schedule_id).next_run_at
    return schedules.fire_schedule(sessions, schedule_id, storage_url=url,
                                   expected_next_run_at=due, now=due + timedelta(seconds=1),
                                   limits=limits, training=training)


def test_schedules_per_owner_are_capped(db: tuple[str, sessionmaker[Session]]) -> None:
    _, sessions = db
    limits = LimitSettings(max_schedules_per_owner=2)
    _create(sessions, limits)
    _create(sessions, limits)
    with pytest.raises(LimitExceeded, match=r"already has 2 schedules, the limit "
                       r"\(ACTSEARCH_LIMITS__MAX_SCHEDULES_PER_OWNER = 2\)"):
        _create(sessions, limits)
    _create(sessions, limits, owner="bob")  # another owner's count is their own


def test_a_firing_over_the_active_limit_is_skipped_and_recorded(
        db: tuple[str, sessionmaker[Session]]) -> None:
    url, sessions = db
    limits = LimitSettings(max_active_searches_per_owner=1)
    sid = _create(sessions, limits)
    first = _fire(url, sessions, sid, limits)
    assert first is not None  # pending: it counts as active
    assert _fire(url, sessions, sid, limits) is None
    with sessions() as session:
        row = repo.get_schedule(session, schedule_id=sid)
        assert row.last_error and "skipped" in row.last_error
        assert "MAX_ACTIVE_SEARCHES_PER_OWNER = 1" in row.last_error
        assert repo.count_active_searches(session, owner="alice") == 1
    # once the first is done, the next firing runs again
    with sessions.begin() as session:
        session.execute(update(SearchRow).values(state="completed"))
    assert _fire(url, sessions, sid, limits) is not None


def test_a_firing_checks_the_limits_in_force_when_it_fires(
        db: tuple[str, sessionmaker[Session]]) -> None:
    """Valid when made; the service's limits tighten later: the firing is refused as a
    direct search would be, and nothing is created."""
    url, sessions = db
    limits = LimitSettings()
    sid = _create(sessions, limits, spec={**SPEC, "architecture": "mlp:8"})
    assert _fire(url, sessions, sid, LimitSettings(max_width=4)) is None
    with sessions() as session:
        row = repo.get_schedule(session, schedule_id=sid)
        assert row.last_error and "width 8 is above the limit 4" in row.last_error
        assert repo.count_active_searches(session, owner="alice") == 0


def test_a_firing_too_big_to_train_is_refused_and_registers_nothing(
        db: tuple[str, sessionmaker[Session]]) -> None:
    url, sessions = db
    limits = LimitSettings()
    sid = _create(sessions, limits, spec={**SPEC, "dataset": "wine",
                                          "architecture": "mlp:4096,4096,4096"})
    assert _fire(url, sessions, sid, limits, TrainingSettings(memory_budget_mb=64)) is None
    with sessions() as session:
        row = repo.get_schedule(session, schedule_id=sid)
        assert row.last_error and "training memory budget" in row.last_error
        assert session.query(DatasetRow).count() == 0  # the built-in was not registered


def test_a_rerun_on_an_unused_builtin_gets_the_width_and_layer_checks(
        db: tuple[str, sessionmaker[Session]]) -> None:
    _, sessions = db
    limits = LimitSettings(max_width=64, max_layers=2)
    with pytest.raises(InvalidInput, match=r"hidden width 9000 is above the limit 64"):
        _create(sessions, limits, spec={**SPEC, "architecture": "mlp:9000"})
    with pytest.raises(InvalidInput, match=r"3 hidden layers is above the limit 2"):
        _create(sessions, limits, spec={**SPEC, "architecture": "mlp:8,8,8"})
    with sessions() as session:
        assert session.query(DatasetRow).count() == 0


def test_add_trials_firings_get_the_checks_too(db: tuple[str, sessionmaker[Session]]) -> None:
    url, sessions = db
    with sessions.begin() as session:
        register_dataset(session, dataset=load_builtin("iris"), owner="alice")
    limits = LimitSettings(max_active_searches_per_owner=1)
    sid = _create(sessions, limits)
    parent = _fire(url, sessions, sid, limits)
    assert parent is not None
    with sessions.begin() as session:
        session.execute(update(SearchRow).values(state="completed"))
        add = schedules.create_schedule(
            session, name=None, cron="0 3 * * *", now=T0, owner="alice",
            template={"kind": "add_trials", "search_id": parent, "trials": 2},
            limits=limits, training=TRAINING, scope="alice").id
    assert _fire(url, sessions, add, LimitSettings(max_trials=1)) is None
    with sessions() as session:
        assert "trials: 2 is above this service's limit of 1" in (
            repo.get_schedule(session, schedule_id=add).last_error or "")
