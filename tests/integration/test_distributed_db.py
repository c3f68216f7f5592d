"""search.coordinator (the distributed steps) against real PostgreSQL, in this process: the races a cluster creates.

The worker-process tests (test_workers.py) show the whole topology; these pin
the atomic steps underneath it deterministically: one claim wins, a stale
population is given up exactly once and retried, orphaned RUNNING trials are
failed, finalists are planned once when two workers advance together.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from search import coordinator as distributed
from search.protocol import build_leaderboard
from store import repo
from store.tables import PopulationRow, utcnow
from tests.integration.helpers import new_search, optuna_states, populations, trials

pytestmark = pytest.mark.integration

TINY = {"dataset": "iris", "architecture": "mlp:8", "families": ["relu", "tanh"], "trials": 4,
        "epochs": 3, "population_size": 1, "finalist_seeds": 2, "batch_size": 32}


@pytest.fixture
def url(distributed_env: dict[str, str]) -> str:
    return distributed_env["ACTSEARCH_DATABASE_URL"]


def _plan(sessions: sessionmaker[Session], url: str, **spec: object) -> tuple[int, list[int]]:
    search_id = new_search(sessions, url, **{**TINY, **spec})
    with sessions.begin() as session:
        ids = distributed.plan_search(session, search_id=search_id)
    return search_id, ids


def _age_heartbeat(sessions: sessionmaker[Session], population_id: int, seconds: float) -> None:
    with sessions.begin() as session:
        session.execute(update(PopulationRow).where(PopulationRow.id == population_id)
                        .values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def _mine(sessions: sessionmaker[Session], search_id: int, population_ids: list[int]) -> list[int]:
    """The ids among ``population_ids`` that belong to ``search_id`` (the database is shared)."""
    own = {p.id for p in populations(sessions, search_id)}
    return [pid for pid in population_ids if pid in own]


def test_plan_is_round_robin_equal_budgets_and_runs_once(
    sessions: sessionmaker[Session], url: str
) -> None:
    search_id, ids = _plan(sessions, url)
    pops = populations(sessions, search_id)
    assert [p.id for p in pops] == ids
    assert [p.family for p in pops] == ["relu", "tanh", "relu", "tanh"]
    assert all(p.state == "pending" and p.task_id for p in pops)
    with sessions.begin() as session:  # a second search.start plans nothing
        assert distributed.plan_search(session, search_id=search_id) == []
    assert len(populations(sessions, search_id)) == 4


def test_exactly_one_of_many_concurrent_claims_wins(
    sessions: sessionmaker[Session], url: str
) -> None:
    _, ids = _plan(sessions, url)
    wins: list[str] = []
    barrier = threading.Barrier(6)

    def claim(name: str) -> None:
        barrier.wait()
        with sessions.begin() as session:
            if repo.claim_population(session, population_id=ids[0], worker=name):
                wins.append(name)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    with sessions() as session:
        pop = repo.get_population(session, population_id=ids[0])
        assert (pop.state, pop.worker, pop.attempts) == ("running", wins[0], 1)


def test_in_process_run_to_completion_and_duplicate_delivery(
    sessions: sessionmaker[Session], url: str
) -> None:
    search_id, ids = _plan(sessions, url)
    queue = list(ids)
    while queue:
        pid = queue.pop(0)
        outcome = distributed.run_population(sessions, population_id=pid, storage_url=url,
                                             worker_name="inproc")
        assert outcome.status == "complete", outcome.error
        again = distributed.run_population(sessions, population_id=pid, storage_url=url,
                                           worker_name="dup")
        assert again.status == "skipped"  # a redelivered message does nothing
        queue += distributed.advance_search(sessions, search_id=search_id)
    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        assert search.state == "complete" and search.best is not None
    rows = trials(sessions, search_id)
    assert len([t for t in rows if t.phase == "search"]) == 4
    board = build_leaderboard(rows, "accuracy")
    assert {r.family for r in board.rows} == {"relu", "tanh"}
    assert all(r.n_seeds == 2 for r in board.rows)
    assert board.winner is not None and board.winner.test_mean is not None
    assert set(optuna_states(sessions, search_id, url).values()) <= {
        TrialState.COMPLETE, TrialState.PRUNED}


def test_stale_population_is_failed_once_and_retried_then_given_up(
    sessions: sessionmaker[Session], url: str
) -> None:
    search_id, ids = _plan(sessions, url, trials=2)
    pid = ids[0]
    # A worker claims and asks, then dies: its trials stay RUNNING, its heartbeat ages.
    with sessions.begin() as session:
        assert repo.claim_population(session, population_id=pid, worker="dead:1")
        study_name = repo.get_search(session, search_id=search_id).study_name
    study = optuna.load_study(study_name=study_name, storage=url)
    trial = study.ask({"family": optuna.distributions.CategoricalDistribution(["relu", "tanh"])})
    with sessions.begin() as session:
        repo.record_asked_trials(session, population_id=pid, trial_numbers=[trial.number])
    _age_heartbeat(sessions, pid, 60)

    report = distributed.reconcile(sessions, storage_url=url, stale_after_s=30, max_attempts=2)
    assert pid in report.stale and report.failed_trials >= 1
    retry_id = _mine(sessions, search_id, report.enqueue)[0]
    assert optuna_states(sessions, search_id, url)[trial.number] == TrialState.FAIL
    with sessions() as session:
        old = repo.get_population(session, population_id=pid)
        new = repo.get_population(session, population_id=retry_id)
        assert old.state == "failed" and "lost" in (old.error or "")
        assert (new.state, new.family, new.k, new.retry_of, new.attempts) == (
            "pending", old.family, old.k, pid, 1)
        lost = repo.find_trial(session, study_name=study_name, trial_number=trial.number)
        assert lost.state == "failed" and lost.population_id == pid
    # A second pass finds nothing to do.
    again = distributed.reconcile(sessions, storage_url=url, stale_after_s=30, max_attempts=2)
    assert not _mine(sessions, search_id, again.stale + again.enqueue)
    assert optuna_states(sessions, search_id, url)[trial.number] == TrialState.FAIL

    # The retry dies as well: attempt 2 of 2, so it stays failed.
    with sessions.begin() as session:
        assert repo.claim_population(session, population_id=retry_id, worker="dead:2")
    _age_heartbeat(sessions, retry_id, 60)
    last = distributed.reconcile(sessions, storage_url=url, stale_after_s=30, max_attempts=2)
    assert retry_id in last.stale and retry_id in last.exhausted
    assert not _mine(sessions, search_id, last.enqueue)


def test_live_worker_keeps_its_population_and_a_late_worker_discards_results(
    sessions: sessionmaker[Session], url: str
) -> None:
    _, ids = _plan(sessions, url)
    pid = ids[0]
    with sessions.begin() as session:
        assert repo.claim_population(session, population_id=pid, worker="slow:1")
    # Fresh heartbeat: nothing happens.
    assert pid not in distributed.reconcile(sessions, storage_url=url, stale_after_s=30).stale
    _age_heartbeat(sessions, pid, 60)
    with sessions.begin() as session:  # it heartbeats just before the reconciler's UPDATE
        assert repo.heartbeat_owned_population(session, population_id=pid, worker="slow:1")
        assert not repo.fail_stale_population(session, population_id=pid, older_than_s=30,
                                              error="x")
    _age_heartbeat(sessions, pid, 60)
    assert pid in distributed.reconcile(sessions, storage_url=url, stale_after_s=30).stale
    with sessions.begin() as session:  # the late worker learns it lost the population
        assert not repo.heartbeat_owned_population(session, population_id=pid, worker="slow:1")


def test_orphaned_running_trial_is_failed(sessions: sessionmaker[Session], url: str) -> None:
    search_id, _ = _plan(sessions, url)
    with sessions() as session:
        study_name = repo.get_search(session, search_id=search_id).study_name
    study = optuna.load_study(study_name=study_name, storage=url)
    orphan = study.ask()  # asked by a worker that died before recording it anywhere
    fresh = distributed.reconcile(sessions, storage_url=url, stale_after_s=3600)
    assert fresh.failed_trials == 0  # too young to be called an orphan
    report = distributed.reconcile(sessions, storage_url=url, stale_after_s=0.001)
    assert report.failed_trials >= 1
    assert optuna_states(sessions, search_id, url)[orphan.number] == TrialState.FAIL


def test_two_workers_advancing_together_plan_finalists_once(
    sessions: sessionmaker[Session], url: str
) -> None:
    search_id, ids = _plan(sessions, url)
    for pid in ids:
        assert distributed.run_population(sessions, population_id=pid, storage_url=url,
                                          worker_name="w").status == "complete"
    results: list[list[int]] = []
    barrier = threading.Barrier(4)

    def advance() -> None:
        barrier.wait()
        results.append(distributed.advance_search(sessions, search_id=search_id))

    threads = [threading.Thread(target=advance) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    planned = [r for r in results if r]
    assert len(planned) == 1 and len(planned[0]) == 2
    finalists = [p for p in populations(sessions, search_id) if p.phase == "finalist"]
    assert sorted(p.id for p in finalists) == sorted(planned[0])
    assert all(p.source_trial_number is not None for p in finalists)


def test_cancelled_search_trains_nothing_more(sessions: sessionmaker[Session], url: str) -> None:
    search_id, ids = _plan(sessions, url)
    assert distributed.run_population(sessions, population_id=ids[0], storage_url=url,
                                      worker_name="w").status == "complete"
    with sessions.begin() as session:  # what the API's cancel does: only the state
        repo.set_search_state(session, search_id=search_id, state="cancelled")
    outcome = distributed.run_population(sessions, population_id=ids[1], storage_url=url,
                                         worker_name="w")
    assert outcome.status == "cancelled"
    report = distributed.reconcile(sessions, storage_url=url, stale_after_s=30)
    assert search_id in report.advanced and not _mine(sessions, search_id, report.enqueue)
    states = [p.state for p in populations(sessions, search_id)]
    assert states == ["complete", "cancelled", "cancelled", "cancelled"]


def test_worker_that_lost_its_population_records_nothing(
    sessions: sessionmaker[Session], url: str
) -> None:
    """The reconciler gave the population up mid-training: the late worker's results are dropped."""
    search_id, ids = _plan(sessions, url, epochs=4)
    pid = ids[0]

    def reconciler_strikes() -> bool:
        # What the reconciler does to a population it believes dead, then the
        # worker's heartbeat still (wrongly) says "ours": the final write must check.
        with sessions.begin() as session:
            session.execute(update(PopulationRow).where(PopulationRow.id == pid,
                                                        PopulationRow.state == "running")
                            .values(state="failed", error="worker lost (test)"))
        return True

    outcome = distributed.run_population(sessions, population_id=pid, storage_url=url,
                                         worker_name="late", heartbeat=reconciler_strikes,
                                         heartbeat_interval_s=0.01)
    assert outcome.status == "lost"
    assert [t for t in trials(sessions, search_id) if t.population_id == pid] == []

    def heartbeat_says_lost() -> bool:
        return False

    outcome = distributed.run_population(sessions, population_id=ids[1], storage_url=url,
                                         worker_name="late", heartbeat=heartbeat_says_lost,
                                         heartbeat_interval_s=0.01)
    assert outcome.status == "lost"  # it stopped training at the next epoch
    assert [t for t in trials(sessions, search_id) if t.population_id == ids[1]] == []


def test_trial_told_to_optuna_whose_row_was_lost_is_recorded_before_finalists(
    sessions: sessionmaker[Session], url: str
) -> None:
    """The CI flake of session 2: the search phase ended before the reconciler's sweep
    (which waits ``stale_after_s`` after a trial finished) recorded a trial whose
    worker's own row write was lost; the finalists were then planned without it."""
    from sqlalchemy import delete

    from store.tables import TrialRow

    search_id, ids = _plan(sessions, url)
    for pid in ids:
        assert distributed.run_population(sessions, population_id=pid, storage_url=url,
                                          worker_name="w").status == "complete"
    lost = next(t for t in trials(sessions, search_id) if t.phase == "search")
    with sessions.begin() as session:  # the write the outage lost (Optuna kept its tell)
        session.execute(delete(TrialRow).where(TrialRow.id == lost.id))
    distributed.advance_search(sessions, search_id=search_id, storage_url=url)
    rows = {t.trial_number: t for t in trials(sessions, search_id) if t.phase == "search"}
    states = optuna_states(sessions, search_id, url)
    assert sorted(rows) == sorted(states)
    restored = rows[lost.trial_number]
    assert (restored.state, restored.family, restored.value) == (lost.state, lost.family,
                                                                  lost.value)
    assert "recorded by the reconciler" in (restored.error or "")
