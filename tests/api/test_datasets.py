"""POST /datasets (upload and builtin), GET /datasets, GET /datasets/{id}, and their mistakes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from core.settings import Settings
from tests.api.conftest import RecordingClient, assert_error, make_client, make_settings
from tests.utils.data_files import csv_bytes, make_frame, npz_bytes


def _upload(client: RecordingClient, data: bytes, filename: str = "t.csv", **fields: str):
    return client.post("/datasets", files={"file": (filename, data, "text/csv")}, data=fields)


def test_upload_csv_then_a_new_version_keeps_the_old(client: RecordingClient) -> None:
    v1 = _upload(client, csv_bytes(make_frame(seed=1)), name="versions")
    assert v1.status_code == 201, v1.text
    body = v1.json()
    assert (body["name"], body["version"], body["n_rows"], body["n_features"], body["n_classes"]) \
        == ("versions", 1, 60, 3, 3)
    again = _upload(client, csv_bytes(make_frame(seed=1)), name="versions")
    assert again.status_code == 201 and again.json()["id"] == body["id"]  # same content: same row
    v2 = _upload(client, csv_bytes(make_frame(seed=2)), name="versions").json()
    assert v2["version"] == 2 and v2["id"] != body["id"]

    detail = client.get(f"/datasets/{body['id']}").json()  # the old version is still there
    assert detail["version"] == 1 and [v["version"] for v in detail["versions"]] == [2, 1]
    assert detail["classes"] == ["0", "1", "2"]
    assert detail["schema"]["feature_names"] == ["f0", "f1", "f2"]
    assert detail["schema"]["label_name"] == "label"


def test_upload_with_label_task_and_default_name(client: RecordingClient) -> None:
    frame = make_frame(n=40, label="target_col")
    frame["target_col"] = np.linspace(0, 1, 40)
    body = _upload(client, csv_bytes(frame), filename="house-prices.csv", label="target_col",
                   task="regression").json()
    assert body["name"] == "house-prices" and body["task"] == "regression"
    assert body["n_classes"] is None
    spaced = _upload(client, csv_bytes(make_frame(seed=9)), filename="my data (2).csv").json()
    assert spaced["name"] == "my-data-2"


def test_upload_parquet_and_npz(client: RecordingClient) -> None:
    buf = io.BytesIO()
    make_frame(seed=3).to_parquet(buf)
    pq = client.post("/datasets", files={"file": ("p.parquet", buf.getvalue())},
                     data={"name": "pq-set"})
    assert pq.status_code == 201 and pq.json()["n_rows"] == 60
    rng = np.random.default_rng(0)
    data = npz_bytes(X=rng.standard_normal((30, 1, 4, 4)).astype(np.float32),
                     y=np.arange(30) % 2)
    npz = client.post("/datasets", files={"file": ("img.npz", data)}, data={"name": "npz-set"})
    assert npz.status_code == 201, npz.text
    assert npz.json()["input_shape"] == [1, 4, 4] and npz.json()["n_features"] == 16


def test_register_builtin_with_options(client: RecordingClient) -> None:
    r = client.post("/datasets/builtin", json={"builtin": "two_spirals", "name": "spirals-small",
                                               "options": {"n": 200, "noise": 0.1}})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "spirals-small" and r.json()["n_rows"] == 200
    detail = client.get(f"/datasets/{r.json()['id']}").json()
    assert detail["schema"]["options"] == {"n": 200, "noise": 0.1, "seed": 0}
    builtins = client.get("/datasets/builtins").json()
    assert "iris" in {b["name"] for b in builtins["data"]}


def test_list_filters_and_pages(client: RecordingClient) -> None:
    for seed in range(3):
        _upload(client, csv_bytes(make_frame(seed=10 + seed)), name="paged")
    page = client.get("/datasets", params={"name": "paged", "limit": 2}).json()
    assert page["count"] == 3 and [d["version"] for d in page["data"]] == [3, 2]
    rest = client.get("/datasets", params={"name": "paged", "limit": 2, "offset": 2}).json()
    assert [d["version"] for d in rest["data"]] == [1]
    latest = client.get("/datasets", params={"latest": True, "limit": 500}).json()
    names = [d["name"] for d in latest["data"]]
    assert len(names) == len(set(names)) == latest["count"]


# ---------------------------------------------------------------- mistakes


def test_upload_too_large_is_413(settings: Settings) -> None:
    small = make_client(make_settings(settings.home, max_upload_bytes=2_000))
    big = csv_bytes(make_frame(n=400))
    assert len(big) > 2_000
    assert_error(_upload(small, big, name="big"), 413, "limit", "2000 bytes")
    # also when the part alone passes the form-overhead allowance but not the limit
    medium = csv_bytes(make_frame(n=60))
    assert 2_000 < len(medium) < 2_000 + 64 * 1024
    assert_error(_upload(small, medium, name="medium"), 413, "limit")
    assert small.get("/datasets", params={"name": "big"}).json()["count"] == 0


@pytest.mark.parametrize(
    ("filename", "data", "fragment"),
    [
        ("model.pkl", b"\x80\x04\x95abc", "pickle"),
        ("sheet.xlsx", b"PK\x03\x04" + b"\x00" * 40, "not a supported file"),
        ("fake.parquet", b"a,b\n1,2\n", "Parquet magic"),
        ("fake.csv", b"\x00\x01\x02binary" * 10, "not text"),
    ],
)
def test_wrong_file_type_is_415(client: RecordingClient, filename: str, data: bytes,
                                fragment: str) -> None:
    assert_error(_upload(client, data, filename=filename), 415, fragment)


def test_not_multipart_is_415(client: RecordingClient) -> None:
    assert_error(client.post("/datasets", json={"name": "x"}), 415, "multipart/form-data",
                 "/datasets/builtin")


def test_missing_file_part_is_422(client: RecordingClient) -> None:
    r = client.post("/datasets", files={"other": ("t.csv", b"a,b\n")}, data={"name": "x"})
    assert_error(r, 422, "no file part named 'file'")


def test_csv_missing_label_column_is_422(client: RecordingClient) -> None:
    data = csv_bytes(make_frame(label="label"))
    assert_error(_upload(client, data, label="species"), 422, "species")
    no_label = csv_bytes(make_frame().rename(columns={"label": "outcome"}))
    assert_error(_upload(client, no_label), 422, "label")


def test_nan_in_data_is_422(client: RecordingClient) -> None:
    frame = make_frame()
    frame.loc[3, "f1"] = np.nan
    assert_error(_upload(client, csv_bytes(frame), name="nan-set"), 422, "NaN", "f1")


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"task": "clustering"}, "task must be"),
        ({"name": "../etc/passwd"}, "not allowed"),
        ({"name": "x" * 300}, "not allowed"),
    ],
)
def test_bad_form_fields_are_422(client: RecordingClient, fields: dict[str, str],
                                 fragment: str) -> None:
    assert_error(_upload(client, csv_bytes(make_frame()), **fields), 422, fragment)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"builtin": "imagenet"}, 422, "unknown builtin"),
        ({"builtin": "two_spirals", "options": {"n": 3}}, 422, "must be in"),
        ({"builtin": "iris", "options": {"size": 10}}, 422, "unknown option"),
        ({"builtin": "iris", "name": "a/b"}, 422, "not allowed"),
        ({"builtin": "iris", "extra": 1}, 422, "extra"),
        ({}, 422, "builtin"),
    ],
)
def test_builtin_mistakes(client: RecordingClient, body: dict, status: int, fragment: str) -> None:
    assert_error(client.post("/datasets/builtin", json=body), status, fragment)


def test_unknown_dataset_is_404(client: RecordingClient) -> None:
    assert_error(client.get("/datasets/999999"), 404, "dataset 999999 not found")
    assert_error(client.get("/datasets/abc"), 422, "dataset_id")


@pytest.mark.parametrize("limit", [0, 10_000, -1])
def test_bad_limits_are_422(client: RecordingClient, limit: int) -> None:
    assert_error(client.get("/datasets", params={"limit": limit}), 422, "limit")
    assert_error(client.get("/datasets", params={"offset": -1}), 422, "offset")
