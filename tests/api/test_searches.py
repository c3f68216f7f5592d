"""POST/GET /searches, cancel, trials, leaderboard, and the mistakes a client can make."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from search.service import create_search
from search.spec import parse_spec
from store.db import init_db
from tests.api.conftest import TINY_SPEC, RecordingClient, assert_error, make_client, make_settings


def _submit(client: RecordingClient, **overrides: Any):
    return client.post("/searches", json={**TINY_SPEC, **overrides})


def test_submit_creates_a_pending_search_on_a_builtin(client: RecordingClient) -> None:
    r = _submit(client, name="pending one")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "pending" and body["name"] == "pending one"
    assert body["spec"]["dataset"] == "iris" and body["spec"]["dataset_version"] >= 1
    progress = body["progress"]
    assert progress["phase"] == "pending" and progress["budget"] == 4 and progress["done"] == 0
    assert client.get(f"/searches/{body['id']}").json()["state"] == "pending"
    # cancel works once, then it is a conflict
    cancelled = client.post(f"/searches/{body['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert_error(client.post(f"/searches/{body['id']}/cancel"), 409, "already cancelled")


def test_submit_on_an_uploaded_dataset_pins_its_version(client: RecordingClient) -> None:
    from tests.utils.data_files import csv_bytes, make_frame

    for seed in (1, 2):
        client.post("/datasets", files={"file": ("t.csv", csv_bytes(make_frame(seed=seed)))},
                    data={"name": "pinned"})
    latest = _submit(client, dataset="pinned").json()
    assert latest["spec"]["dataset_version"] == 2
    first = _submit(client, dataset="pinned", dataset_version=1).json()
    assert first["spec"]["dataset_version"] == 1 and first["dataset_id"] != latest["dataset_id"]
    for row in (latest, first):
        client.post(f"/searches/{row['id']}/cancel")


def test_finished_search_detail_and_progress(client: RecordingClient,
                                             finished_search_id: int) -> None:
    body = client.get(f"/searches/{finished_search_id}").json()
    assert body["state"] == "complete" and body["name"] == "tiny iris"
    assert body["best"]["family"] in ("relu", "prelu") and body["best"]["metric"] == "accuracy"
    p = body["progress"]
    assert p["phase"] == "done" and p["budget"] == 4
    assert p["done"] == p["complete"] + p["pruned"] + p["failed"] == 4
    assert p["running"] == 0 and p["finalists_total"] == p["finalists_done"] == 2
    assert p["best_family"] in ("relu", "prelu") and 0 <= p["best_value"] <= 1
    assert p["elapsed_s"] > 0
    assert_error(client.post(f"/searches/{finished_search_id}/cancel"), 409, "already complete")


def test_list_filters_sorts_and_pages(client: RecordingClient, finished_search_id: int) -> None:
    ids = [_submit(client, name=f"list {i}").json()["id"] for i in range(3)]
    page = client.get("/searches", params={"state": "pending", "limit": 2}).json()
    assert page["count"] >= 3 and len(page["data"]) == 2
    assert [s["id"] for s in page["data"]] == sorted(ids, reverse=True)[:2]  # newest first
    created = [s["created_at"] for s in page["data"]]
    assert created == sorted(created, reverse=True)
    done = client.get("/searches", params={"state": "complete"}).json()
    assert finished_search_id in [s["id"] for s in done["data"]]
    dataset_id = client.get(f"/searches/{finished_search_id}").json()["dataset_id"]
    by_data = client.get("/searches", params={"dataset_id": dataset_id, "limit": 500}).json()
    assert all(s["dataset_id"] == dataset_id for s in by_data["data"])
    assert by_data["count"] == len(by_data["data"])
    for i in ids:
        client.post(f"/searches/{i}/cancel")


def test_search_trials_sort_filter_page(client: RecordingClient, finished_search_id: int) -> None:
    url = f"/searches/{finished_search_id}/trials"
    every = client.get(url, params={"limit": 500}).json()
    assert every["count"] == len(every["data"]) == 4 + 2 * 2  # 4 search trials, 2x2 finalists
    values = [t["value"] for t in every["data"] if t["value"] is not None]
    assert values == sorted(values, reverse=True)  # default: value, best first
    finalists = client.get(url, params={"phase": "finalist"}).json()
    assert finalists["count"] == 4 and {t["phase"] for t in finalists["data"]} == {"finalist"}
    prelu = client.get(url, params={"family": "prelu", "phase": "search"}).json()
    assert prelu["count"] == 2 and {t["family"] for t in prelu["data"]} == {"prelu"}
    by_family = client.get(url, params={"sort": "family", "order": "asc", "limit": 500}).json()
    families = [t["family"] for t in by_family["data"]]
    assert families == sorted(families)
    created = client.get(url, params={"sort": "created", "order": "asc", "limit": 3}).json()
    assert [t["id"] for t in created["data"]] == sorted(t["id"] for t in created["data"])
    assert created["count"] == 8 and len(created["data"]) == 3
    durations = client.get(url, params={"sort": "duration"}).json()["data"]
    ds = [t["duration_s"] for t in durations]
    assert ds == sorted(ds, reverse=True)
    assert client.get(url, params={"state": "failed"}).json()["count"] == 0


def test_leaderboard_marks_the_baseline(client: RecordingClient, finished_search_id: int) -> None:
    board = client.get(f"/searches/{finished_search_id}/leaderboard").json()
    assert board["metric"] == "accuracy" and board["state"] == "complete"
    rows = board["rows"]
    assert {r["family"] for r in rows} == {"relu", "prelu"}
    assert [r["rank"] for r in rows] == [1, 2] and board["winner"] == rows[0]["family"]
    assert [r["mean"] for r in rows] == sorted((r["mean"] for r in rows), reverse=True)
    baseline = [r for r in rows if r["baseline"]]
    assert len(baseline) == 1 and baseline[0]["family"] == "relu"
    assert baseline[0]["delta_vs_baseline"] == 0
    assert all(r["n_seeds"] == 2 and len(r["values"]) == 2 for r in rows)
    assert rows[0]["test_mean"] is not None  # only the final choice is scored on test
    assert all(r["test_mean"] is None for r in rows[1:])
    assert all(math.isfinite(r["ci95"]) for r in rows)


# ---------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"families": ["relu", "swishy"]}, ["unknown activation 'swishy'"]),
        ({"families": ["prelu", "prelu"]}, ["listed twice"]),
        ({"architecture": "mlp:64,x"}, ["'x' is not a whole number"]),
        ({"architecture": "lstm:4"}, ["unknown architecture kind"]),
        ({"architecture": "transformer:4"}, ["cannot read '4'", "key=value"]),
        ({"architecture": "mlp:"}, ["at least one hidden layer"]),
        ({"dataset": "/etc/passwd"}, ["looks like a file path", "POST /datasets"]),
        ({"dataset": "data/train.csv"}, ["looks like a file path", "POST /datasets"]),
        ({"dataset": "train.csv"}, ["looks like a file path"]),
        ({"dataset": "no-such-data"}, ["no stored dataset named 'no-such-data'", "POST /datasets"]),
        ({"dataset": "iris", "dataset_version": 99}, ["no version 99"]),
        ({"dataset": "iris", "label": "species"}, ["omit 'label'"]),
        ({"dataset": "iris", "task": "regression"}, ["not regression"]),
        ({"trials": 0}, ["body trials", "greater than or equal to 1"]),
        ({"trials": 1_000_000}, ["limit of"]),
        ({"epochs": 5_000}, ["limit of"]),
        ({"architecture": "mlp:100000"}, ["above the limit"]),
        ({"sampler": "bogus"}, ["unknown sampler"]),
        ({"lr": [0.1, 0.01]}, ["low <= high"]),
        ({"unknown_option": 1}, ["unknown_option", "extra"]),
    ],
)
def test_submit_mistakes_are_422(client: RecordingClient, overrides: dict[str, Any],
                                 fragments: list[str]) -> None:
    before = client.get("/searches").json()["count"]
    assert_error(_submit(client, **overrides), 422, *fragments)
    assert client.get("/searches").json()["count"] == before  # nothing half-created


def test_submit_needs_a_dataset_and_json(client: RecordingClient) -> None:
    assert_error(client.post("/searches", json={"trials": 4}), 422, "dataset")
    bad = client.post("/searches", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(bad, 422, "json")


@pytest.mark.parametrize("path", ["/searches/999999", "/searches/999999/trials",
                                  "/searches/999999/leaderboard", "/searches/999999/export"])
def test_unknown_search_is_404(client: RecordingClient, path: str) -> None:
    assert_error(client.get(path), 404, "search 999999 not found")


def test_cancel_unknown_search_is_404(client: RecordingClient) -> None:
    assert_error(client.post("/searches/999999/cancel"), 404, "search 999999 not found")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 10_000}, "limit"),
        ({"offset": -5}, "offset"),
        ({"state": "sleeping"}, "state"),
        ({"dataset_id": 0}, "dataset_id"),
    ],
)
def test_bad_list_params_are_422(client: RecordingClient, params: dict[str, Any],
                                 fragment: str) -> None:
    assert_error(client.get("/searches", params=params), 422, fragment)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [({"sort": "colour"}, "sort"), ({"order": "up"}, "order"), ({"phase": "warmup"}, "phase"),
     ({"limit": 0}, "limit")],
)
def test_bad_trial_params_are_422(client: RecordingClient, finished_search_id: int,
                                  params: dict[str, Any], fragment: str) -> None:
    assert_error(client.get(f"/searches/{finished_search_id}/trials", params=params), 422,
                 fragment)


def test_distributed_mode_enqueues_after_commit(settings, monkeypatch) -> None:
    """With a broker configured, the committed search is handed to worker.enqueue."""
    import worker.enqueue
    from store.db import make_engine, session_factory
    from tests.api.conftest import make_client

    seen: list[tuple[int, str]] = []
    engine = make_engine(settings.resolved_database_url)

    def fake_submit(search_id: int) -> str:
        with session_factory(engine)() as other:  # another connection sees the row: committed
            from store import repo

            seen.append((search_id, repo.get_search(other, search_id=search_id).state))
        return "task-1"

    monkeypatch.setattr(worker.enqueue, "submit_search", fake_submit)
    # Auth is on by default in distributed mode; this test is about enqueueing, not keys.
    no_auth = settings.auth.model_copy(update={"enabled": False})
    distributed = make_client(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0",
                                                          "auth": no_auth}))
    r = distributed.post("/searches", json={**TINY_SPEC, "name": "queued"})
    assert r.status_code == 201, r.text
    assert seen == [(r.json()["id"], "pending")]

    def broken(search_id: int) -> str:
        raise ConnectionError("broker down")

    monkeypatch.setattr(worker.enqueue, "submit_search", broken)
    again = distributed.post("/searches", json={**TINY_SPEC, "name": "queued later"})
    assert again.status_code == 201  # accepted; the reconciler starts it once the broker is back
    for row in (r.json(), again.json()):
        distributed.post(f"/searches/{row['id']}/cancel")
    engine.dispose()


def test_a_search_refused_late_registers_no_builtin(tmp_path: Path) -> None:
    """A warm start that cannot seed the search is found before the built-in is registered."""
    settings = make_settings(tmp_path)
    init_db(settings.resolved_database_url)
    with make_client(settings) as client:
        sessions = client.app.state.sessions  # type: ignore[attr-defined]
        with sessions.begin() as session:
            parent = create_search(session=session, spec=parse_spec(TINY_SPEC),
                                   storage_url=settings.resolved_database_url, name="parent").id
        before = client.get("/datasets").json()["count"]
        r = client.post("/searches", json={"dataset": "wine", "architecture": "mlp:8",
                                           "families": ["gelu"], "warm_start_from": parent})
        assert r.status_code == 422, r.text
        assert "cannot seed this search" in r.json()["detail"]
        assert client.get("/datasets").json()["count"] == before
        assert client.get("/datasets", params={"name": "wine"}).json()["count"] == 0
