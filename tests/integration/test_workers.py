"""The distributed mode end to end: real `actsearch worker` and `actsearch beat` processes.

Searches are created with ``search.service.create_search`` and handed over with
``worker.enqueue.submit_search``, exactly what the API does in distributed mode
(HTTP-driven variants belong with the API's tests).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

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
    killed_at = time.time()
    assert not killed.alive
    assert wait_for(lambda: _state_of(sessions, search_id, int(victim["id"])) == "failed",  # type: ignore[call-overload]
                    120, 0.2), cluster.logs()
    print(f"SIGKILLed worker's population given up after {time.time() - killed_at:.1f} s "
          f"(stale_after_s {distributed_env['ACTSEARCH_WORKER__STALE_AFTER_S']})")
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


def _state_of(sessions: sessionmaker[Session], search_id: int, population_id: int) -> str:
    return next(p.state for p in populations(sessions, search_id) if p.id == population_id)


CHILD_STALE_AFTER_S = 60.0  # far above what the parent's notice takes


def test_a_killed_training_child_is_noticed_by_its_parent_at_once(
    cluster: Cluster, sessions: sessionmaker[Session], distributed_env: dict[str, str]
) -> None:
    """Only the prefork child dies (as under the OOM killer): the worker's parent sees it,
    its population is given up and retried well before the staleness limit."""
    url = distributed_env["ACTSEARCH_DATABASE_URL"]
    cluster.env["ACTSEARCH_WORKER__STALE_AFTER_S"] = str(CHILD_STALE_AFTER_S)
    cluster.start("w1")
    search_id = new_search(sessions, url, dataset="digits", architecture="mlp:256,256",
                           families=["relu", "tanh"], trials=2, epochs=20, batch_size=8,
                           population_size=1, finalist_seeds=2, pruner="none")
    submit(search_id)
    victim: dict[str, Any] = {}

    def training() -> bool:
        for p in populations(sessions, search_id):
            if p.state == "running" and p.trial_numbers and p.started_at is not None \
                    and time.time() - p.started_at.timestamp() > 1.5:
                victim.update(id=p.id, worker=p.worker, trials=list(p.trial_numbers))
                return True
        return False

    assert wait_for(training, 120, 0.2), cluster.logs()
    child = int(str(victim["worker"]).rsplit(":", 1)[1])  # "w1@host:PID" names the child
    os.kill(child, signal.SIGKILL)
    killed_at = time.time()
    assert wait_for(lambda: _state_of(sessions, search_id, victim["id"]) == "failed",
                    CHILD_STALE_AFTER_S + 30, 0.2), cluster.logs()
    noticed = time.time() - killed_at
    print(f"killed child's population given up after {noticed:.1f} s "
          f"(stale_after_s {CHILD_STALE_AFTER_S:.0f})")
    wait_state(sessions, search_id, ("complete", "failed"), 240, cluster.logs)
    assert search_state(sessions, search_id) == "complete"
    assert cluster.workers["w1"].alive, cluster.workers["w1"].tail()
    pops = populations(sessions, search_id)
    lost = next(p for p in pops if p.id == victim["id"])
    assert "lost" in (lost.error or "") and "died" in (lost.error or ""), lost.error
    assert [p.state for p in pops if p.retry_of == lost.id] == ["complete"]
    states = optuna_states(sessions, search_id, url)
    assert TrialState.RUNNING not in set(states.values())
    assert all(states[n] == TrialState.FAIL for n in victim["trials"])
    assert noticed < CHILD_STALE_AFTER_S / 3, f"given up after {noticed:.1f} s"


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
