"""The equal-compute control arm over HTTP: submitted, refused, returned with the leaderboard."""

from __future__ import annotations

from typing import Any

import pytest

from core.settings import Settings
from search.coordinator import EmbeddedCoordinator
from search.service import create_search
from search.spec import parse_spec
from store.db import make_engine, session_factory
from tests.api.conftest import TINY_SPEC, RecordingClient, assert_error


@pytest.fixture(scope="module")
def control_search_id(settings: Settings) -> int:
    """TINY_SPEC with ``control: relu``, run to completion here."""
    url = settings.resolved_database_url
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        row = create_search(session=session, spec=parse_spec({**TINY_SPEC, "control": "relu"}),
                            storage_url=url, name="tiny iris with control")
        search_id = row.id
    EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id, workers=1,
                        threads=1, home=settings.home).run()
    engine.dispose()
    return search_id


def test_bad_control_is_a_422(client: RecordingClient) -> None:
    before = client.get("/searches").json()["count"]
    assert_error(client.post("/searches", json={**TINY_SPEC, "control": "gelu"}), 422,
                 "unknown control 'gelu'")
    assert_error(client.post("/searches", json={**TINY_SPEC, "control": 1}), 422, "control")
    assert client.get("/searches").json()["count"] == before


def test_control_is_accepted_and_stored_in_the_spec(client: RecordingClient) -> None:
    r = client.post("/searches", json={**TINY_SPEC, "control": "relu", "name": "ctl pending"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["spec"]["control"] == "relu"
    assert body["progress"]["control"] == {"family": "relu", "candidate_epochs": 0,
                                           "target_candidate_epochs": 0, "trials": 0,
                                           "running": 0, "finalists_done": False}
    client.post(f"/searches/{body['id']}/cancel")


def test_leaderboard_and_detail_return_the_control(client: RecordingClient,
                                                   control_search_id: int) -> None:
    board = client.get(f"/searches/{control_search_id}/leaderboard").json()
    assert board["state"] == "complete"
    assert {r["family"] for r in board["rows"]} == {"relu", "prelu"}
    c: dict[str, Any] = board["control"]
    assert c["family"] == "relu" and c["n_seeds"] == TINY_SPEC["finalist_seeds"]
    assert c["test_mean"] is not None and c["verdict"] in ("helped", "did_not_help", "hurt")
    assert c["message"].startswith("searching activations ")
    # equal compute within one population (the tiny search's K is 2 at most)
    assert abs(c["candidate_epochs"] - c["search_candidate_epochs"]) <= 2 * TINY_SPEC["epochs"]
    # the CLI's --server mode rebuilds the same control row from this JSON
    from actsearch.remote import leaderboard_from_api

    again = leaderboard_from_api(board).control
    assert again is not None and again.verdict == c["verdict"] and again.message == c["message"]
    detail = client.get(f"/searches/{control_search_id}").json()
    assert detail["best"]["control"]["verdict"] == c["verdict"]
    p = detail["progress"]
    assert p["phase"] == "done" and p["control"]["finalists_done"] is True
    assert p["control"]["candidate_epochs"] == c["candidate_epochs"]
    # the control's trials are listed under their own phases, never as search trials
    trials = client.get(f"/searches/{control_search_id}/trials",
                        params={"phase": "control", "limit": 500}).json()
    assert trials["count"] == c["trials"] and {t["family"] for t in trials["data"]} == {"relu"}
    search_trials = client.get(f"/searches/{control_search_id}/trials",
                               params={"phase": "search"}).json()
    assert search_trials["count"] == TINY_SPEC["trials"]


def test_searches_without_control_have_none(client: RecordingClient,
                                            finished_search_id: int) -> None:
    assert client.get(f"/searches/{finished_search_id}/leaderboard").json()["control"] is None
    assert client.get(f"/searches/{finished_search_id}").json()["progress"]["control"] is None
