"""The whole distributed topology over HTTP: `actsearch serve` (API) + two workers + beat,
PostgreSQL and Redis, with the API process restarted while a search runs."""

from __future__ import annotations

import httpx
import pytest
from optuna.trial import TrialState
from sqlalchemy.orm import Session, sessionmaker

from tests.integration.conftest import Cluster
from tests.integration.helpers import optuna_states, populations
from tests.utils.servers import ServiceProcess, free_port, start_service, wait_for

pytestmark = pytest.mark.integration


def _start_api(cluster: Cluster, port: int, name: str) -> ServiceProcess:
    api = start_service(name, ["serve", "--host", "127.0.0.1", "--port", str(port)], cluster.env,
                        cluster.log_dir)
    cluster.workers[name] = api  # stopped with the cluster at teardown

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(healthy, 60), api.tail()
    return api


def test_search_over_http_survives_an_api_restart(
    cluster: Cluster, sessions: sessionmaker[Session], distributed_env: dict[str, str]
) -> None:
    from store import repo

    url = distributed_env["ACTSEARCH_DATABASE_URL"]
    with sessions.begin() as session:  # auth is on by default in distributed mode
        _, key = repo.create_api_key(session, owner="alice")
    http = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    cluster.start("w1", "w2")
    port = free_port()
    api = _start_api(cluster, port, "api")
    base = f"http://127.0.0.1:{port}"
    health = http.get(f"{base}/health").json()
    assert health["mode"] == "distributed" and health["broker"]["ok"]

    created = http.post(f"{base}/searches", json={
        "dataset": "digits", "architecture": "mlp:32", "families": ["relu", "gelu"],
        "trials": 8, "epochs": 6, "population_size": 1, "finalist_seeds": 2,
    })
    assert created.status_code == 201, created.text
    search_id = created.json()["id"]

    # restart the API while the workers train
    assert wait_for(lambda: http.get(f"{base}/searches/{search_id}").json()["progress"]["done"] >= 1,
                    180), cluster.logs()
    api.stop()
    assert not api.alive
    api = _start_api(cluster, port, "api-restarted")

    def finished() -> bool:
        return http.get(f"{base}/searches/{search_id}").json()["state"] in (
            "complete", "failed", "cancelled")

    assert wait_for(finished, 300, interval_s=1), cluster.logs()
    detail = http.get(f"{base}/searches/{search_id}").json()
    assert detail["state"] == "complete", detail.get("error")
    assert detail["owner"] == "alice"
    assert httpx.get(f"{base}/searches/{search_id}").status_code == 401
    progress = detail["progress"]
    assert progress["done"] == progress["budget"] == 8 and progress["running"] == 0

    board = http.get(f"{base}/searches/{search_id}/leaderboard").json()
    assert {r["family"] for r in board["rows"]} == {"relu", "gelu"}
    assert sum(r["baseline"] for r in board["rows"]) == 1

    nodes = {(p.worker or "").split("@", 1)[0] for p in populations(sessions, search_id)
             if p.phase == "search"}
    # trained by the cluster's workers (which of the two is timing: test_workers.py checks
    # that two workers share a search, with populations long enough to make that certain)
    assert nodes and nodes <= {"w1", "w2"}, nodes
    states = optuna_states(sessions, search_id, url)
    assert len(states) == 8 and TrialState.RUNNING not in states.values()
    trials = http.get(f"{base}/searches/{search_id}/trials", params={"limit": 100}).json()
    assert trials["count"] >= 8 + 2 * 2  # search trials and the finalists' re-runs


def test_a_schedule_fires_through_beat_and_workers_run_its_search(
    cluster: Cluster, sessions: sessionmaker[Session], distributed_env: dict[str, str]
) -> None:
    from search.schedules import create_schedule
    from store import repo

    cluster.env["ACTSEARCH_SCHEDULE_TICK_S"] = "1"
    cluster.start("w1")
    with sessions.begin() as session:
        schedule = create_schedule(
            session, name="every 4 s", cron="* * * * * */4",
            template={"kind": "rerun", "spec": {
                "dataset": "iris", "architecture": "mlp:8", "families": ["relu"], "trials": 2,
                "epochs": 2, "finalist_seeds": 2}})
        schedule_id = schedule.id

    def fired_search() -> int | None:
        with sessions() as session:
            return repo.get_schedule(session, schedule_id=schedule_id).last_search_id

    assert wait_for(lambda: fired_search() is not None, 60), cluster.logs()
    search_id = fired_search()
    with sessions.begin() as session:  # one firing is enough: stop it from piling up
        repo.get_schedule(session, schedule_id=schedule_id).state = "paused"

    def complete() -> bool:
        with sessions() as session:
            return repo.get_search(session, search_id=search_id).state == "complete"

    assert wait_for(complete, 180, interval_s=1), cluster.logs()
    with sessions() as session:
        assert repo.get_search(session, search_id=search_id).schedule_id == schedule_id
