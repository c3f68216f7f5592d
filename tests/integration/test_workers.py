"""The distributed mode end to end: real `actsearch worker` and `actsearch beat` processes.

Searches are created with ``search.service.create_search`` and handed over with
``worker.enqueue.submit_search``, exactly what the API does in distributed mode
(HTTP-driven variants belong with the API's tests).
"""

from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState
from sqlalchemy.orm import Session, sessionmaker

from search.protocol import build_leaderboard
from store import repo
from tests.integration.conftest import Cluster
from tests.integration.helpers import (
    new_search,
    optuna_states,
    populations,
    search_state,
    submit,
    trials,
    wait_state,
)
from tests.utils.servers import wait_for

pytestmark = pytest.mark.integration

FINISHED_TRIAL_STATES = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}


def _node(worker_name: str | None) -> str:
    """The Celery node of a population's worker ("w1@host:pid" -> "w1")."""
    return (worker_name or "").split("@", 1)[0]


def test_two_workers_share_a_search_to_completion(
    cluster: Cluster, sessions: sessionmaker[Session], distributed_env: dict[str, str]
) -> None:
    url = distributed_env["ACTSEARCH_DATABASE_URL"]
    cluster.start("w1", "w2")
    # digits, not iris: each population must take long enough (about a second) that
    # one worker cannot drain the queue before the other takes its first message
    search_id = new_search(sessions, url, dataset="digits", architecture="mlp:16",
                           families=["relu", "tanh", "gelu"], trials=9, epochs=6,
                           population_size=1, finalist_seeds=2, batch_size=32)
    submit(search_id)
    wait_state(sessions, search_id, ("complete", "failed"), 240, cluster.logs)

    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        assert search.state == "complete", search.error
        assert search.best is not None and search.best["test_mean"] is not None
    pops = populations(sessions, search_id)
    assert all(p.state == "complete" for p in pops)
    assert len([p for p in pops if p.phase == "search"]) == 9
    assert {_node(p.worker) for p in pops if p.phase == "search"} == {"w1", "w2"}
    rows = trials(sessions, search_id)
    search_rows = [t for t in rows if t.phase == "search"]
    assert len(search_rows) == 9
    assert {_node(p.worker) for p in pops
            if p.id in {t.population_id for t in search_rows}} == {"w1", "w2"}
    states = optuna_states(sessions, search_id, url)
    assert len(states) == 9 and set(states.values()) <= FINISHED_TRIAL_STATES
    board = build_leaderboard(rows, "accuracy")
    assert {r.family for r in board.rows} == {"relu", "tanh", "gelu"}
    assert all(r.n_seeds == 2 for r in board.rows)
    assert board.winner is not None and board.winner.test_mean is not None


def test_sigkilled_worker_is_reconciled_and_the_search_completes(
    cluster: Cluster, sessions: sessionmaker[Session], distributed_env: dict[str, str]
) -> None:
    url = distributed_env["ACTSEARCH_DATABASE_URL"]
    cluster.start("w1", "w2")
    # Populations of several seconds each (no pruning), so one can be caught mid-training.
    search_id = new_search(sessions, url, dataset="digits", architecture="mlp:256,256",
                           families=["relu", "tanh"], trials=4, epochs=20, batch_size=8,
                           population_size=1, finalist_seeds=2, pruner="none")
    submit(search_id)

    victim: dict[str, object] = {}

    def training() -> bool:
        for p in populations(sessions, search_id):
            if p.state == "running" and p.trial_numbers and p.heartbeat_at is not None \
                    and p.started_at is not None and time.time() - p.started_at.timestamp() > 1.5:
                victim.update(id=p.id, node=_node(p.worker), trials=list(p.trial_numbers))
                return True
        return False

    assert wait_for(training, 120, 0.2), cluster.logs()
    killed = cluster.workers[str(victim["node"])]
    killed.kill()  # SIGKILL the whole process group: parent and prefork child, mid-population
    assert not killed.alive
    wait_state(sessions, search_id, ("complete", "failed"), 300, cluster.logs)

    assert search_state(sessions, search_id) == "complete"
    pops = populations(sessions, search_id)
    lost = next(p for p in pops if p.id == victim["id"])
    assert lost.state == "failed" and "lost" in (lost.error or "")
    retry = [p for p in pops if p.retry_of == lost.id]
    assert len(retry) == 1 and retry[0].state == "complete"
    assert (retry[0].family, retry[0].k, retry[0].phase) == (lost.family, lost.k, lost.phase)
    assert not [p for p in pops if p.state in ("pending", "running")]
    states = optuna_states(sessions, search_id, url)
    assert TrialState.RUNNING not in set(states.values())
    for number in victim["trials"]:  # type: ignore[attr-defined]
        assert states[number] == TrialState.FAIL
    rows = trials(sessions, search_id)
    assert not [t for t in rows if t.state == "running"]
    board = build_leaderboard(rows, "accuracy")
    assert board.winner is not None


def test_cancel_stops_new_populations(
    cluster: Cluster, sessions: sessionmaker[Session], distributed_env: dict[str, str]
) -> None:
    url = distributed_env["ACTSEARCH_DATABASE_URL"]
    cluster.start("w1")
    search_id = new_search(sessions, url, dataset="digits", architecture="mlp:256,256",
                           families=["relu", "tanh"], trials=12, epochs=20, batch_size=16,
                           population_size=1, finalist_seeds=2, pruner="none")
    submit(search_id)
    assert wait_for(lambda: sum(p.state == "complete" for p in populations(sessions, search_id))
                    >= 2, 120, 0.2), cluster.logs()
    with sessions.begin() as session:  # what POST /searches/{id}/cancel does
        repo.set_search_state(session, search_id=search_id, state="cancelled")
    cancelled_at = time.time()

    def settled() -> bool:
        return all(p.state in ("complete", "failed", "cancelled")
                   for p in populations(sessions, search_id))

    assert wait_for(settled, 60, 0.5), cluster.logs()
    pops = populations(sessions, search_id)
    assert search_state(sessions, search_id) == "cancelled"
    assert not [p for p in pops if p.phase == "finalist"]
    started_late = [p.id for p in pops if p.started_at and p.started_at.timestamp() > cancelled_at]
    assert started_late == []
    done = [p for p in pops if p.state == "complete"]
    skipped = [p for p in pops if p.state == "cancelled"]
    assert len(done) >= 2 and len(skipped) >= 1 and len(done) + len(skipped) == 12
    assert TrialState.RUNNING not in set(optuna_states(sessions, search_id, url).values())
