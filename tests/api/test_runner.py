"""search.coordinator.runner: picking searches, the one-runner lock, finding searches to resume."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy.orm import Session, sessionmaker

from core.errors import Conflict
from search.coordinator import release_interrupted, search_lock
from search.coordinator.local import lock_path
from search.coordinator.runner import Runner, interrupt_orphans, orphaned_searches, runner_lock
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


def _running_with_asked_trials(url: str, sessions: sessionmaker[Session], sid: int,
                               home: Path) -> tuple[int, str]:
    """A search whose process died mid-population: running, one trial asked, lock file left."""
    with sessions.begin() as session:
        repo.set_search_state(session, search_id=sid, state="running")
        pop = repo.add_population(session, search_id=sid, family="relu", structural={}, k=1)
        repo.claim_population(session, population_id=pop.id, worker="local:gone:1")
        study_name = repo.get_search(session, search_id=sid).study_name
        pop_id = pop.id
    study = optuna.load_study(study_name=study_name, storage=url)
    trial = study.ask({"family": optuna.distributions.CategoricalDistribution(["relu"])})
    with sessions.begin() as session:
        repo.record_asked_trials(session, population_id=pop_id, trial_numbers=[trial.number])
    lock_path(home, sid).parent.mkdir(parents=True, exist_ok=True)
    lock_path(home, sid).write_text("1\n")  # its holder is gone: the lock is free
    return pop_id, study_name


def test_orphaned_searches_are_those_whose_process_is_gone(tmp_path: Path, db) -> None:
    url, sessions = db
    killed, interrupted, fresh_cli, done = (_search(url, sessions, n) for n in
                                            ("killed", "interrupted", "cli", "done"))
    _running_with_asked_trials(url, sessions, killed, tmp_path)
    with sessions.begin() as session:
        repo.set_search_state(session, search_id=fresh_cli, state="running")  # no lock file yet
        repo.set_search_state(session, search_id=interrupted, state="running")
        repo.transition_search(session, search_id=interrupted, from_states=["running"],
                               to_state="interrupted")
        repo.set_search_state(session, search_id=done, state="complete")
    assert orphaned_searches(sessions, tmp_path) == [killed, interrupted]
    with search_lock(tmp_path, killed):  # a live process holds it: not an orphan
        assert orphaned_searches(sessions, tmp_path) == [interrupted]


def test_interrupt_orphans_requeues_the_population_with_its_trials(tmp_path: Path, db) -> None:
    url, sessions = db
    sid = _search(url, sessions, "killed")
    pop_id, study_name = _running_with_asked_trials(url, sessions, sid, tmp_path)
    assert interrupt_orphans(sessions, tmp_path) == [sid]
    with sessions() as session:
        assert repo.get_search(session, search_id=sid).state == "interrupted"
        pop = repo.get_population(session, population_id=pop_id)
        assert pop.state == "pending" and pop.worker is None and pop.trial_numbers == [0]
    # the asked trial stays Optuna's RUNNING until the resumed search trains it
    states = [t.state for t in optuna.load_study(study_name=study_name, storage=url).trials]
    assert states == [TrialState.RUNNING]


def test_resume_of_a_finished_search_is_refused(tmp_path: Path, db) -> None:
    url, sessions = db
    sid = _search(url, sessions, "done")
    with sessions.begin() as session:
        repo.set_search_state(session, search_id=sid, state="cancelled")
    with pytest.raises(Conflict, match="cancelled: only an interrupted"):
        release_interrupted(sessions, search_id=sid, storage_url=url)


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
        assert runner.next_search() == second
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
        runner.run_one(sid)  # returns at once: planning pending -> running fails
        with sessions() as session:
            row = repo.get_search(session, search_id=sid)
            assert row.state == "cancelled" and row.started_at is None
            assert repo.list_populations(session, search_id=sid) == []
    finally:
        runner.close()


def test_runner_analyses_finished_searches_beside_the_next_one(tmp_path: Path, db) -> None:
    """After a search (and on start) the runner's thread runs pending and orphaned analyses."""
    from search.analysis.run import analysis_lock
    from store.tables import FitRow

    url, sessions = db
    sid = _search(url, sessions, "analyse me")
    runner = Runner(database_url=url, home=tmp_path, workers=1, threads=1, poll_s=0.01)
    try:
        runner.run_one(sid)
        with sessions() as session:
            row = repo.get_search(session, search_id=sid)
            assert (row.state, row.analysis_state) == ("complete", "pending")
        thread = runner.analyse_pending()
        assert thread is not None and thread.daemon
        assert runner.analyse_pending() is None  # one analysis thread at a time
        thread.join(120)
        with sessions() as session:
            assert repo.get_search(session, search_id=sid).analysis_state == "done"
            networks = session.query(FitRow).filter(FitRow.kind == "network").count()
        assert networks == TINY_SPEC["finalist_seeds"]  # the prelu finalists
        # killed mid-analysis (running, network rows missing): resumed, unless a live
        # process (here: this one, holding the lock) still runs it
        with sessions.begin() as session:
            session.query(FitRow).filter(FitRow.kind == "network").delete()
            repo.set_analysis_state(session, search_id=sid, state="running")
        with analysis_lock(sessions, sid) as held:
            assert held and runner.analyse_pending() is None
        thread = runner.analyse_pending()
        assert thread is not None
        thread.join(120)
        with sessions() as session:
            assert repo.get_search(session, search_id=sid).analysis_state == "done"
            assert session.query(FitRow).filter(FitRow.kind == "network").count() == networks
    finally:
        runner.close()


def test_consecutive_searches_train_in_the_same_warm_processes_and_data_is_sent_once(
    tmp_path: Path, db
) -> None:
    """The runner's trainer pool outlives a search: the second search on the same data
    trains in the same process (pid unchanged) and is not sent the dataset again."""
    url, sessions = db
    first, second = _search(url, sessions, "first"), _search(url, sessions, "second")
    runner = Runner(database_url=url, home=tmp_path, workers=1, threads=1, poll_s=0.01)
    try:
        runner.run_one(first)
        pids, sent = runner.pool.pids(), runner.pool.stats.data_sent
        assert pids[0] is not None and runner.pool.children[0].alive()
        assert sent == 1  # search, finalist and scoring populations of one dataset: one send
        runner.run_one(second)
        assert runner.pool.pids() == pids and runner.pool.children[0].alive()
        assert runner.pool.stats.started == 1
        assert runner.pool.stats.data_sent == 1  # the child still held it
        with sessions() as session:
            assert [repo.get_search(session, search_id=s).state
                    for s in (first, second)] == ["complete", "complete"]
    finally:
        runner.close()
    assert not runner.pool.children  # closed with the runner
