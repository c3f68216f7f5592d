"""GET /searches/{id}/export, search.export and models.export: the deployable best model."""

from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.settings import Settings
from models.engine import build_network, predict
from models.export import (
    SingleCandidate,
    export_program,
    load_program,
    single_candidate,
    state_dict_bytes,
)
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


# --------------------------------------------------------------------------- distilled export


def _readme_snippet() -> str:
    """The python block of README.md's "Deploying the best model" section, verbatim."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Deploying the best model", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


_NO_ACTSEARCH = """\
import importlib.abc, os, runpy, sys
BLOCKED = {"actsearch", "search", "store", "api", "models", "worker"}
class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed here")
sys.meta_path.insert(0, _Blocked())
sys.path = [p for p in sys.path if p and os.path.realpath(p) != %(repo)r]  # not the checkout
try:
    import actsearch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("actsearch is importable: the check would prove nothing")
runpy.run_path("predict.py", run_name="__main__")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not loaded, loaded
"""


def _run_readme_snippet(archive: zipfile.ZipFile, folder: Path) -> list[str]:
    """Unpack the zip and run the README snippet in a Python that cannot import actsearch."""
    folder.mkdir()
    archive.extractall(folder)
    (folder / "predict.py").write_text(_readme_snippet())
    repo_root = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ACTSEARCH"))}
    proc = subprocess.run([sys.executable, "-c", _NO_ACTSEARCH % {"repo": repo_root}],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def distilled_zip(session_client: RecordingClient, finished_search_id: int) -> zipfile.ZipFile:
    r = session_client.get(f"/searches/{finished_search_id}/export",
                           params={"activations": "distilled"})
    assert r.status_code == 200, r.text
    return zipfile.ZipFile(io.BytesIO(r.content))


def test_distilled_export_meta_and_same_classes(exported: zipfile.ZipFile,
                                                distilled_zip: zipfile.ZipFile) -> None:
    meta = json.loads(distilled_zip.read("meta.json"))
    learned_meta = json.loads(exported.read("meta.json"))
    assert meta["activations"] == "distilled" and learned_meta["activations"] == "learned"
    assert learned_meta["distillation"] is None and meta["trial_id"] == learned_meta["trial_id"]
    d = meta["distillation"]
    assert d["validation_before"] == pytest.approx(meta["validation_metric"])
    assert d["validation_change"] == pytest.approx(d["validation_after"] - d["validation_before"])
    assert d["test_before"] == pytest.approx(meta["test_metric"])
    layer = d["layers"][0]
    assert layer["knots"] >= 2 and len(np.asarray(layer["knots_x"]).reshape(-1)) >= 2
    assert "activations: distilled" in distilled_zip.read("README.txt").decode()

    x = torch.from_numpy(apply_scaler(load_builtin("iris").X, meta["scaler"]))
    learned = torch.export.load(io.BytesIO(exported.read("model.pt2"))).module()
    distilled = torch.export.load(io.BytesIO(distilled_zip.read("model.pt2"))).module()
    with torch.no_grad():
        a, b = learned(x), distilled(x)
    top2 = a.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.05 * float(a.abs().max())  # not on a class boundary
    assert int(clear.sum()) > len(x) // 2
    assert torch.equal(a.argmax(1)[clear], b.argmax(1)[clear])
    names = {str(n) for n in distilled.graph.nodes}
    assert names  # a real graph


def test_distilled_program_of_a_constructed_network() -> None:
    """Shifted-ReLU net: the distilled program is exact, so every class agrees."""
    from search.analysis.distillation import distil_network

    arch = ArchSpec.parse("mlp:16,16")
    params = {"d_init": -0.3, "e_init": 0.1}
    net = build_network(arch, "frelu", [params], 4, 3, seeds=[5])
    state = net.candidate_state(0)
    module = single_candidate(arch, "frelu", params, state, 4, 3, "classification")
    X = np.random.default_rng(1).standard_normal((300, 4)).astype(np.float32)
    distilled, layers = distil_network(module.net, X, rel_error=1e-4)
    assert [x["knots"] for x in layers] == [3, 3]
    program = load_program(export_program(SingleCandidate(distilled, "classification"), 4))
    learned = load_program(export_program(module, 4))
    x = torch.from_numpy(X)
    with torch.no_grad():
        torch.testing.assert_close(program(x), learned(x), rtol=1e-5, atol=1e-5)
        assert torch.equal(program(x).argmax(1), learned(x).argmax(1))
    exported = torch.export.export(SingleCandidate(distilled, "classification").eval(), (x[:4],))
    buffers = set(exported.graph_signature.buffers)
    assert {"net.acts.0.slope", "net.acts.1.inner"} <= buffers  # PiecewiseLinear's knots
    assert not any(name.endswith((".d", ".e")) for name in exported.graph_signature.parameters)


def test_readme_snippet_runs_without_actsearch(exported: zipfile.ZipFile,
                                               distilled_zip: zipfile.ZipFile,
                                               tmp_path: Path) -> None:
    classes = {"setosa", "versicolor", "virginica"}
    learned = _run_readme_snippet(exported, tmp_path / "learned")
    distilled = _run_readme_snippet(distilled_zip, tmp_path / "distilled")
    assert len(learned) == len(distilled) == 2 and set(learned) | set(distilled) <= classes


def test_export_activations_must_be_learned_or_distilled(client: RecordingClient,
                                                         finished_search_id: int) -> None:
    r = client.get(f"/searches/{finished_search_id}/export", params={"activations": "spline"})
    assert_error(r, 422, "activations", "learned", "distilled")


def test_finalist_network_analysis_is_served(client: RecordingClient,
                                             finished_search_id: int) -> None:
    finalists = client.get(f"/searches/{finished_search_id}/trials",
                           params={"phase": "finalist", "family": "prelu"}).json()["data"]
    assert finalists
    body = client.get(f"/trials/{finalists[0]['id']}/activations").json()
    net = body["network"]
    assert net is not None and all(f["kind"] != "network" for f in body["fits"])
    assert net["before"]["validation"] == pytest.approx(finalists[0]["value"])
    d = net["distilled"]
    assert d["speedup"] > 0 and d["validation_change"] == pytest.approx(
        d["validation_after"] - d["validation_before"])
    (layer,) = net["merge"]["layers"]  # mlp:8: one hidden layer, never mergeable
    assert layer["mergeable"] is False and layer["reason"]
    winner = client.get(f"/searches/{finished_search_id}").json()["best"]["family"]
    assert (net["before"]["test"] is not None) == (winner == "prelu")  # test: final choice only
    relu = client.get(f"/searches/{finished_search_id}/trials",
                      params={"phase": "finalist", "family": "relu"}).json()["data"]
    assert client.get(f"/trials/{relu[0]['id']}/activations").json()["network"] is None


def test_finalist_analysis_runs_once(settings: Settings, finished_search_id: int) -> None:
    from search.analysis.distillation import analyse_finalists
    from search.service import prepare_data
    from search.spec import SearchSpec

    engine = make_engine(settings.resolved_database_url)
    try:
        with session_factory(engine).begin() as session:
            search = repo.get_search(session, search_id=finished_search_id)
            spec = SearchSpec.model_validate(search.spec)
            data = prepare_data(session, dataset_id=search.dataset_id, spec=spec)
            again = analyse_finalists(session, search_id=finished_search_id,
                                      arch=spec.arch_spec(), data=data.splits, n_outputs=3)
    finally:
        engine.dispose()
    assert again == 0  # every trainable finalist was analysed when the search finished


def _cli(args: list[str], home: Path, monkeypatch: pytest.MonkeyPatch,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from actsearch import cli
    from core.settings import get_settings

    monkeypatch.setenv("ACTSEARCH_HOME", str(home))
    monkeypatch.delenv("ACTSEARCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    monkeypatch.setattr(sys, "argv", ["actsearch", *args])
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        get_settings.cache_clear()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_cli_export_distilled_and_curves(api_home: Path, finished_search_id: int,
                                         session_client: RecordingClient, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model.zip"
    code, out, err = _cli(["export", str(finished_search_id), "--activations", "distilled",
                           "-o", str(target)], api_home, monkeypatch, capsys)
    assert code == 0, err
    meta = json.loads(zipfile.ZipFile(target).read("meta.json"))
    assert meta["activations"] == "distilled" and "distilled" in out and str(target) in out

    code, out, err = _cli(["export", str(finished_search_id), "--activations", "spline"],
                          api_home, monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and "'learned' or 'distilled'" in err

    prelu = session_client.get(f"/searches/{finished_search_id}/trials",
                               params={"phase": "finalist", "family": "prelu"}).json()["data"]
    code, out, err = _cli(["curves", str(prelu[0]["id"]), "--out", str(tmp_path / "c.png")],
                          api_home, monkeypatch, capsys)
    assert code == 0, err
    assert "whole network" in out and "distilled (rel. error" in out and "speed-up x" in out
