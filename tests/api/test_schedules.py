"""``/schedules`` over HTTP: happy paths and every user mistake (a 4xx with a useful detail).

The module has its own database (firing schedules creates pending searches,
which must not show up in the shared database other API tests read).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from search import schedules
from search.service import create_search
from search.spec import parse_spec
from store.db import init_db, make_engine, session_factory
from tests.api.conftest import RecordingClient, assert_error, make_client, make_settings

RERUN = {"kind": "rerun", "spec": {"dataset": "iris", "architecture": "mlp:8",
                                   "families": ["relu"], "trials": 2, "epochs": 2}}


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home: Path = tmp_path_factory.mktemp("schedules-api")
    settings: Settings = make_settings(home)
    url = settings.resolved_database_url
    init_db(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        parent = create_search(session=session, storage_url=url, name="parent",
                               spec=parse_spec({**RERUN["spec"], "families": ["relu", "prelu"]}))
        parent_id = parent.id
    with make_client(settings) as client:
        yield {"client": client, "sessions": sessions, "url": url, "parent_id": parent_id}
    engine.dispose()


@pytest.fixture
def api(own: dict[str, Any]) -> Iterator[RecordingClient]:
    client: RecordingClient = own["client"]
    start = len(client.responses)
    yield client
    errors = [r for r in client.responses[start:] if r.status_code >= 500]
    assert not errors, [(r.request.url, r.status_code, r.text[:300]) for r in errors]


def _create(api: RecordingClient, **body: Any) -> dict[str, Any]:
    response = api.post("/schedules", json={"cron": "0 3 * * *", "template": RERUN, **body})
    assert response.status_code == 201, response.text
    return response.json()


def test_create_a_rerun_schedule(api: RecordingClient) -> None:
    out = _create(api, name="nightly iris", timezone="Europe/Paris", cron="0  3 * * *")
    assert out["name"] == "nightly iris" and out["state"] == "active"
    assert out["cron"] == "0 3 * * *" and out["timezone"] == "Europe/Paris"
    assert out["template"] == RERUN and out["runs"] == [] and out["run_count"] == 0
    nxt = datetime.fromisoformat(out["next_run_at"])
    assert nxt > datetime.now(timezone.utc) and nxt.astimezone(timezone.utc).hour in (1, 2)
    assert api.get(f"/schedules/{out['id']}").json() == out


def test_create_an_add_trials_schedule_with_a_default_name(
    api: RecordingClient, own: dict[str, Any]
) -> None:
    template = {"kind": "add_trials", "search_id": own["parent_id"], "trials": 4}
    out = _create(api, cron="@hourly", template=template)
    assert out["name"] == f"add 4 trials to search {own['parent_id']}"
    assert out["template"] == template and out["cron"] == "@hourly"


def test_list_paginates_and_filters(api: RecordingClient) -> None:
    for i in range(3):
        _create(api, name=f"page {i}")
    everything = api.get("/schedules").json()
    assert everything["count"] >= 3 and len(everything["data"]) == everything["count"]
    ids = [s["id"] for s in everything["data"]]
    assert ids == sorted(ids, reverse=True)  # newest first
    page = api.get("/schedules", params={"limit": 2, "offset": 1}).json()
    assert [s["id"] for s in page["data"]] == ids[1:3] and page["count"] == everything["count"]
    api.post(f"/schedules/{ids[0]}/pause")
    paused = api.get("/schedules", params={"state": "paused"}).json()
    assert [s["id"] for s in paused["data"]] == [ids[0]] and paused["count"] == 1
    api.post(f"/schedules/{ids[0]}/resume")


def test_runs_are_the_searches_it_created_newest_first(
    api: RecordingClient, own: dict[str, Any]
) -> None:
    sid = _create(api, name="fires")["id"]
    later = datetime.now(timezone.utc) + timedelta(days=1)
    made: list[int] = []
    for days in (0, 1):  # two firings, a day apart
        made += schedules.tick(own["sessions"], storage_url=own["url"],
                               now=later + timedelta(days=days))
    out = api.get(f"/schedules/{sid}").json()
    assert [r["id"] for r in out["runs"]] == [i for i in reversed(made)
                                              if i in {r["id"] for r in out["runs"]}]
    mine = [r["id"] for r in out["runs"]]
    assert len(mine) == 2 and mine == sorted(mine, reverse=True)
    assert out["run_count"] == 2 and out["last_search_id"] == mine[0]
    assert all(r["state"] == "pending" for r in out["runs"])
    assert len(api.get(f"/schedules/{sid}", params={"runs_limit": 1}).json()["runs"]) == 1
    search = api.get(f"/searches/{mine[0]}").json()
    assert search["spec"]["dataset"] == "iris" and search["spec"]["dataset_version"] == 1


def test_pause_resume_and_their_conflicts(api: RecordingClient) -> None:
    sid = _create(api, name="toggle")["id"]
    paused = api.post(f"/schedules/{sid}/pause")
    assert paused.status_code == 200
    assert paused.json()["state"] == "paused" and paused.json()["next_run_at"] is None
    assert_error(api.post(f"/schedules/{sid}/pause"), 409, "already paused")
    resumed = api.post(f"/schedules/{sid}/resume").json()
    assert resumed["state"] == "active" and resumed["next_run_at"] is not None
    assert_error(api.post(f"/schedules/{sid}/resume"), 409, "already active")


def test_delete_keeps_its_searches(api: RecordingClient, own: dict[str, Any]) -> None:
    sid = _create(api, name="doomed")["id"]
    made = schedules.tick(own["sessions"], storage_url=own["url"],
                          now=datetime.now(timezone.utc) + timedelta(days=3))
    mine = [r["id"] for r in api.get(f"/schedules/{sid}").json()["runs"]]
    assert mine and set(mine) <= set(made)
    response = api.delete(f"/schedules/{sid}")
    assert response.status_code == 204 and response.content == b""
    assert_error(api.get(f"/schedules/{sid}"), 404, f"schedule {sid} not found")
    assert api.get(f"/searches/{mine[0]}").status_code == 200


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/schedules/4242"), ("POST", "/schedules/4242/pause"),
    ("POST", "/schedules/4242/resume"), ("DELETE", "/schedules/4242"),
])
def test_unknown_ids_are_404(api: RecordingClient, method: str, path: str) -> None:
    assert_error(api.request(method, path), 404, "schedule 4242 not found")


SPEC = RERUN["spec"]


@pytest.mark.parametrize(("body", "fragments"), [
    ({"cron": "0 3 * *"}, ["'0 3 * *'", "4 fields", '"0 3 * * *"']),
    ({"cron": "61 * * * *"}, ["'61 * * * *'", "out of range", '"0 3 * * *"']),
    ({"cron": "0 0 30 2 *"}, ["never matches"]),
    ({"cron": "* * * * * */30"}, ["fires every 30 s", "at most one run every 60 s",
                                  "MIN_SCHEDULE_INTERVAL_S"]),
    ({"cron": "* * * * * 0,5"}, ["fires every 5 s"]),
    ({"timezone": "Mars/Base"}, ["Mars/Base", "IANA"]),
    ({"template": {"kind": "sometimes"}}, ["template"]),
    ({"template": {"kind": "rerun"}}, ["template", "spec"]),
    ({"template": {"kind": "rerun", "spec": {**SPEC, "dataset": "../etc/data.csv"}}},
     ["file path", "POST /datasets"]),
    ({"template": {"kind": "rerun", "spec": {**SPEC, "dataset": "nothing-here"}}},
     ["neither a stored dataset nor a builtin"]),
    ({"template": {"kind": "rerun", "spec": {**SPEC, "dataset_version": 1}}},
     ["latest version"]),
    ({"template": {"kind": "rerun", "spec": {**SPEC, "families": ["nope"]}}}, ["nope"]),
    ({"template": {"kind": "rerun", "spec": {**SPEC, "architecture": "mlp:0"}}},
     ["width"]),
    ({"template": {"kind": "rerun", "spec": {**SPEC, "trials": 6000}}}, ["limit of 5000"]),
    ({"template": {"kind": "rerun", "spec": {**SPEC, "bogus": 1}}}, ["bogus"]),
    ({"template": {"kind": "add_trials", "search_id": 4242, "trials": 4}},
     ["search 4242 not found"]),
    ({"template": {"kind": "add_trials", "search_id": 1, "trials": 0}}, ["trials"]),
    ({"template": {"kind": "add_trials", "search_id": 1}}, ["trials"]),
    ({"name": ""}, ["name"]),
    ({"name": "x" * 201}, ["name"]),
    ({"extra": True}, ["extra"]),
])
def test_bad_requests_are_422(api: RecordingClient, body: dict[str, Any],
                              fragments: list[str]) -> None:
    full = {"cron": "0 3 * * *", "template": RERUN, **body}
    assert_error(api.post("/schedules", json=full), 422, *fragments)


def test_missing_fields_and_bad_queries_are_422(api: RecordingClient) -> None:
    assert_error(api.post("/schedules", json={"template": RERUN}), 422, "cron")
    assert_error(api.post("/schedules", json={"cron": "0 3 * * *"}), 422, "template")
    assert_error(api.post("/schedules", content=b"not json",
                          headers={"content-type": "application/json"}), 422)
    assert_error(api.get("/schedules", params={"state": "sleeping"}), 422, "state")
    assert_error(api.get("/schedules", params={"limit": 0}), 422, "limit")
    assert_error(api.get("/schedules/abc"), 422, "schedule_id")
