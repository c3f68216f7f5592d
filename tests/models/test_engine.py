"""The population engine: equivalence with separate runs, pruning, failures, recording."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import InvalidDataset
from models.activations import REGISTRY
from models.engine import (
    EpochReport,
    PopulationResult,
    TensorData,
    evaluate,
    predict,
    record_schedule,
    train_population,
)
from models.spec import ArchSpec, Candidate, TrainConfig
from models.stats import QUANTILES

MLP = ArchSpec.parse("mlp:12,12")
CNN = ArchSpec.parse("cnn:3,4/6", input_shape=(2, 6, 6))


def make_data(task: str = "classification", n: int = 160, d: int = 8, seed: int = 0) -> TensorData:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 64, d)).astype(np.float32)
    if task == "classification":
        y: np.ndarray = (x @ rng.standard_normal((d, 3))).argmax(1)
        n_out = 3
    else:
        y = (2 * x[:, 0] + np.sin(3 * x[:, 1])).astype(np.float32)
        n_out = 1
    return TensorData(x[:n], y[:n], x[n:], y[n:], task, n_out)  # type: ignore[arg-type]


DATA = make_data()
CONFIG = TrainConfig(epochs=3, batch_size=32, record_epochs=0)


def candidates(k: int) -> list[Candidate]:
    lrs = [3e-3, 1e-2, 5e-3, 2e-2, 7e-3]
    return [Candidate(seed=10 + i, lr=lrs[i % 5], weight_decay=1e-3 * i) for i in range(k)]


def assert_same_candidate(a: Any, b: Any, atol: float = 1e-4) -> None:
    assert a.status == b.status
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history, strict=True):
        for key in ("train_loss", "val_loss", "val_metric"):
            assert ha[key] == pytest.approx(hb[key], abs=atol), key
    assert a.state_dict.keys() == b.state_dict.keys()
    for name in a.state_dict:
        np.testing.assert_allclose(a.state_dict[name], b.state_dict[name], atol=atol, err_msg=name)


def without_timing(res: PopulationResult) -> list[list[dict[str, Any]]]:
    return [[{k: v for k, v in h.items() if k != "elapsed_s"} for h in c.history] for c in res.candidates]


# ----- a population is K separate trials -------------------------------------------------
@pytest.mark.parametrize("family", ["relu", "prelu", "maxout", "crelu", "selu"])
def test_population_equals_separate_runs(family: str) -> None:
    assert family in REGISTRY, family
    cfg = TrainConfig(epochs=3, batch_size=32, record_epochs=0, optimizer="adamw")
    cands = candidates(3)
    pop = train_population(MLP, family, cands, DATA, cfg)
    assert pop.candidate_epochs == 9
    for i, c in enumerate(cands):
        one = train_population(MLP, family, [c], DATA, cfg)
        assert_same_candidate(pop.candidates[i], one.candidates[0])


@pytest.mark.parametrize(
    ("arch", "family", "optimizer", "data"),
    [
        (ArchSpec.parse("mlp:12,12", norm="batch", residual=True), "prelu", "sgd", DATA),
        (ArchSpec.parse("mlp:12,12", norm="layer"), "relu", "adam", make_data("regression")),
        (ArchSpec.parse("cnn:3,3/6", input_shape=(2, 6, 6), norm="batch", residual=True), "prelu",
         "adam", make_data(d=72)),
    ],
    ids=["batchnorm-residual-sgd", "layernorm-regression", "cnn"],
)
def test_population_equals_separate_runs_variants(arch: ArchSpec, family: str, optimizer: str,
                                                   data: TensorData) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, record_epochs=0, optimizer=optimizer)  # type: ignore[arg-type]
    cands = candidates(3)
    pop = train_population(arch, family, cands, data, cfg)
    for i in (0, 2):
        one = train_population(arch, family, [cands[i]], data, cfg)
        assert_same_candidate(pop.candidates[i], one.candidates[0])


def test_layer_scope_population() -> None:
    arch = ArchSpec.parse("mlp:12,12", activation_scope="layer")
    cands = [Candidate(seed=i, lr=1e-2, act_params=[{}, {"a_init": 0.1 * i}]) for i in range(2)]
    res = train_population(arch, ["relu", "prelu"], cands, DATA, CONFIG)
    assert [c.status for c in res.candidates] == ["complete", "complete"]
    assert "acts.1.a" in res.candidates[0].state_dict  # type: ignore[operator]


# ----- pruning, compaction, determinism ---------------------------------------------------
def test_pruning_compacts_without_changing_survivors() -> None:
    cands = candidates(4)
    base = train_population(MLP, "prelu", cands, DATA, CONFIG)
    reports: list[EpochReport] = []

    def on_epoch(report: EpochReport) -> list[int]:
        reports.append(report)
        return {1: [1], 2: [3, 99]}.get(report.epoch, [])

    res = train_population(MLP, "prelu", cands, DATA, CONFIG, on_epoch=on_epoch)
    assert [r.candidates for r in reports] == [[0, 1, 2, 3], [0, 2, 3], [0, 2]]
    assert all(len(r.val_metric) == len(r.candidates) for r in reports)
    assert [c.status for c in res.candidates] == ["complete", "pruned", "complete", "pruned"]
    assert [len(c.history) for c in res.candidates] == [3, 1, 3, 2]
    assert res.candidate_epochs == 4 + 3 + 2
    for i in (0, 2):
        assert_same_candidate(res.candidates[i], base.candidates[i], atol=1e-5)
    pruned = res.candidates[1]
    assert pruned.state_dict is not None
    assert pruned.history[0]["val_loss"] == pytest.approx(base.candidates[1].history[0]["val_loss"], abs=1e-5)
    assert pruned.val_metric == pruned.history[-1]["val_metric"]


def test_deterministic_for_the_same_seeds() -> None:
    arch = ArchSpec.parse("mlp:12,12", dropout=0.2, norm="batch")
    a = train_population(arch, "prelu", candidates(3), DATA, CONFIG)
    b = train_population(arch, "prelu", candidates(3), DATA, CONFIG)
    assert without_timing(a) == without_timing(b)
    for ca, cb in zip(a.candidates, b.candidates, strict=True):
        assert ca.state_dict is not None and cb.state_dict is not None
        for name in ca.state_dict:
            np.testing.assert_array_equal(ca.state_dict[name], cb.state_dict[name])
    other = train_population(arch, "prelu", candidates(3), DATA, TrainConfig(
        epochs=3, batch_size=32, record_epochs=0, data_seed=1))
    assert without_timing(other) != without_timing(a)


def test_deadline_stops_everyone() -> None:
    called: list[int] = []
    cfg = TrainConfig(epochs=50, batch_size=32, record_epochs=2, deadline_s=1e-9)
    res = train_population(MLP, "relu", candidates(3), DATA, cfg,
                           on_epoch=lambda r: called.append(r.epoch) or [])
    assert called == []
    assert res.candidate_epochs == 3
    for c in res.candidates:
        assert c.status == "deadline"
        assert len(c.history) == 1 and c.history[0]["partial"] is True
        assert c.state_dict is not None and c.val_metric is not None
        assert sorted({s["epoch"] for s in c.preact_stats}) == [0, 1]


def test_deadline_after_a_complete_epoch() -> None:
    def slow(report: EpochReport) -> list[int]:
        time.sleep(0.6)  # the deadline passes while the caller handles epoch 1
        return []

    cfg = TrainConfig(epochs=50, batch_size=32, record_epochs=0, deadline_s=0.5)
    res = train_population(MLP, "relu", candidates(2), DATA, cfg, on_epoch=slow)
    for c in res.candidates:
        assert c.status == "deadline" and len(c.history) == 1 and "partial" not in c.history[0]


def test_diverging_candidate_fails_alone() -> None:
    cfg = TrainConfig(epochs=3, batch_size=32, record_epochs=0, optimizer="sgd", schedule="constant")
    data = make_data("regression")
    good = [Candidate(seed=1, lr=1e-2), Candidate(seed=3, lr=2e-2)]
    bad = Candidate(seed=2, lr=1e6)
    res = train_population(MLP, "relu", [good[0], bad, good[1]], data, cfg)
    failed = res.candidates[1]
    assert failed.status == "failed"
    assert failed.state_dict is None and failed.error is not None and "diverged" in failed.error
    alone = train_population(MLP, "relu", good, data, cfg)
    for i, j in ((0, 0), (2, 1)):
        assert_same_candidate(res.candidates[i], alone.candidates[j], atol=1e-5)


# ----- recording --------------------------------------------------------------------------
def test_record_schedule() -> None:
    assert record_schedule(20, 4) == [0, 7, 13, 20]
    assert record_schedule(3, 4) == [0, 1, 2, 3]
    assert record_schedule(2, 4) == [0, 1, 2]
    assert record_schedule(5, 2) == [0, 5]
    assert record_schedule(5, 1) == [5]
    assert record_schedule(5, 0) == []


def test_curves_and_stats_recorded_at_expected_epochs() -> None:
    cfg = TrainConfig(epochs=5, batch_size=32, record_epochs=4, curve_points=33, hist_bins=16,
                      stats_sample=40)
    cands = [Candidate(seed=i, lr=1e-2, act_params={"sharing": "unit"}) for i in range(3)]
    res = train_population(MLP, "prelu", cands, DATA, cfg, on_epoch=lambda r: [1] if r.epoch == 1 else [])
    expected = {0: [0, 2, 3, 5], 1: [0, 1], 2: [0, 2, 3, 5]}
    for i, c in enumerate(res.candidates):
        assert sorted({(s["layer"], s["epoch"]) for s in c.preact_stats}) == sorted(
            (layer, e) for layer in (0, 1) for e in expected[i])
        assert sorted((cv["layer"], cv["epoch"]) for cv in c.curves) == sorted(
            (layer, e) for layer in (0, 1) for e in expected[i])
        for s in c.preact_stats:
            assert s["hist"].shape == (16,) and s["hist"].dtype == np.float32
            assert s["hist"].sum() == pytest.approx(1.0, abs=1e-4)
            assert s["edges"].shape == (17,) and s["edges"].dtype == np.float32
            assert list(s["quantiles"]) == [f"{q:g}" for q in QUANTILES]
            qs = list(s["quantiles"].values())
            assert s["min"] <= qs[0] <= qs[-1] <= s["max"] and qs == sorted(qs)
            assert 0.0 <= s["dead_fraction"] <= 1.0 and s["std"] >= 0
        for cv in c.curves:
            assert cv["x"].shape == (33,) and cv["x"].dtype == np.float32
            assert cv["y"].shape == (12, 33) and cv["y"].dtype == np.float32  # per-unit: U' = U
            assert len(cv["params"]["a"]) == 12
            stats = next(s for s in c.preact_stats if (s["layer"], s["epoch"]) == (cv["layer"], cv["epoch"]))
            lo, hi = stats["quantiles"]["0.001"], stats["quantiles"]["0.999"]
            assert cv["x"][0] == pytest.approx(lo - 0.1 * (hi - lo), abs=1e-4)
            assert cv["x"][-1] == pytest.approx(hi + 0.1 * (hi - lo), abs=1e-4)
    # the learned slopes at the last record are the state_dict's
    last = [cv for cv in res.candidates[0].curves if cv["layer"] == 0 and cv["epoch"] == 5][0]
    np.testing.assert_allclose(last["params"]["a"], res.candidates[0].state_dict["acts.0.a"][0], atol=1e-6)


def test_dead_units_and_curveless_families() -> None:
    cfg = TrainConfig(epochs=1, batch_size=32, record_epochs=2, stats_sample=32)
    res = train_population(MLP, "maxout", candidates(2), DATA, cfg)
    c = res.candidates[0]
    assert c.curves == [] and len(c.preact_stats) == 2 * 2
    relu = train_population(MLP, "relu", [Candidate(seed=0, lr=1e-2)], DATA, cfg)
    # a unit is dead when its pre-activation is <= 0 on every sampled row
    assert 0.0 <= relu.candidates[0].preact_stats[0]["dead_fraction"] < 1.0


def test_cnn_trains_and_records() -> None:
    data = make_data(d=72)
    cfg = TrainConfig(epochs=2, batch_size=32, record_epochs=2, stats_sample=32, curve_points=9)
    res = train_population(CNN, "relu", candidates(2), data, cfg)
    c = res.candidates[0]
    assert c.status == "complete" and 0.0 <= (c.val_metric or 0.0) <= 1.0
    assert len(c.preact_stats) == 3 * 2 and len(c.curves) == 3 * 2
    assert res.n_params > 0 and res.flops > 0 and res.device == "cpu"


# ----- helpers: predict / evaluate ------------------------------------------------------------
def test_predict_and_evaluate_match_the_engine() -> None:
    res = train_population(MLP, "prelu", candidates(2), DATA, CONFIG)
    c = res.candidates[1]
    assert c.state_dict is not None
    acc = evaluate(MLP, "prelu", {}, c.state_dict, DATA.X_val, DATA.y_val, 3, "classification")
    assert acc == pytest.approx(c.val_metric, abs=1e-6)
    proba = predict(MLP, "prelu", {}, c.state_dict, DATA.X_val, 3, "classification")
    assert proba.shape == (64, 3)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert (proba.argmax(1) == DATA.y_val).mean() == pytest.approx(acc)

    reg = make_data("regression")
    res = train_population(MLP, "relu", candidates(1), reg, CONFIG)
    c = res.candidates[0]
    assert c.state_dict is not None
    pred = predict(MLP, "relu", {}, c.state_dict, reg.X_val, 1, "regression")
    y = np.asarray(reg.y_val, dtype=np.float64)
    r2 = 1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert c.val_metric == pytest.approx(r2, abs=1e-4)
    assert c.best_val_metric == max(h["val_metric"] for h in c.history)


def test_bad_data_is_rejected() -> None:
    bad_labels = TensorData(DATA.X_train, np.full(160, 5), DATA.X_val, DATA.y_val, "classification", 3)
    with pytest.raises(InvalidDataset, match="0..2"):
        train_population(MLP, "relu", candidates(1), bad_labels, CONFIG)
    x = np.array(DATA.X_train, copy=True)
    x[0, 0] = np.nan
    with pytest.raises(InvalidDataset, match="NaN"):
        train_population(MLP, "relu", candidates(1), TensorData(
            x, DATA.y_train, DATA.X_val, DATA.y_val, "classification", 3), CONFIG)


def test_torch_inputs_are_accepted() -> None:
    data = TensorData(*(torch.as_tensor(a) for a in (DATA.X_train, DATA.y_train, DATA.X_val, DATA.y_val)),
                      task="classification", n_outputs=3)
    res = train_population(MLP, "relu", candidates(1), data, CONFIG)
    ref = train_population(MLP, "relu", candidates(1), DATA, CONFIG)
    assert without_timing(res) == without_timing(ref)
