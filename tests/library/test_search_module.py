"""``actsearch.search_module``: the user's own module, trained through the search protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import actsearch
from core.errors import InvalidDataset, InvalidInput
from models.engine import TensorData
from models.spec import Candidate, TrainConfig
from models.user_training import ModuleData, train_module_population

TINY: dict[str, Any] = {"trials": 4, "epochs": 2, "finalist_seeds": 2, "progress": False,
                        "batch_size": 64}


def blobs(n: int = 240, d: int = 6, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    X = rng.normal(size=(n, d)) + 2.0 * np.eye(classes, d)[y]
    return X.astype(np.float32), y


def two_slot_build(act: Any) -> nn.Module:
    """Two act() slots of different widths: one declared, one inferred."""
    return nn.Sequential(nn.Linear(6, 16), act(16), nn.Linear(16, 8), act(), nn.Linear(8, 3))


@pytest.fixture(scope="module")
def classification(home: Path) -> actsearch.SearchResult:
    return actsearch.search_module(two_slot_build, blobs(), families=["relu", "gelu"], **TINY)


def test_classification_two_slots(classification: actsearch.SearchResult) -> None:
    r = classification
    assert r.state == "complete", r.error
    assert r.spec.module_arch().slots == [16, 8]
    board = r.leaderboard
    assert set(board["family"]) == {"relu", "gelu"}
    assert board["baseline"].sum() == 1
    assert board.iloc[0]["test accuracy"] is not None
    trials = r.trials
    assert set(trials["phase"]) == {"search", "finalist"}
    assert (trials["state"] == "complete").all()
    assert trials["device"].str.contains("fused x2").all()  # one family per population, same shape
    curves = r.curves()
    assert {c["layer"] for c in curves} == {0, 1}  # one curve per act() slot
    assert {c["epoch"] for c in curves} >= {0, 2}
    X, y = blobs(seed=1)
    pred = r.predict(X)
    assert pred.shape == (len(X),) and (pred.astype(int) == y).mean() > 0.5
    model = r.best_model()
    assert isinstance(model, nn.Module) and not model.training
    fig = r.plot_curves()
    assert len(fig.axes) == 2


def test_load_and_export(classification: actsearch.SearchResult, tmp_path: Path) -> None:
    again = actsearch.load(classification.search_id, build=two_slot_build)
    assert again.leaderboard.equals(classification.leaderboard)
    with pytest.raises(InvalidInput, match="pass its build"):
        actsearch.load(classification.search_id).best_model()
    import zipfile
    path = again.export(tmp_path / "model.zip")
    names = set(zipfile.ZipFile(path).namelist())
    assert {"state_dict.pt", "meta.json"} <= names
    with pytest.raises(InvalidInput, match="learned activations only"):
        again.export(tmp_path / "d.zip", activations="distilled")


def test_regression(home: Path) -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (np.sin(X[:, 0]) + X[:, 1] ** 2 + 0.05 * rng.normal(size=200)).astype(np.float32) * 10 + 5

    def build(act: Any) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 16), act(), nn.Linear(16, 1))

    r = actsearch.search_module(build, (X, y), families=["relu", "silu"], task="regression",
                                **{**TINY, "epochs": 4})
    assert r.state == "complete", r.error
    assert "val r2" in r.leaderboard.columns
    pred = r.predict(X[:50])
    assert pred.shape == (50,)
    assert abs(float(pred.mean()) - float(y[:50].mean())) < 5  # in the label's units


class ReluNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU())
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_replace_existing_model(home: Path) -> None:
    model = ReluNet()
    r = actsearch.search_module(model, blobs(), families=["relu", "elu"], replace=(nn.ReLU,),
                                **TINY)
    assert r.state == "complete", r.error
    assert r.spec.module_arch().name == "ReluNet"
    assert r.spec.module_arch().slots == [12, 12]
    assert isinstance(model.body[1], nn.ReLU)  # the user's model is untouched (deep copies)


class FunctionalNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


def test_bad_input(home: Path) -> None:
    with pytest.raises(InvalidInput, match=r"holds no ReLU, GELU module.*F\.relu.*build\(act\)"):
        actsearch.search_module(FunctionalNet(), blobs(), replace=(nn.ReLU, nn.GELU), **TINY)
    with pytest.raises(InvalidInput, match="without calling act"):
        actsearch.search_module(lambda act: nn.Sequential(nn.Linear(6, 3)), blobs(), **TINY)
    X, y = blobs()
    with pytest.raises(InvalidDataset, match="X has 240 rows but y has 239 labels"):
        actsearch.search_module(two_slot_build, (X, y[:-1]), **TINY)
    with pytest.raises(InvalidDataset, match="X has 240 rows but y has 239 labels"):
        actsearch.search((X, y[:-1]), **TINY)
    with pytest.raises(InvalidInput, match="outputs 3 values per row, but the data has 5"):
        actsearch.search_module(two_slot_build, blobs(classes=5), **TINY)
    with pytest.raises(InvalidInput, match=r"act\(4\) \(slot 0\) receives tensors with 16"):
        actsearch.search_module(lambda act: nn.Sequential(nn.Linear(6, 16), act(4),
                                                          nn.Linear(16, 3)), blobs(), **TINY)
    with pytest.raises(InvalidInput, match="maxout.*cannot stand in"):
        actsearch.search_module(two_slot_build, blobs(), families=["maxout"], **TINY)
    with pytest.raises(InvalidInput, match="invalid search spec: epochs"):
        actsearch.search_module(two_slot_build, blobs(), **{**TINY, "epochs": 0})


def test_fused_matches_one_by_one() -> None:
    """Same seeds, same batches: the fused (vmap) path computes what the plain loop does."""
    X, y = blobs()
    data = ModuleData(TensorData(X[:160], y[:160], X[160:], y[160:], "classification", 3),
                      None, [16, 8])
    cands = [Candidate(seed=s, lr=3e-3, weight_decay=1e-4) for s in range(3)]
    cfg = TrainConfig(epochs=2, batch_size=32, record_epochs=0)
    fused = train_module_population(two_slot_build, "gelu", cands, data, cfg, fused=True)
    plain = train_module_population(two_slot_build, "gelu", cands, data, cfg, fused=False)
    assert "fused x3" in fused.device and "one by one x3" in plain.device
    for a, b in zip(fused.candidates, plain.candidates, strict=True):
        assert a.val_metric == pytest.approx(b.val_metric, abs=0.02)
        assert a.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], rel=1e-3)


def test_pruned_candidates_leave_the_fused_group() -> None:
    X, y = blobs()
    data = ModuleData(TensorData(X[:160], y[:160], X[160:], y[160:], "classification", 3),
                      None, [16, 8])
    cands = [Candidate(seed=s, lr=3e-3) for s in range(3)]
    cfg = TrainConfig(epochs=3, batch_size=32, record_epochs=2)
    result = train_module_population(two_slot_build, "prelu", cands, data, cfg,
                                     on_epoch=lambda r: [1] if r.epoch == 1 else [])
    states = [c.status for c in result.candidates]
    assert states == ["complete", "pruned", "complete"]
    assert len(result.candidates[1].history) == 1 and len(result.candidates[0].history) == 3
    assert result.candidates[1].state_dict is not None
    assert result.candidate_epochs == 3 + 2 + 2


def test_interrupted_module_search_resumes(home: Path) -> None:
    """Ctrl-C mid-search leaves it interrupted; resume(build=) trains exactly the rest."""
    from actsearch.library import _db
    from core.settings import get_settings
    from search.coordinator.module import ModuleTrainer, run_module_search
    from search.datasets.memory import from_arrays
    from search.service import create_search, register_dataset
    from search.spec import parse_spec

    url, sessions = _db()
    X, y = blobs(seed=5)
    with sessions.begin() as session:
        ds = register_dataset(session, dataset=from_arrays(X, y, name="resume-me"))
        spec = parse_spec({"dataset": ds.name, "dataset_version": ds.version, "trials": 4,
                           "epochs": 2, "finalist_seeds": 2, "families": ["relu", "gelu"],
                           "population_size": 1,
                           "architecture": {"kind": "module", "name": "Sequential",
                                            "slots": [16, 8]}})
        search_id = create_search(session=session, spec=spec, storage_url=url,
                                  run_here=True).id
    seen = []

    def stop_after_two(p: Any) -> None:
        seen.append(p.done)
        if p.done >= 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_module_search(sessions=sessions, storage_url=url, search_id=search_id,
                          trainer=ModuleTrainer(two_slot_build, [16, 8]),
                          home=get_settings().home, progress=stop_after_two)
    assert actsearch.load(search_id).state == "interrupted"
    with pytest.raises(InvalidInput, match="pass build= to resume"):
        actsearch.resume(search_id, progress=False)
    # `actsearch serve` and `actsearch resume` cannot train it: they leave it resumable here.
    from search.coordinator import EmbeddedCoordinator
    from search.coordinator.runner import orphaned_searches

    assert search_id not in orphaned_searches(sessions, get_settings().home)
    with pytest.raises(InvalidInput, match=rf"actsearch.resume\({search_id}, build=build\)"):
        EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id)
    assert actsearch.load(search_id).state == "interrupted"
    r = actsearch.resume(search_id, build=two_slot_build, progress=False)
    assert r.state == "complete", r.error
    trials = r.trials
    assert (trials["phase"] == "search").sum() == 4  # exactly the budget, none twice
    assert sorted(trials[trials["phase"] == "search"]["trial_number"]) == [0, 1, 2, 3]


def _small_data(slots: list[int], task: str = "classification") -> ModuleData:
    X, y = blobs(n=161)  # 129 training rows: a last batch of one row is dropped
    if task == "regression":
        y = X[:, 0].copy()
    return ModuleData(TensorData(X[:129], y[:129], X[129:], y[129:], task,
                                 3 if task == "classification" else 1), None, slots)


def test_batch_norm_and_dropout_train_fused() -> None:
    def build(act: Any) -> nn.Module:
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), act(), nn.Dropout(0.1),
                             nn.Linear(16, 3))

    cands = [Candidate(seed=s, lr=3e-3) for s in range(2)]
    r = train_module_population(build, "elu", cands, _small_data([16]),
                                TrainConfig(epochs=1, batch_size=32, record_epochs=2))
    assert "fused x2" in r.device
    assert [c.status for c in r.candidates] == ["complete", "complete"]


def test_forward_that_cannot_vmap_trains_one_by_one() -> None:
    class Branchy(nn.Module):
        def __init__(self, act: Any) -> None:
            super().__init__()
            self.a, self.act, self.b = nn.Linear(6, 8), act(), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.a(x))
            return self.b(h) if h.sum() > 0 else self.b(-h)  # data-dependent control flow

    cands = [Candidate(seed=s, lr=3e-3) for s in range(2)]
    r = train_module_population(Branchy, "relu", cands, _small_data([8]),
                                TrainConfig(epochs=1, batch_size=32, record_epochs=2))
    assert "one by one x2 (vmap failed" in r.device
    assert all(c.status == "complete" and c.curves for c in r.candidates)


def test_regression_module_returning_one_value_per_row() -> None:
    def build(act: Any) -> nn.Module:
        return nn.Sequential(nn.Linear(6, 8), act(), nn.Linear(8, 1), nn.Flatten(0))  # (B,)

    cands = [Candidate(seed=s, lr=1e-2) for s in range(2)]
    r = train_module_population(build, "silu", cands, _small_data([8], "regression"),
                                TrainConfig(epochs=3, batch_size=32, record_epochs=0))
    assert "fused x2" in r.device
    assert all(c.status == "complete" and c.val_metric is not None for c in r.candidates)


def test_module_architecture_marker_is_validated() -> None:
    from search.spec import parse_spec

    ok = parse_spec({"dataset": "iris", "trials": 6,
                     "architecture": {"kind": "module", "name": "Net", "slots": [16, 8]}})
    assert ok.is_module and ok.activation_widths() == [16, 8]
    assert ok.population_size == 1  # trials per family (6 over 8 families), at most 8
    with pytest.raises(InvalidInput, match="slot widths must be positive"):
        parse_spec({"dataset": "iris",
                    "architecture": {"kind": "module", "name": "Net", "slots": [0]}})
    with pytest.raises(InvalidInput, match="Extra inputs are not permitted"):
        parse_spec({"dataset": "iris", "architecture": {"kind": "module", "name": "Net",
                                                        "slots": [4], "code": "import os"}})
    with pytest.raises(InvalidInput, match="groupsort needs a group that divides every layer"):
        parse_spec({"dataset": "iris", "families": ["groupsort"],
                    "architecture": {"kind": "module", "name": "Net", "slots": [7]}})
    with pytest.raises(InvalidInput, match="never runs user code"):
        ok.arch_spec()
