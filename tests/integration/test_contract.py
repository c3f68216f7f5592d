"""The search contract, the same in both modes (as optuna runs every storage test on every backend).

One spec runs embedded (SQLite, the coordinator's training children) and distributed
(PostgreSQL, Redis, a real ``actsearch worker`` and ``actsearch beat``); each must
give the same trial accounting, leaderboard shape, curves, statistics and fits (the fits
once the search's analysis, run after it completes, is done).
The expectations are written once, from the spec, and checked against both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.orm import Session, sessionmaker

from search.protocol import build_leaderboard
from search.service import create_search
from search.spec import SearchSpec
from store import repo
from tests.utils.analysis import wait_analysis

SPEC: dict[str, Any] = {"dataset": "wine", "architecture": "mlp:8", "families": ["relu", "rational"],
                        "trials": 4, "epochs": 4, "population_size": 2, "finalist_seeds": 2,
                        "batch_size": 32, "pruner": "none", "seed": 5}
TRIALS_PER_FAMILY = {"relu": 2, "rational": 2}
TRAINABLE = "rational"


@dataclass
class Finished:
    """A search run to its end in one mode: where its rows are."""

    mode: str
    sessions: sessionmaker[Session]
    url: str
    search_id: int


def _new_search(sessions: sessionmaker[Session], url: str, spec: dict[str, Any] | None = None
                ) -> int:
    with sessions.begin() as session:
        return int(create_search(session=session, spec=SearchSpec(**(spec or SPEC)),
                                 storage_url=url).id)


def _embedded(tmp_path: Path, spec: dict[str, Any] | None = None) -> Finished:
    from search.coordinator import EmbeddedCoordinator
    from store.db import init_db, make_engine, session_factory

    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    search_id = _new_search(sessions, url, spec)
    EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id, workers=1,
                        threads=1, home=tmp_path).run()
    wait_analysis(sessions, search_id, run_here=True)  # as `actsearch search` does next
    return Finished("embedded", sessions, url, search_id)


def _distributed(request: pytest.FixtureRequest, spec: dict[str, Any] | None = None) -> Finished:
    from tests.integration.helpers import submit, wait_state

    cluster = request.getfixturevalue("cluster")
    sessions = request.getfixturevalue("sessions")
    url = request.getfixturevalue("distributed_env")["ACTSEARCH_DATABASE_URL"]
    cluster.start("w1")
    search_id = _new_search(sessions, url, spec)
    submit(search_id)
    wait_state(sessions, search_id, ("complete", "failed"), 240, cluster.logs)
    wait_analysis(sessions, search_id, timeout_s=240, describe=cluster.logs)  # search.analyse
    return Finished("distributed", sessions, url, search_id)


@pytest.fixture(params=["embedded", pytest.param("distributed", marks=pytest.mark.integration)])
def finished(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Finished]:
    yield _embedded(tmp_path) if request.param == "embedded" else _distributed(request)


def _rows(f: Finished, **filters: Any) -> list[Any]:
    with f.sessions() as session:
        return repo.list_trials(session, search_id=f.search_id, limit=None, **filters)


def test_optuna_trials_are_one_to_one_with_our_rows(finished: Finished) -> None:
    with finished.sessions() as session:
        search = repo.get_search(session, search_id=finished.search_id)
        assert search.state == "complete", search.error
        study_name = search.study_name
    storage = optuna.storages.RDBStorage(finished.url)
    try:
        trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    rows = _rows(finished, phase="search")
    assert sorted(t.number for t in trials) == sorted(r.trial_number for r in rows)
    assert all(t.state == TrialState.COMPLETE for t in trials)
    per_family: dict[str, int] = {}
    for r in rows:
        per_family[r.family] = per_family.get(r.family, 0) + 1
        assert r.started_at is not None and r.started_at <= r.finished_at
    assert per_family == TRIALS_PER_FAMILY


def test_leaderboard_has_every_family_on_its_seeds_and_one_test_score(finished: Finished) -> None:
    rows = _rows(finished)
    board = build_leaderboard(rows, "accuracy")
    assert sorted(r.family for r in board.rows) == sorted(TRIALS_PER_FAMILY)
    assert all(r.n_seeds == SPEC["finalist_seeds"] for r in board.rows)
    assert [r.family for r in board.rows if r.baseline] == ["relu"]
    assert board.winner is not None and board.winner.test_mean is not None
    scored = {r.family for r in rows if r.test_value is not None}
    assert scored == {board.winner.family}  # the test split scores the final choice only
    with finished.sessions() as session:
        best = repo.get_search(session, search_id=finished.search_id).best
    assert best["family"] == board.winner.family and best["metric"] == "accuracy"


def test_curves_statistics_and_fits_are_stored_alike(finished: Finished) -> None:
    with finished.sessions() as session:
        for trial in _rows(finished):
            stats = repo.trial_preact_stats(session, trial_id=trial.id)
            assert {s["layer"] for s in stats} == {0}, trial.id
            if trial.family != TRAINABLE:
                continue
            curves = repo.trial_curves(session, trial_id=trial.id)
            assert curves and {c["layer"] for c in curves} == {0}
            assert max(c["epoch"] for c in curves) == SPEC["epochs"]
            kinds = {f["kind"] for f in repo.trial_fits(session, trial_id=trial.id)}
            assert "closed_form" in kinds and "linear" in kinds, (trial.phase, kinds)
            if trial.phase == "finalist":
                assert "network" in kinds  # distillation and merging of the finalist


CONTROL_SPEC: dict[str, Any] = {**SPEC, "families": ["relu", "gelu"], "control": "relu",
                                "finalist_seeds": 2}


@pytest.mark.parametrize("mode", ["embedded", pytest.param("distributed",
                                                           marks=pytest.mark.integration)])
def test_the_control_arm_matches_the_search_compute_in_both_modes(
        mode: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """``control: relu``: the same shared steps plan and score it whatever the executor."""
    f = (_embedded(tmp_path, CONTROL_SPEC) if mode == "embedded"
         else _distributed(request, CONTROL_SPEC))
    with f.sessions() as session:
        search = repo.get_search(session, search_id=f.search_id)
        assert search.state == "complete", search.error
        compute = repo.search_candidate_epochs(session, search_id=f.search_id)
        k = max(p.k for p in repo.list_populations(session, search_id=f.search_id)
                if p.phase == "control")
    main = compute["search"] + compute["finalist"]
    control = compute["control"] + compute["control_finalist"]
    assert abs(control - main) <= k * CONTROL_SPEC["epochs"], compute
    stored = search.best["control"]
    assert stored["family"] == "relu" and stored["test_mean"] is not None
    assert stored["verdict"] in ("helped", "did_not_help", "hurt")
    board = build_leaderboard(_rows(f), "accuracy")
    assert sorted(r.family for r in board.rows) == ["gelu", "relu"]  # the control is not ranked
