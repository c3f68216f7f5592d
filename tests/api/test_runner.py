"""search.runner: picking searches, the one-runner lock, recovery after a crash."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.orm import Session, sessionmaker

from search import runner as runner_mod
from search.runner import Runner, read_claim, recover, runner_lock, write_claim
from search.service import create_search
from search.spec import parse_spec
from store import repo
from store.db import init_db, make_engine, session_factory
from tests.api.conftest import TINY_SPEC


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, sessionmaker[Session]]]:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    engine = make_engine(url)
    yield url, session_factory(engine)
    engine.dispose()


def _search(url: str, sessions: sessionmaker[Session], name: str) -> int:
    with sessions.begin() as session:
        return create_search(session=session, spec=parse_spec(TINY_SPEC), storage_url=url,
                             name=name).id


def test_recover_fails_only_the_claimed_search(tmp_path: Path, db) -> None:
    url, sessions = db
    crashed, from_cli = _search(url, sessions, "crashed"), _search(url, sessions, "cli")
    with sessions.begin() as session:
        for sid in (crashed, from_cli):
            repo.set_search_state(session, search_id=sid, state="running")
        pop = repo.add_population(session, search_id=crashed, family="relu", structural={}, k=2)
        pop_id, study_name = pop.id, repo.get_search(session, search_id=crashed).study_name
    study = optuna.load_study(study_name=study_name, storage=url)
    study.ask()  # left RUNNING by the dead runner
    write_claim(tmp_path, crashed)

    assert recover(tmp_path, sessions, url) == crashed
    with sessions() as session:
        row = repo.get_search(session, search_id=crashed)
        assert row.state == "failed" and "interrupted" in row.error
        assert "submit the search again" in row.error
        assert repo.get_population(session, population_id=pop_id).state == "failed"
        assert repo.get_search(session, search_id=from_cli).state == "running"  # not ours
    states = {t.state for t in optuna.load_study(study_name=study_name, storage=url).trials}
    assert states == {TrialState.FAIL}
    assert read_claim(tmp_path) is None
    assert recover(tmp_path, sessions, url) is None  # nothing claimed any more


def test_recover_ignores_a_claim_on_a_finished_search(tmp_path: Path, db) -> None:
    url, sessions = db
    sid = _search(url, sessions, "done")
    with sessions.begin() as session:
        repo.set_search_state(session, search_id=sid, state="cancelled")
    write_claim(tmp_path, sid)
    assert recover(tmp_path, sessions, url) is None
    with sessions() as session:
        assert repo.get_search(session, search_id=sid).state == "cancelled"
    (tmp_path / runner_mod.CLAIM_FILE).write_text("{garbage")
    assert recover(tmp_path, sessions, url) is None


def test_runner_lock_is_exclusive(tmp_path: Path) -> None:
    with runner_lock(tmp_path) as held:
        assert held is True
        with runner_lock(tmp_path, poll_s=0.01, should_stop=lambda: True) as second:
            assert second is False  # a second runner waits (here: gives up at once)
    with runner_lock(tmp_path) as again:
        assert again is True  # released with its holder


def test_oldest_pending_first_and_a_broken_search_does_not_stop_the_loop(
    tmp_path: Path, db
) -> None:
    url, sessions = db
    first, second = _search(url, sessions, "first"), _search(url, sessions, "second")
    with sessions.begin() as session:
        broken = repo.get_search(session, search_id=first)
        optuna.delete_study(study_name=broken.study_name, storage=url)  # cannot be loaded
    runner = Runner(database_url=url, home=tmp_path, workers=1, threads=1, poll_s=0.01)
    try:
        assert runner.next_search() == first
        runner.run_one(first)
        with sessions() as session:
            row = repo.get_search(session, search_id=first)
            assert row.state == "failed" and "could not run this search" in row.error
        assert runner.next_search() == second and read_claim(tmp_path) is None
    finally:
        runner.close()


def test_a_search_cancelled_after_it_was_picked_is_not_run(tmp_path: Path, db) -> None:
    url, sessions = db
    sid = _search(url, sessions, "cancel me")
    runner = Runner(database_url=url, home=tmp_path, workers=1, threads=1, poll_s=0.01)
    try:
        assert runner.next_search() == sid
        with sessions.begin() as session:
            repo.set_search_state(session, search_id=sid, state="cancelled")
        runner.run_one(sid)  # returns at once: the claim pending -> running fails
        with sessions() as session:
            row = repo.get_search(session, search_id=sid)
            assert row.state == "cancelled" and row.started_at is None
        assert read_claim(tmp_path) is None
    finally:
        runner.close()
