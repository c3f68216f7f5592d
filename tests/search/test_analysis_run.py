"""search.analysis.run: the curve analysis runs after a search is complete, never before it.

One tiny embedded search (iris, relu + rational) runs once; each test works on its own
copy of that database, so each starts from the same "complete, analysis pending" rows.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from search.analysis import run as analysis_run
from search.analysis.run import analyse_search, analysis_lock, orphaned, pending_analyses
from search.coordinator import EmbeddedCoordinator
from search.progress import search_leaderboard
from search.service import create_search
from search.spec import parse_spec
from store import repo
from store.db import init_db, make_engine, session_factory

SPEC = {"dataset": "iris", "architecture": "mlp:8", "families": ["relu", "rational"],
        "trials": 4, "epochs": 2, "finalist_seeds": 2, "batch_size": 32, "seed": 3}


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """A database holding one complete search whose analysis has not run."""
    home = tmp_path_factory.mktemp("analysis-run")
    url = f"sqlite:///{home / 'actsearch.db'}"
    init_db(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        search_id = create_search(session=session, spec=parse_spec(SPEC), storage_url=url,
                                  name="analysis").id
    EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id, workers=1,
                        threads=1, home=home).run()
    engine.dispose()
    return home / "actsearch.db", search_id


@pytest.fixture
def db(searched: tuple[Path, int], tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], int]]:
    path, search_id = searched
    for suffix in ("", "-wal", "-shm"):  # Optuna's cached storage may hold the WAL open
        if Path(f"{path}{suffix}").exists():
            shutil.copy(f"{path}{suffix}", tmp_path / f"actsearch.db{suffix}")
    engine = make_engine(f"sqlite:///{tmp_path / 'actsearch.db'}")
    yield session_factory(engine), search_id
    engine.dispose()


def _fits(sessions: sessionmaker[Session], search_id: int) -> dict[int, list[str]]:
    with sessions() as session:
        return {t.id: [f["kind"] for f in repo.trial_fits(session, trial_id=t.id)]
                for t in repo.list_trials(session, search_id=search_id, limit=None)}


def _rational(sessions: sessionmaker[Session], search_id: int) -> list[Any]:
    with sessions() as session:
        return [t for t in repo.list_trials(session, search_id=search_id, limit=None)
                if t.family == "rational" and t.state == "complete"]


def test_complete_with_its_leaderboard_before_any_fit(db: tuple[Any, int]) -> None:
    sessions, search_id = db
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        assert row.state == "complete" and row.best is not None
        assert (row.analysis_state, row.analysis_error) == ("pending", None)
        board = search_leaderboard(session, row=row)
    assert {r.family for r in board.rows} == {"relu", "rational"}
    assert all(kinds == [] for kinds in _fits(sessions, search_id).values())
    assert pending_analyses(sessions) == [search_id]

    report = analyse_search(sessions, search_id)

    assert report.ran and report.state == "done" and report.error is None
    rational = _rational(sessions, search_id)
    assert report.fitted == len(rational) and report.distilled == 2  # 2 finalist seeds
    fits = _fits(sessions, search_id)
    for t in rational:
        assert {"closed_form", "linear", "distilled"} <= set(fits[t.id])
        assert ("network" in fits[t.id]) == (t.phase == "finalist")
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        assert row.state == "complete" and row.analysis_state == "done"
        assert search_leaderboard(session, row=row) == board  # the analysis never touches it
    assert pending_analyses(sessions) == []


def test_idempotent_a_rerun_redoes_only_what_is_missing(db: tuple[Any, int]) -> None:
    sessions, search_id = db
    assert analyse_search(sessions, search_id).state == "done"
    full = _fits(sessions, search_id)
    again = analyse_search(sessions, search_id)
    assert not again.ran and again.state == "done" and _fits(sessions, search_id) == full
    # A process killed mid-analysis: one trial's fits and one finalist's network row missing,
    # the state left running with its lock free.
    rational = _rational(sessions, search_id)
    search_trial = next(t for t in rational if t.phase == "search")
    finalist = next(t for t in rational if t.phase == "finalist")
    from store.tables import FitRow

    with sessions.begin() as session:
        session.query(FitRow).filter(FitRow.trial_id == search_trial.id).delete()
        session.query(FitRow).filter(FitRow.trial_id == finalist.id,
                                     FitRow.kind == "network").delete()
        repo.set_analysis_state(session, search_id=search_id, state="running")
    assert orphaned(sessions, search_id) and pending_analyses(sessions) == [search_id]
    resumed = analyse_search(sessions, search_id)
    assert (resumed.state, resumed.fitted, resumed.distilled) == ("done", 1, 1)
    assert _fits(sessions, search_id) == full


def test_one_process_at_a_time(db: tuple[Any, int]) -> None:
    sessions, search_id = db
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with analysis_lock(sessions, search_id) as got:
            assert got
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        assert not orphaned(sessions, search_id)
        busy = analyse_search(sessions, search_id)
        assert busy.state == "busy" and not busy.ran
    finally:
        release.set()
        holder.join()
    assert orphaned(sessions, search_id)
    assert all(kinds == [] for kinds in _fits(sessions, search_id).values())


def test_interrupted_analysis_goes_back_to_pending(db: tuple[Any, int]) -> None:
    sessions, search_id = db
    steps: list[str] = []

    def ctrl_c_at_second(step: str) -> None:
        steps.append(step)
        if len(steps) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyse_search(sessions, search_id, on_step=ctrl_c_at_second)
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        assert (row.state, row.analysis_state) == ("complete", "pending")
    assert sum(bool(k) for k in _fits(sessions, search_id).values()) == 1  # the first is kept
    report = analyse_search(sessions, search_id)
    assert report.state == "done" and report.fitted == len(_rational(sessions, search_id)) - 1


def test_failing_analysis_leaves_the_search_complete(db: tuple[Any, int],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, search_id = db
    from search.analysis import distillation

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError("distillation exploded")

    monkeypatch.setattr(distillation, "finalist_network_row", boom)
    with sessions() as session:
        before = repo.get_search(session, search_id=search_id)
        board = search_leaderboard(session, row=before)
        best = before.best
    report = analyse_search(sessions, search_id)
    assert report.state == "failed" and report.distilled == 0
    assert report.fitted == len(_rational(sessions, search_id))  # the fits are kept
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        assert (row.state, row.analysis_state, row.best) == ("complete", "failed", best)
        assert "distillation of finalist" in row.analysis_error
        assert "RuntimeError: distillation exploded" in row.analysis_error
        assert search_leaderboard(session, row=row) == board
    assert pending_analyses(sessions) == []  # a failed analysis is not retried by itself


def test_an_error_outside_one_trial_fails_it_at_once(db: tuple[Any, int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sessions, search_id = db

    def lost(*_: Any, **__: Any) -> Any:
        raise FileNotFoundError("dataset artifact gone")

    monkeypatch.setattr("search.coordinator.data.prepared_data", lost)
    report = analyse_search(sessions, search_id)
    assert report.state == "failed" and "FileNotFoundError: dataset artifact gone" in report.error
    with sessions() as session:
        assert repo.get_search(session, search_id=search_id).state == "complete"


def test_nothing_to_analyse_leaves_the_state_null(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    spec = {**SPEC, "families": ["relu", "gelu"], "trials": 2, "epochs": 1, "finalist_seeds": 1}
    with sessions.begin() as session:
        search_id = create_search(session=session, spec=parse_spec(spec), storage_url=url).id
    EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id, workers=1,
                        threads=1, home=tmp_path).run()
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        assert row.state == "complete" and row.analysis_state is None
    report = analyse_search(sessions, search_id)
    assert not report.ran and report.state is None
    engine.dispose()


def test_lock_file_lives_beside_the_database(db: tuple[Any, int]) -> None:
    sessions, search_id = db
    path = analysis_run._lock_file(sessions, search_id)
    bind = sessions.kw["bind"]
    assert path == Path(bind.url.database).parent / "locks" / f"analysis-{search_id}.lock"
