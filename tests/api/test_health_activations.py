"""GET /health, /activations and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from api.main import create_app
from models.activations import REGISTRY
from tests.api.conftest import RecordingClient, assert_error, make_settings


def test_health_embedded(client: RecordingClient) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["mode"] == "embedded"
    assert body["database"]["ok"] is True and body["broker"] is None


def test_health_reports_an_unreachable_broker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path).model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with RecordingClient(create_app(settings)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["mode"] == "distributed" and body["status"] == "degraded"
    assert body["database"]["ok"] is True  # SQLite file is created on connect
    assert body["broker"]["ok"] is False and "127.0.0.1:1" in body["broker"]["detail"]


def test_health_reports_an_unreachable_database(tmp_path: Path) -> None:
    settings = make_settings(tmp_path).model_copy(
        update={"database_url": "postgresql+psycopg://user:secret@127.0.0.1:1/actsearch"})
    with RecordingClient(create_app(settings)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    database = response.json()["database"]
    assert database["ok"] is False and "127.0.0.1:1" in database["detail"]
    assert "secret" not in database["detail"]


def test_activation_catalogue(client: RecordingClient) -> None:
    body = client.get("/activations").json()
    assert body["count"] == len(REGISTRY) == len(body["data"])
    by_name = {a["name"]: a for a in body["data"]}
    prelu = by_name["prelu"]
    assert prelu["trainable"] is True and prelu["formula"]
    assert any(p["learned"] for p in prelu["parameters"])
    assert by_name["relu"]["trainable"] is False and by_name["relu"]["parameters"] == []
    leaky = by_name["leaky_relu"]["parameters"][0]
    assert leaky["low"] is not None and leaky["high"] is not None


def test_one_activation_by_name_or_alias(client: RecordingClient) -> None:
    assert client.get("/activations/rational").json()["name"] == "rational"
    assert client.get("/activations/swish").json()["name"] == "silu"
    assert_error(client.get("/activations/nope"), 404, "unknown activation 'nope'", "relu")


def test_openapi_lists_every_resource_with_examples(client: RecordingClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {t["name"] for t in spec["tags"]} >= {"health", "activations", "datasets", "searches",
                                                 "trials"}
    paths = spec["paths"]
    for path in ("/health", "/activations", "/activations/{name}", "/datasets",
                 "/datasets/builtin", "/datasets/{dataset_id}", "/searches",
                 "/searches/{search_id}", "/searches/{search_id}/cancel",
                 "/searches/{search_id}/trials", "/searches/{search_id}/leaderboard",
                 "/searches/{search_id}/export", "/trials", "/trials/{trial_id}",
                 "/trials/{trial_id}/activations"):
        assert path in paths, path
    post = paths["/searches"]["post"]
    assert post["summary"] and post["description"]
    assert "examples" in post["requestBody"]["content"]["application/json"]
    upload = paths["/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "file" in upload["schema"]["properties"]


def test_unknown_route_and_method_stay_json(client: RecordingClient) -> None:
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.delete("/activations"), 405)
