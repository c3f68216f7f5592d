"""The dashboard's server side without a browser: pages, static files, importance, intermediate values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from search.coordinator import EmbeddedCoordinator
from search.service import create_search
from search.spec import parse_spec
from store.db import init_db, make_engine, session_factory
from tests.api.conftest import make_settings

SPEC: dict[str, Any] = {"dataset": "iris", "architecture": "mlp:4", "families": ["relu", "gelu"],
                        "trials": 4, "epochs": 2, "finalist_seeds": 1, "batch_size": 32}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(Path(tmp_path_factory.mktemp("dash-api")))
    url = settings.resolved_database_url
    init_db(url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _run_search(client: TestClient, spec: dict[str, Any], *, run: bool) -> int:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    url = settings.resolved_database_url
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        search_id = create_search(session=session, spec=parse_spec(spec), storage_url=url).id
    if run:
        EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id, workers=1,
                            threads=1).run()
    engine.dispose()
    return search_id


@pytest.mark.parametrize("path,script", [
    ("/", "searches.js"), ("/ui/searches/7", "search.js"), ("/ui/trials/3", "trial.js"),
    ("/ui/new", "new.js"), ("/ui/schedules", "schedules.js"),
])
def test_pages_are_html_shells_with_their_module(client: TestClient, path: str, script: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f'src="/ui/static/js/{script}"' in r.text
    assert "/ui/static/vendor/uplot/uPlot.iife.min.js" in r.text  # served locally, no CDN
    assert "http://" not in r.text and "https://" not in r.text


def test_static_files_and_the_vendored_chart_library_are_served(client: TestClient) -> None:
    for path in ("/ui/static/vendor/uplot/uPlot.iife.min.js", "/ui/static/vendor/uplot/LICENSE",
                 "/ui/static/js/common.js", "/ui/static/css/dashboard.css"):
        assert client.get(path).status_code == 200, path
    assert client.get("/ui/static/nope.js").status_code == 404
    assert client.get("/ui/searches/not-a-number").status_code == 422


def test_json_paths_are_unchanged(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/health", "/activations", "/datasets", "/searches", "/searches/{search_id}",
              "/searches/{search_id}/leaderboard", "/trials/{trial_id}/activations",
              "/searches/{search_id}/importance", "/searches/{search_id}/intermediate"):
        assert p in paths, p
    assert "/" not in paths and not any(p.startswith("/ui") for p in paths)


def test_importance_and_intermediate_values(client: TestClient) -> None:
    pending = _run_search(client, SPEC, run=False)
    r = client.get(f"/searches/{pending}/importance")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["importances"] == [] and "at least 2 completed trials" in body["message"]
    assert client.get(f"/searches/{pending}/intermediate").json()["trials"] == []

    done = _run_search(client, SPEC, run=True)
    body = client.get(f"/searches/{done}/importance").json()
    assert body["evaluator"] == "fanova" and body["n_complete"] >= 2
    names = {i["param"] for i in body["importances"]}
    assert {"lr", "weight_decay"} <= names
    assert abs(sum(i["importance"] for i in body["importances"]) - 1) < 1e-6
    again = client.get(f"/searches/{done}/importance").json()
    assert again == body  # cached and deterministic
    mdi = client.get(f"/searches/{done}/importance", params={"evaluator": "mean_decrease_impurity"})
    assert mdi.status_code == 200 and mdi.json()["importances"]
    assert client.get(f"/searches/{done}/importance", params={"evaluator": "x"}).status_code == 422
    assert client.get("/searches/999/importance").status_code == 404

    inter = client.get(f"/searches/{done}/intermediate").json()
    assert inter["directions"] == ["maximize"]
    assert len(inter["trials"]) == 4
    for t in inter["trials"]:
        assert t["family"] in ("relu", "gelu")
        assert t["steps"] == sorted(t["steps"]) and len(t["steps"]) == len(t["values"])
        assert t["state"] in ("complete", "pruned")
