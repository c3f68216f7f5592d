"""Transformer and resnet searches through the service: create over HTTP (or refuse with a
422), run, read the leaderboard and curves, export a program that runs with torch alone."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.settings import Settings
from search.coordinator import EmbeddedCoordinator
from store.db import make_engine, session_factory
from tests.api.conftest import RecordingClient, assert_error

GATED = ["glu", "reglu", "geglu", "swiglu", "bilinear"]


def test_catalogue_lists_the_new_families_and_labels_gate_curves(client: RecordingClient) -> None:
    by_name = {a["name"]: a for a in client.get("/activations").json()["data"]}
    for name in [*GATED, "squared_relu", "star_relu", "sine", "gaussian", "group_rational"]:
        assert by_name[name]["formula"] and by_name[name]["reference"], name
    for name in GATED:
        assert by_name[name]["curve_label"] == "gate response"
        assert "gate response" in by_name[name]["formula"] and not by_name[name]["pointwise"]
    assert by_name["relu"]["curve_label"] == "activation"
    assert by_name["star_relu"]["trainable"] and by_name["sine"]["weight_init"] == "siren"
    groups = next(p for p in by_name["group_rational"]["parameters"] if p["name"] == "groups")
    assert groups["structural"] and groups["choices"] == [1, 2, 4, 8, 16]


@pytest.mark.parametrize(("body", "fragments"), [
    ({"dataset": "digits", "architecture": "transformer:d=16,layers=1,heads=2"},
     ["transformer reads token sequences", "tabular"]),
    ({"dataset": "modular_sum", "architecture": "mlp:16"}, ["token ids", "use a transformer"]),
    ({"dataset": "iris", "architecture": "resnet:8"}, ["resnet needs input_shape"]),
    ({"dataset": "modular_sum", "architecture": "transformer:d=16,heads=3"}, ["heads=3 must divide"]),
    ({"dataset": "modular_sum", "architecture": "transformer:d=16,depth=2"}, ["cannot read 'depth=2'"]),
])
def test_mismatched_architectures_are_422(client: RecordingClient, body: dict[str, Any],
                                          fragments: list[str]) -> None:
    assert_error(client.post("/searches", json={**body, "trials": 2, "epochs": 1}), 422, *fragments)


def _run(settings: Settings, search_id: int) -> None:
    url = settings.resolved_database_url
    engine = make_engine(url)
    EmbeddedCoordinator(sessions=session_factory(engine), storage_url=url, search_id=search_id,
                        workers=1, threads=1).run()
    engine.dispose()


RUNS = [
    pytest.param({"dataset": "modular_sum", "architecture": "transformer:d=16,layers=1,heads=2",
                  "families": ["relu", "swiglu", "star_relu"]}, "tokens", id="transformer"),
    pytest.param({"dataset": "digits_images", "architecture": "resnet:4",
                  "families": ["relu", "geglu", "squared_relu"]}, "image", id="resnet"),
]


@pytest.mark.parametrize(("body", "modality"), RUNS)
def test_search_runs_end_to_end(client: RecordingClient, settings: Settings, tmp_path: Path,
                                body: dict[str, Any], modality: str) -> None:
    r = client.post("/searches", json={**body, "trials": 3, "epochs": 1, "finalist_seeds": 2,
                                       "batch_size": 64, "pruner": "none"})
    assert r.status_code == 201, r.text
    search_id = r.json()["id"]
    spec = client.get(f"/searches/{search_id}").json()["spec"]
    assert spec["architecture"] == body["architecture"] and spec["inputs"]["modality"] == modality
    _run(settings, search_id)
    board = client.get(f"/searches/{search_id}/leaderboard").json()
    rows = {row["family"]: row for row in board["rows"]}
    assert set(rows) == set(body["families"])
    assert all(row["n_params"] and row["flops"] for row in rows.values())
    gated = next(f for f in body["families"] if f in GATED)
    assert abs(rows[gated]["n_params"] - rows["relu"]["n_params"]) / rows["relu"]["n_params"] < 0.15
    trials = client.get(f"/searches/{search_id}/trials", params={"limit": 100}).json()["data"]
    gated_trial = next(t for t in trials if t["family"] == gated and t["state"] == "complete")
    acts = client.get(f"/trials/{gated_trial['id']}/activations").json()
    assert acts["curves"], "gated units record their gate response"
    assert len(acts["curves"][0]["y"]) == 1  # one gate curve per layer
    # export: a program that runs with torch and numpy alone
    r = client.get(f"/searches/{search_id}/export")
    assert r.status_code == 200, r.text
    archive = zipfile.ZipFile(io.BytesIO(r.content))
    archive.extractall(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["architecture"]["kind"] == body["architecture"].split(":")[0]
    assert meta["modality"] == modality
    if modality == "tokens":
        rows_in: list[Any] = [[1, 2], [5, 9], [22, 0]]
        assert meta["input"]["dtype"] == "int64" and meta["vocab_size"] == 23
    else:
        rows_in = (np.random.default_rng(0).random((3, 64)) * 16).tolist()
    readme = (tmp_path / "README.txt").read_text()
    snippet = [line[4:] for line in readme.split("Load and predict", 1)[1].splitlines()
               if line.startswith("    ")]
    scope: dict[str, Any] = {"rows": rows_in}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec("\n".join(snippet), scope)  # noqa: S102 - our own README's snippet
    finally:
        os.chdir(cwd)
    assert len(scope["labels"]) == 3 and set(scope["labels"]) <= set(meta["class_names"])
    program = torch.export.load(str(tmp_path / "model.pt2")).module()
    assert program(torch.zeros(5, meta["n_inputs"], dtype=torch.long if modality == "tokens"
                               else torch.float32)).shape == (5, len(meta["class_names"]))
    # distillation: gated winners are refused with the reason, pointwise ones distil
    distilled = client.get(f"/searches/{search_id}/export", params={"activations": "distilled"})
    if meta["family"] in GATED:
        assert_error(distilled, 409, "gated unit", "gate")
    else:
        assert distilled.status_code in (200, 409), distilled.text
