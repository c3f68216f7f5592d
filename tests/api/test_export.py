"""GET /searches/{id}/export, search.export and models.export: the deployable best model."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
import torch

from actsearch.settings import Settings
from models.engine import build_network, predict
from models.export import export_program, load_program, single_candidate, state_dict_bytes
from models.spec import ArchSpec
from search.datasets import apply_scaler, load_builtin
from search.export import EXPORT_FORMAT
from store import repo
from store.db import make_engine, session_factory
from tests.api.conftest import TINY_SPEC, RecordingClient, assert_error


@pytest.fixture(scope="module")
def exported(session_client: RecordingClient, finished_search_id: int) -> zipfile.ZipFile:
    r = session_client.get(f"/searches/{finished_search_id}/export")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert f"actsearch-search-{finished_search_id}.zip" in r.headers["content-disposition"]
    return zipfile.ZipFile(io.BytesIO(r.content))


def test_zip_holds_program_weights_meta_readme(exported: zipfile.ZipFile,
                                               session_client: RecordingClient,
                                               finished_search_id: int) -> None:
    assert set(exported.namelist()) == {"model.pt2", "state_dict.pt", "meta.json", "README.txt"}
    meta = json.loads(exported.read("meta.json"))
    board = session_client.get(f"/searches/{finished_search_id}/leaderboard").json()
    assert meta["format"] == EXPORT_FORMAT and meta["task"] == "classification"
    assert meta["family"] == board["winner"] and meta["leaderboard"]["rank"] == 1
    assert meta["class_names"] == ["setosa", "versicolor", "virginica"]
    assert len(meta["scaler"]["mean"]) == len(meta["scaler"]["std"]) == meta["n_inputs"] == 4
    assert meta["architecture"]["hidden"] == [8] and meta["metric"] == "accuracy"
    winner_runs = [t for t in session_client.get(
        f"/searches/{finished_search_id}/trials",
        params={"phase": "finalist", "family": meta["family"]}).json()["data"]]
    assert meta["validation_metric"] == max(t["value"] for t in winner_runs)  # the best seed
    readme = exported.read("README.txt").decode()
    assert "torch.export.load" in readme and "weights_only=True" in readme


def _rows(meta: dict[str, Any]) -> np.ndarray:
    return load_builtin("iris").X[::7]  # raw feature rows, as a user has them


def test_exported_program_reproduces_engine_predict(exported: zipfile.ZipFile,
                                                    settings: Settings) -> None:
    meta = json.loads(exported.read("meta.json"))
    program = torch.export.load(io.BytesIO(exported.read("model.pt2"))).module()
    x = apply_scaler(_rows(meta), meta["scaler"])  # (N, 4) float32
    logits = program(torch.from_numpy(x)).detach().numpy()  # (N, 3)

    engine = make_engine(settings.resolved_database_url)
    with session_factory(engine)() as session:
        state, _, _ = repo.load_weights(session, trial_id=meta["trial_id"])
    engine.dispose()
    expected = predict(ArchSpec.from_dict(meta["architecture"]), meta["family"],
                       meta["family_params"], state, x, 3, "classification")  # (N, 3) probs
    probs = torch.from_numpy(logits).softmax(-1).numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)

    # the state dict loads without unpickling classes and matches the stored weights
    loaded = torch.load(io.BytesIO(exported.read("state_dict.pt")), weights_only=True)
    assert set(loaded) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(loaded[key].numpy(), value)


def test_readme_snippet_runs_with_torch_and_numpy(exported: zipfile.ZipFile, tmp_path) -> None:
    exported.extractall(tmp_path)
    readme = (tmp_path / "README.txt").read_text()
    tail = readme.split("Load and predict", 1)[1]
    snippet = [line[4:] for line in tail.splitlines() if line.startswith("    ")]
    assert len(snippet) == 6
    meta = json.loads((tmp_path / "meta.json").read_text())
    scope: dict[str, Any] = {"rows": _rows(meta).tolist()}
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec("\n".join(snippet), scope)  # noqa: S102 - our own README's snippet
    finally:
        os.chdir(cwd)
    assert set(scope["labels"]) <= {"setosa", "versicolor", "virginica"}
    assert len(scope["labels"]) == len(scope["rows"])


def test_export_before_any_finalist_is_409(client: RecordingClient) -> None:
    pending = client.post("/searches", json={**TINY_SPEC, "name": "not yet"}).json()
    assert_error(client.get(f"/searches/{pending['id']}/export"), 409, "no finished finalist")
    client.post(f"/searches/{pending['id']}/cancel")


@pytest.mark.parametrize(("family", "params"), [("relu", {}), ("prelu", {"sharing": "unit"}),
                                                ("rational", {})])
def test_models_export_regression_and_dynamic_batch(family: str, params: dict) -> None:
    arch = ArchSpec.parse("mlp:6,5")
    net = build_network(arch, family, [params], 3, 1, seeds=[7])
    state = net.candidate_state(0)
    module = single_candidate(arch, family, params, state, 3, 1, "regression")
    program = load_program(export_program(module, 3))
    x = np.random.default_rng(0).standard_normal((9, 3)).astype(np.float32)
    out = program(torch.from_numpy(x)).detach().numpy()
    assert out.shape == (9,)  # regression: (B,)
    np.testing.assert_allclose(out, predict(arch, family, params, state, x, 1, "regression"),
                               rtol=1e-5, atol=1e-6)
    assert program(torch.from_numpy(x[:1])).shape == (1,)  # any batch size
    loaded = torch.load(io.BytesIO(state_dict_bytes(state)), weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in loaded.values())
