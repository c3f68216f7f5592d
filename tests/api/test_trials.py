"""GET /trials (across searches), /trials/{id}, /trials/{id}/activations."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import RecordingClient, assert_error


def _trials(client: RecordingClient, **params: Any) -> dict[str, Any]:
    r = client.get("/trials", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_cross_search_query_filters(client: RecordingClient, finished_search_id: int) -> None:
    mine = [t for t in _trials(client)["data"] if t["search_id"] == finished_search_id]
    assert len(mine) == 8
    prelu = _trials(client, family="prelu")["data"]
    assert prelu and {t["family"] for t in prelu} == {"prelu"}
    by_name = _trials(client, dataset="iris")
    dataset_id = client.get(f"/searches/{finished_search_id}").json()["dataset_id"]
    by_id = _trials(client, dataset=str(dataset_id))
    assert by_name["count"] >= by_id["count"] >= 8
    assert _trials(client, architecture="mlp")["count"] >= 8
    assert _trials(client, architecture="cnn")["count"] == 0
    finalists = _trials(client, phase="finalist", state="complete")["data"]
    assert finalists and all(t["phase"] == "finalist" for t in finalists)


def test_metric_range_filter(client: RecordingClient, finished_search_id: int) -> None:
    values = sorted(t["value"] for t in _trials(client)["data"] if t["value"] is not None)
    low, high = values[len(values) // 4], values[-1]
    got = _trials(client, min_value=low, max_value=high)
    assert got["data"] and all(low <= t["value"] <= high for t in got["data"])
    assert _trials(client, min_value=2.0)["count"] == 0


def test_trial_detail(client: RecordingClient, finished_search_id: int) -> None:
    finalist = client.get(f"/searches/{finished_search_id}/trials",
                          params={"phase": "finalist", "limit": 1}).json()["data"][0]
    body = client.get(f"/trials/{finalist['id']}").json()
    assert body["has_weights"] is True and body["phase"] == "finalist"
    assert set(body["hparams"]) >= {"lr", "weight_decay"}
    assert body["device"] == "cpu" and body["duration_s"] > 0 and body["n_params"] > 0
    assert [e["epoch"] for e in body["epochs"]] == [1, 2, 3]
    assert all(e["val_metric"] is not None for e in body["epochs"])
    stats = body["preact_stats"]
    assert stats and {"layer", "epoch", "min", "max", "quantiles", "dead_fraction"} <= set(stats[0])
    assert "hist" not in stats[0]  # the summary; histograms are under /activations


def test_trial_activations(client: RecordingClient, finished_search_id: int) -> None:
    trial = client.get(f"/searches/{finished_search_id}/trials",
                       params={"family": "prelu", "limit": 1}).json()["data"][0]
    body = client.get(f"/trials/{trial['id']}/activations").json()
    assert body["family"] == "prelu" and isinstance(body["fits"], list)
    curves = body["curves"]
    assert curves and {c["layer"] for c in curves} == {0}
    assert len({c["epoch"] for c in curves}) >= 2  # start, ..., end
    first = curves[0]
    units, points = first["y_shape"]
    assert len(first["x"]) == points and len(first["y"]) == units and len(first["y"][0]) == points
    hists = body["histograms"]
    assert hists and len(hists[0]["edges"]) == len(hists[0]["hist"]) + 1
    last = max(c["epoch"] for c in curves)
    one = client.get(f"/trials/{trial['id']}/activations", params={"layer": 0, "epoch": last})
    assert [c["epoch"] for c in one.json()["curves"]] == [last]


@pytest.mark.parametrize("path", ["/trials/999999", "/trials/999999/activations"])
def test_unknown_trial_is_404(client: RecordingClient, path: str) -> None:
    assert_error(client.get(path), 404, "trial 999999 not found")


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"dataset": "no-such-data"}, 404, "no dataset named 'no-such-data'"),
        ({"dataset": "999999"}, 404, "dataset 999999 not found"),
        ({"architecture": "rnn"}, 422, "architecture"),
        ({"min_value": "high"}, 422, "min_value"),
        ({"state": "sleeping"}, 422, "state"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 10_000}, 422, "limit"),
    ],
)
def test_trial_query_mistakes(client: RecordingClient, params: dict[str, Any], status: int,
                              fragment: str) -> None:
    assert_error(client.get("/trials", params=params), status, fragment)


def test_finished_rational_trial_has_fits(tmp_path: Any) -> None:
    """Curve analysis runs after the search completes; /activations serves it once done."""
    from search.coordinator import EmbeddedCoordinator
    from search.service import create_search
    from search.spec import parse_spec
    from store.db import init_db, make_engine, session_factory
    from tests.api.conftest import make_client, make_settings
    from tests.utils.analysis import wait_analysis

    settings = make_settings(tmp_path)
    url = settings.resolved_database_url
    init_db(url)
    engine = make_engine(url)
    sessions = session_factory(engine)
    spec = {"dataset": "iris", "architecture": "mlp:8", "families": ["rational"], "trials": 2,
            "epochs": 2, "finalist_seeds": 1, "batch_size": 32}
    with sessions.begin() as session:
        search_id = create_search(session=session, spec=parse_spec(spec), storage_url=url,
                                  name="fits").id
    EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id, workers=1,
                        threads=1).run()
    client = make_client(settings)
    assert client.get(f"/searches/{search_id}").json()["analysis"] == {"state": "pending",
                                                                       "error": None}
    trials = client.get(f"/searches/{search_id}/trials",
                        params={"state": "complete", "limit": 50}).json()["data"]
    trial = next(t for t in trials if t["family"] == "rational")
    before = client.get(f"/trials/{trial['id']}/activations").json()
    assert before["fits"] == [] and before["analysis"]["state"] == "pending"
    wait_analysis(sessions, search_id, run_here=True)
    engine.dispose()
    assert client.get(f"/searches/{search_id}").json()["analysis"]["state"] == "done"
    fits = client.get(f"/trials/{trial['id']}/activations").json()["fits"]
    assert fits and {f["kind"] for f in fits} == {"closed_form", "linear", "distilled"}
    best = fits[0]
    assert best["kind"] == "closed_form" and best["rmse"] is not None and best["params"]
    assert {"family", "params", "rmse", "max_error", "r2", "kind", "layer", "epoch"} <= set(best)
