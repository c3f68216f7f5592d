"""Faults, with real servers and real processes: each is injected for real, then every trial
of every search is accounted for.

* Redis restarted mid-search (no persistence: its queues are lost as in a crash).
* PostgreSQL restarted mid-search (``pg_ctl stop -m fast`` semantics), with the API up.
* PostgreSQL stopped for ~12 s with populations queued and training, the staleness limit
  far longer: no queued population is lost, the interrupted ones are handed back by their
  own retries, and work resumes within seconds of the database's return (printed).
* A population whose work raises (its dataset's stored bytes damaged after the search
  was accepted: the sha256 check refuses them; the search ends failed, saying so), one that
  runs out of memory (``ACTSEARCH_TRAINING__MEMORY_LIMIT_MB`` and a model too big
  for it) and one that runs out of time (``ACTSEARCH_TRAINING__POPULATION_TIME_LIMIT_S``),
  on a Celery worker and in the embedded service (``actsearch serve``): the latter
  two searches end ``failed`` saying why, and the process that trained them goes on
  to train the others.

Afterwards: no Optuna trial and no population is left RUNNING, Optuna's trial count
equals actsearch's search-phase trial rows, failures carry their error where users
look (``GET /searches/{id}``, the trial endpoints, ``actsearch show``), and results
stored before a restart are unchanged after it.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from optuna.trial import TrialState
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from store import repo
from tests.integration.conftest import Cluster, Servers
from tests.integration.helpers import (
    new_search,
    optuna_states,
    populations,
    submit,
    trials,
    wait_state,
)
from tests.utils.live_server import live_server
from tests.utils.servers import ServiceProcess, free_port, start_service, wait_for

pytestmark = pytest.mark.integration

Sessions = sessionmaker[Session]
FINISHED = {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
TERMINAL = ("complete", "failed", "cancelled")

# A search accepted at submission whose work then raises: its dataset (content unique to
# this run, so no other test shares the artifact) is damaged in storage afterwards.
RAISES = {"architecture": "mlp:16", "families": ["relu", "tanh"], "trials": 4, "epochs": 2,
          "population_size": 1, "finalist_seeds": 2, "batch_size": 32}
DAMAGED = "artifact .* failed its sha256 check: stored bytes are damaged"
# Two 4096x4096 layers for 2 candidates need about 0.55 GB (weights, gradients, Adam's
# two moments) before any activation: twice the MEMORY_MB a population may allocate,
# while every other search here needs a few MB. Iris keeps the compute tiny.
MEMORY_MB = 300
TOO_BIG = {"dataset": "iris", "architecture": "mlp:4096,4096", "families": ["relu"],
           "trials": 2, "epochs": 2, "population_size": 2, "finalist_seeds": 2,
           "batch_size": 64}
# A population that trains far longer than TIME_LIMIT_S (hundreds of seconds unguarded).
TIME_LIMIT_S = 12.0
SLOW = {"dataset": "digits", "architecture": "mlp:512,512", "families": ["relu"], "trials": 1,
        "epochs": 400, "population_size": 1, "finalist_seeds": 2, "batch_size": 4,
        "pruner": "none"}


def assert_accounted(sessions: Sessions, search_id: int, storage_url: str) -> None:
    """Nothing RUNNING anywhere; Optuna's trials and actsearch's search-phase rows match 1:1."""
    states = optuna_states(sessions, search_id, storage_url)
    assert set(states.values()) <= FINISHED, states
    rows = [t for t in trials(sessions, search_id) if t.phase == "search"]
    numbers = sorted(t.trial_number for t in rows)
    assert numbers == sorted(states), (numbers, sorted(states))  # one row per Optuna trial
    assert not [t for t in trials(sessions, search_id) if t.state == "running"]
    assert not [p.id for p in populations(sessions, search_id)
                if p.state in ("pending", "running")]
    ours = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
            "failed": TrialState.FAIL}
    for t in rows:
        assert states[t.trial_number] == ours[t.state], (t.trial_number, t.state)


def _progress_settled(sessions: Sessions, search_id: int, done: int) -> bool:
    return sum(p.state == "complete" for p in populations(sessions, search_id)) >= done


def _snapshot(sessions: Sessions, search_id: int) -> dict[str, Any]:
    """Finished trials' values, learning curves and learned activation curves, byte for byte."""
    with sessions() as session:
        rows = session.execute(text(
            "SELECT id, trial_number, phase, state, value, best_value, n_params FROM "
            "actsearch_trials WHERE search_id = :s AND state IN ('complete', 'pruned') "
            "ORDER BY id"), {"s": search_id}).all()
        ids = [r.id for r in rows]
        epochs = session.execute(text(
            "SELECT trial_id, epoch, train_loss, val_loss, val_metric FROM "
            "actsearch_epoch_metrics WHERE trial_id = ANY(:ids) ORDER BY trial_id, epoch"),
            {"ids": ids}).all()
        curves = session.execute(text(
            "SELECT trial_id, layer, epoch, md5(x) AS x, md5(y) AS y FROM actsearch_curves "
            "WHERE trial_id = ANY(:ids) ORDER BY trial_id, layer, epoch"), {"ids": ids}).all()
    return {"trials": [tuple(r) for r in rows], "epochs": [tuple(r) for r in epochs],
            "curves": [tuple(r) for r in curves]}


def _start_api(cluster: Cluster, name: str) -> tuple[ServiceProcess, str]:
    port = free_port()
    env = {**cluster.env, "ACTSEARCH_AUTH__ENABLED": "false"}
    api = start_service(name, ["serve", "--host", "127.0.0.1", "--port", str(port)], env,
                        cluster.log_dir)
    cluster.workers[name] = api  # stopped with the cluster at teardown
    base = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, 60), \
        api.tail()
    return api, base


# --------------------------------------------------------------------------- broker and database


def test_redis_restart_mid_search(
    cluster: Cluster, servers: Servers, sessions: Sessions, distributed_env: dict[str, str]
) -> None:
    url = distributed_env["ACTSEARCH_DATABASE_URL"]
    cluster.start("w1", "w2")
    search_id = new_search(sessions, url, dataset="digits", architecture="mlp:32",
                           families=["relu", "tanh"], trials=10, epochs=8, batch_size=16,
                           population_size=1, finalist_seeds=2, pruner="none")
    submit(search_id)
    assert wait_for(lambda: _progress_settled(sessions, search_id, 2), 120, 0.2), cluster.logs()

    servers.redis.halt()  # queued and unacknowledged messages are gone, as in a crash
    time.sleep(3)
    servers.redis.resume()

    wait_state(sessions, search_id, TERMINAL, 240, cluster.logs)
    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        assert search.state == "complete", (search.error, cluster.logs())
        assert search.best is not None
    for name in ("w1", "w2"):
        assert cluster.workers[name].alive, cluster.workers[name].tail()
    assert cluster.beat is not None and cluster.beat.alive, cluster.beat.tail()
    assert_accounted(sessions, search_id, url)
    assert len([p for p in populations(sessions, search_id)
                if p.phase == "search" and p.state == "complete"]) == 10


def test_postgres_restart_mid_search(
    cluster: Cluster, servers: Servers, sessions: Sessions, distributed_env: dict[str, str]
) -> None:
    url = distributed_env["ACTSEARCH_DATABASE_URL"]
    cluster.start("w1", "w2")
    _, base = _start_api(cluster, "api")
    search_id = new_search(sessions, url, dataset="digits", architecture="mlp:32",
                           families=["relu", "tanh"], trials=10, epochs=8, batch_size=16,
                           population_size=1, finalist_seeds=2, pruner="none")
    submit(search_id)
    assert wait_for(lambda: _progress_settled(sessions, search_id, 3), 120, 0.2), cluster.logs()
    before = _snapshot(sessions, search_id)
    assert len(before["trials"]) >= 3 and before["curves"]

    servers.postgres.halt()  # fast shutdown: every session rolled back and disconnected
    down = httpx.get(f"{base}/searches/{search_id}", timeout=30)
    assert down.status_code == 503, down.text  # a retryable answer, not a hung API or a 500
    assert "database is unavailable" in down.json()["detail"]
    time.sleep(2)
    servers.postgres.resume()

    # The API answers again on its pooled (pre-pinged) connections, without a restart.
    assert wait_for(lambda: httpx.get(f"{base}/searches/{search_id}", timeout=10)
                    .status_code == 200, 30), cluster.logs()
    wait_state(sessions, search_id, TERMINAL, 300, cluster.logs)
    detail = httpx.get(f"{base}/searches/{search_id}", timeout=10).json()
    assert detail["state"] == "complete", (detail.get("error"), cluster.logs())
    assert detail["progress"]["running"] == 0
    for proc in cluster.processes():
        assert proc.alive, f"{proc.name} died:\n{proc.tail()}"
    assert_accounted(sessions, search_id, url)
    after = _snapshot(sessions, search_id)
    for key, rows in before.items():  # nothing stored before the restart changed or vanished
        assert set(rows) <= set(after[key]), key
    # every planned search population finished; one given up during the outage was retried
    pops = populations(sessions, search_id)
    retried = {p.retry_of for p in pops if p.retry_of is not None}
    search_pops = [p for p in pops if p.phase == "search"]
    assert sum(p.state == "complete" for p in search_pops) == 10
    assert all(p.state == "complete" or p.id in retried for p in search_pops)


# A staleness limit far above the outage, so that only the tasks' own retries (not the
# reconciler giving populations up) can bring the cluster back within seconds.
OUTAGE_S = 12.0
OUTAGE_STALE_AFTER_S = 90.0
RESUME_BOUND_S = 30.0  # generous: measured a few seconds; before the fix, >= the staleness


def _first_start_after(sessions: Sessions, search_id: int, since: float) -> float | None:
    """When the first population claimed or finished after ``since`` did so (epoch seconds)."""
    times = [t.timestamp() for p in populations(sessions, search_id)
             for t in (p.started_at, p.finished_at) if t is not None and t.timestamp() > since]
    return min(times) if times else None


def test_postgres_outage_loses_no_queued_work_and_the_cluster_resumes_at_once(
    cluster: Cluster, servers: Servers, sessions: Sessions, distributed_env: dict[str, str]
) -> None:
    """A ~12 s PostgreSQL stop with populations queued and training: every queued message
    survives (its task retries with backoff), the interrupted ones are released by their own
    retries, and work resumes within seconds of the database's return."""
    url = distributed_env["ACTSEARCH_DATABASE_URL"]
    cluster.env["ACTSEARCH_WORKER__STALE_AFTER_S"] = str(OUTAGE_STALE_AFTER_S)
    cluster.start("w1", "w2")
    search_id = new_search(sessions, url, dataset="digits", architecture="mlp:32",
                           families=["relu", "tanh"], trials=12, epochs=8, batch_size=16,
                           population_size=1, finalist_seeds=2, pruner="none")
    submit(search_id)
    assert wait_for(lambda: _progress_settled(sessions, search_id, 2), 120, 0.2), cluster.logs()

    servers.postgres.halt()
    time.sleep(OUTAGE_S)
    servers.postgres.resume()
    back = time.time()
    assert wait_for(lambda: _first_start_after(sessions, search_id, back) is not None,
                    OUTAGE_STALE_AFTER_S + 30, 0.2), cluster.logs()
    first = _first_start_after(sessions, search_id, back)
    assert first is not None
    idle = first - back
    print(f"idle after the database returned: {idle:.1f} s (outage {OUTAGE_S:.0f} s)")

    wait_state(sessions, search_id, TERMINAL, 180, cluster.logs)
    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        assert search.state == "complete", (search.error, cluster.logs())
    for proc in cluster.processes():
        assert proc.alive, f"{proc.name} died:\n{proc.tail()}"
    assert_accounted(sessions, search_id, url)
    search_pops = [p for p in populations(sessions, search_id) if p.phase == "search"]
    # no queued population lost and none given up: each planned one trained to completion
    assert len(search_pops) == 12 and all(p.state == "complete" for p in search_pops), \
        [(p.id, p.state, p.error) for p in search_pops]
    assert idle < RESUME_BOUND_S, f"idle {idle:.1f} s after the database returned"


# --------------------------------------------------------------------------- training faults


@pytest.fixture
def limited_env(distributed_env: dict[str, str]) -> Iterator[dict[str, str]]:
    yield {**distributed_env,
           "ACTSEARCH_TRAINING__MEMORY_LIMIT_MB": str(MEMORY_MB),
           "ACTSEARCH_TRAINING__POPULATION_TIME_LIMIT_S": str(TIME_LIMIT_S)}


def _unique_spirals() -> Any:
    """A small built-in dataset whose content (hence artifact) no other test shares."""
    from search.datasets import load_builtin

    return load_builtin("two_spirals", n=200, seed=int(time.time_ns() % 2**31))


def _damage(session: Session, dataset_id: int) -> None:
    """Flip one byte of a dataset's stored artifact (in the database or its file)."""
    from store.tables import Artifact

    row = repo.get_dataset(session, dataset_id=dataset_id)
    artifact = session.get(Artifact, row.artifact_id)
    assert artifact is not None
    if artifact.data is not None:
        data = bytearray(artifact.data)
        data[-1] ^= 0xFF
        artifact.data = bytes(data)
    else:
        path = Path(artifact.path)
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))


def _damage_sqlite(db: Path, dataset_id: int) -> None:
    """:func:`_damage` on a served SQLite database, from outside the server."""
    with sqlite3.connect(db, timeout=30) as con:
        artifact_id, data, path = con.execute(
            "SELECT a.id, a.data, a.path FROM actsearch_datasets d JOIN actsearch_artifacts a "
            "ON a.id = d.artifact_id WHERE d.id = ?", (dataset_id,)).fetchone()
        if data is None:
            blob = bytearray(Path(path).read_bytes())
            blob[-1] ^= 0xFF
            Path(path).write_bytes(bytes(blob))
        else:
            blob = bytearray(data)
            blob[-1] ^= 0xFF
            con.execute("UPDATE actsearch_artifacts SET data = ? WHERE id = ?",
                        (bytes(blob), artifact_id))


def _failed_search_trials(sessions: Sessions, search_id: int) -> list[Any]:
    return [t for t in trials(sessions, search_id) if t.phase == "search" and t.state == "failed"]


def test_worker_training_faults_fail_their_population_and_searches_go_on(
    cluster: Cluster, sessions: Sessions, limited_env: dict[str, str]
) -> None:
    url = limited_env["ACTSEARCH_DATABASE_URL"]
    cluster.env.update(limited_env)
    cluster.start("w1")
    from search.service import register_dataset

    with sessions.begin() as session:
        name = f"damaged-{time.time_ns()}"
        dataset_id = register_dataset(session, dataset=_unique_spirals(), name=name).id
    raises = new_search(sessions, url, dataset=name, **RAISES)
    with sessions.begin() as session:
        _damage(session, dataset_id)
    too_big = new_search(sessions, url, **TOO_BIG)
    slow = new_search(sessions, url, **SLOW)
    for search_id in (raises, too_big, slow):
        submit(search_id)
    for search_id in (raises, too_big, slow):
        wait_state(sessions, search_id, TERMINAL, 240, cluster.logs)
        assert_accounted(sessions, search_id, url)
    assert cluster.workers["w1"].alive, cluster.workers["w1"].tail()

    with sessions() as session:
        state = {s: repo.get_search(session, search_id=s) for s in (raises, too_big, slow)}
    # the damaged data: every population failed saying so, and so did the search
    assert state[raises].state == "failed"
    assert re.search(DAMAGED, state[raises].error or ""), state[raises].error
    pops = populations(sessions, raises)
    assert pops and all(p.state == "failed" and re.search(DAMAGED, p.error or "") for p in pops)
    # out of memory: a clear failure, and the worker lives on to train the others
    assert state[too_big].state == "failed" and "out of memory" in state[too_big].error
    failed = _failed_search_trials(sessions, too_big)
    assert len(failed) == 2, [(p.state, p.error) for p in populations(sessions, too_big)]
    assert all((t.error or "").startswith("out of memory") for t in failed), failed[0].error
    # out of time: the population is stopped and failed; the search ends failed, saying why
    assert state[slow].state == "failed"
    assert "time limit" in (state[slow].error or "")
    failed = _failed_search_trials(sessions, slow)
    assert failed and all((t.error or "").startswith("time limit") for t in failed)


def test_embedded_training_faults_are_recorded_and_shown(tmp_path: Path) -> None:
    """The same three faults in ``actsearch serve`` (SQLite, runner, training children)."""
    env = {"ACTSEARCH_TRAINING__MEMORY_LIMIT_MB": str(MEMORY_MB),
           "ACTSEARCH_TRAINING__POPULATION_TIME_LIMIT_S": str(TIME_LIMIT_S),
           "ACTSEARCH_AUTH__ENABLED": "false"}
    with live_server(tmp_path, env) as server:
        seed = int(time.time_ns() % 2**31)
        registered = httpx.post(f"{server.url}/datasets/builtin", timeout=30, json={
            "builtin": "two_spirals", "name": "damaged", "options": {"n": 200, "seed": seed}})
        assert registered.status_code == 201, registered.text
        _damage_sqlite(tmp_path / "actsearch.db", registered.json()["id"])
        ids = {}
        for name, spec in (("raises", {**RAISES, "dataset": "damaged"}), ("too_big", TOO_BIG),
                           ("slow", SLOW)):
            created = httpx.post(f"{server.url}/searches", json=spec, timeout=30)
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]

        def detail(search_id: int) -> dict[str, Any]:
            return httpx.get(f"{server.url}/searches/{search_id}", timeout=10).json()

        for search_id in ids.values():
            assert wait_for(lambda s=search_id: detail(s)["state"] in TERMINAL, 240, 1), \
                server.log
        raises, too_big, slow = (detail(ids[n]) for n in ("raises", "too_big", "slow"))
        assert raises["state"] == "failed" and re.search(DAMAGED, raises["error"]), raises
        assert raises["progress"]["running"] == 0
        assert too_big["state"] == "failed" and "out of memory" in too_big["error"]
        assert too_big["progress"]["failed"] == 2
        assert slow["state"] == "failed" and "time limit" in slow["error"]

        def failed_errors(search_id: int) -> dict[str, set[str]]:
            listed = httpx.get(f"{server.url}/searches/{search_id}/trials",
                               params={"state": "failed", "limit": 100}, timeout=10).json()
            assert listed["count"] >= 1
            out: dict[str, set[str]] = {}
            for t in listed["data"]:
                one = httpx.get(f"{server.url}/trials/{t['id']}", timeout=10).json()
                assert t["error"] == one["error"]  # the list carries the error too
                out.setdefault(one["family"], set()).add(one["error"].splitlines()[0])
            return out

        errors = failed_errors(ids["too_big"])
        assert all(e.startswith("out of memory") for e in errors["relu"])
        errors = failed_errors(ids["slow"])
        assert all(e.startswith("time limit") for e in errors["relu"])

        shown = subprocess.run(
            [str(Path(sys.executable).with_name("actsearch")), "show", str(ids["raises"])],
            env={**server.env, "COLUMNS": "250"}, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "failed" in shown.stdout and "stored bytes are damaged" in shown.stdout, \
            shown.stdout
