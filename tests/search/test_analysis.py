"""search.analysis.curves: closed-form fits, linearity, distillation on curves with known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.activations import get_activation
from models.activations.piecewise import PiecewiseLinear, activation_from_params
from models.engine import CandidateResult, PopulationResult
from models.spec import Candidate
from models.stats import activation_params
from search.analysis import curves as analysis
from search.coordinator.results import TrialIdentity, record_population
from store import repo
from store.db import init_db, make_engine, session_factory

X = np.linspace(-2.0, 2.0, 201).astype(np.float32)


def test_exactly_linear_curve() -> None:
    y = (0.7 * X + 0.2).astype(np.float32)
    slope, intercept, r2, rel = analysis.linearity(X, y)
    assert slope == pytest.approx(0.7, abs=1e-5) and intercept == pytest.approx(0.2, abs=1e-5)
    assert r2 == pytest.approx(1.0, abs=1e-9) and rel < 1e-5
    assert analysis.is_near_linear(X, y)
    kx, ky = analysis.distil_piecewise_linear(X, y, max_error=1e-4)
    assert len(kx) == 2 and kx[0] == pytest.approx(-2.0) and kx[-1] == pytest.approx(2.0)
    best = analysis.fit_closed_forms(X, y)[0]
    assert best.family == "affine:identity" and best.rmse < 1e-5
    assert best.params["slope"] == pytest.approx(0.7, abs=1e-4)


def test_exactly_shifted_relu() -> None:
    y = np.maximum(X - 0.3, 0.0).astype(np.float32)
    assert not analysis.is_near_linear(X, y)
    fits = analysis.fit_closed_forms(X, y)
    best = fits[0]
    assert best.family in ("relu", "affine:relu") and best.rmse < 1e-5 and best.max_error < 1e-4
    assert best.params["c"] == pytest.approx(-0.3, abs=1e-3)
    assert best.params["b"] == pytest.approx(1.0, abs=1e-6)
    assert best.params["a"] == pytest.approx(1.0, abs=1e-3)
    assert best.r2 == pytest.approx(1.0, abs=1e-6)
    assert all(fits[0].rmse <= f.rmse for f in fits)
    kx, ky = analysis.distil_piecewise_linear(X, y, max_error=1e-3)
    assert len(kx) == 3 and kx[1] == pytest.approx(0.3, abs=1e-3)
    assert np.max(np.abs(np.interp(X, kx, ky) - y)) <= 1e-3


def test_tanh_fitted_by_tanh_and_density_weights() -> None:
    y = np.tanh(X).astype(np.float32)
    hist = np.exp(-np.linspace(-1.5, 1.5, 32) ** 2)
    edges = np.linspace(-1.5, 1.5, 33)
    w = analysis.density_weights(X, hist / hist.sum(), edges)
    assert w is not None and w[0] == 0.0 and w.sum() == pytest.approx(1.0)
    best = analysis.fit_closed_forms(X, y, weights=w)[0]
    assert best.family in ("tanh", "affine:tanh") and best.rmse < 1e-5
    scaled = (1.3 * np.tanh(0.8 * X - 0.1) + 0.05).astype(np.float32)
    fits = {f.family: f for f in analysis.fit_closed_forms(X, scaled, families=["affine:tanh", "relu"])}
    t = fits["affine:tanh"].params
    assert (t["a"], t["b"], t["c"], t["d"]) == pytest.approx((1.3, 0.8, -0.1, 0.05), abs=1e-3)
    assert fits["relu"].rmse > 0.05


def test_distilled_module_matches_knots_and_speedup() -> None:
    y = np.tanh(X)
    kx, ky = analysis.distil_piecewise_linear(X, y, max_error=0.01)
    assert 3 <= len(kx) < 40 and np.max(np.abs(np.interp(X, kx, ky) - y)) <= 0.01 + 1e-9
    module = PiecewiseLinear(kx, ky)
    probe = torch.linspace(-2.0, 2.0, 1001)
    out = module(probe.reshape(1, -1, 1)).reshape(-1).numpy()
    assert np.allclose(out, np.interp(probe.numpy(), kx, ky), atol=1e-5)
    knots_out = module(torch.as_tensor(kx, dtype=torch.float32)).numpy()
    assert np.allclose(knots_out, ky, atol=1e-5)
    learned = get_activation("rational")([{}], units=8)
    timing = analysis.measure_speedup(learned, kx, ky, units=8, batch=64, repeats=3)
    assert timing["learned_s"] > 0 and timing["distilled_s"] > 0 and timing["speedup"] > 0


def _rational_candidate(units: int = 4) -> tuple[dict[str, Any], list[dict[str, Any]],
                                                 list[dict[str, Any]]]:
    act = get_activation("rational")([{"sharing": "unit"}], units=units)
    grid = torch.from_numpy(X)
    y = act.curve(grid)[0].numpy()
    params = activation_params(act, 0)
    rebuilt = activation_from_params("rational", {"sharing": "unit"}, params, units)
    assert np.allclose(rebuilt.curve(grid)[0].numpy(), y, atol=1e-6)
    hist = np.full(16, 1 / 16, dtype=np.float32)
    edges = np.linspace(-1.8, 1.8, 17).astype(np.float32)
    curves = [{"layer": 0, "epoch": e, "x": X, "y": y, "params": params} for e in (0, 2)]
    stats = [{"layer": 0, "epoch": e, "min": -1.8, "max": 1.8, "mean": 0.0, "std": 1.0,
              "quantiles": {}, "hist": hist, "edges": edges, "dead_fraction": 0.0} for e in (0, 2)]
    return {"sharing": "unit"}, curves, stats


def test_analyse_curves_is_complete() -> None:
    """Every kind of row for the last epoch (its cost is a bench figure, not an assert here)."""
    family_params, curves, stats = _rational_candidate()
    rows = analysis.analyse_curves(family="rational", family_params=family_params,
                                   curves=curves, stats=stats)
    assert {r["epoch"] for r in rows} == {2}
    kinds = [r["kind"] for r in rows]
    assert kinds.count("closed_form") == analysis.TOP_CLOSED_FORMS
    linear = next(r for r in rows if r["kind"] == "linear")
    assert 0.0 <= linear["extra"]["near_linear_unit_fraction"] <= 1.0 and linear["extra"]["units"] == 4
    distilled = next(r for r in rows if r["kind"] == "distilled")
    assert distilled["params"]["knots"] >= 2 and distilled["extra"]["speedup"] > 0


def _record(tmp_path: Path, *, complete: bool = True) -> tuple[Any, int, int]:
    """One rational trial recorded as the coordinator does; ``complete``: its search then
    completes as ``_finish`` leaves it (analysis pending). Returns sessions, search, trial."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    family_params, curves, stats = _rational_candidate()
    cand = CandidateResult(index=0, status="complete",
                           history=[{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0,
                                     "val_metric": 0.5, "elapsed_s": 0.1}],
                           val_metric=0.5, best_val_metric=0.5, curves=curves, preact_stats=stats)
    result = PopulationResult(candidates=[cand], n_params=10, flops=10, device="cpu", wall_s=0.1,
                              candidate_epochs=1)
    ident = TrialIdentity(candidate=Candidate(seed=0, lr=0.01, act_params=family_params),
                          act_params=family_params, hparams={"lr": 0.01}, trial_number=0)
    with sessions.begin() as session:
        ds = repo.add_dataset(session, name="iris", data_bytes=b"a,y\n", meta={
            "task": "classification", "n_rows": 1, "n_features": 1, "n_classes": 2,
            "schema": {"features": ["a"], "label": "y", "classes": ["n", "y"]}})
        search = repo.create_search(session, name="s", study_name="st", dataset_id=ds.id, spec={})
        rows = record_population(session, search_id=search.id, study_name="st", population_id=None,
                                 phase="search", family="rational", identities=[ident],
                                 result=result)
        search_id, trial_id = search.id, rows[0].id
        if complete:
            repo.set_search_state(session, search_id=search_id, state="complete")
            repo.set_analysis_state(session, search_id=search_id, state="pending")
    return sessions, search_id, trial_id


def test_record_population_stores_no_fits_the_analysis_does(tmp_path: Path) -> None:
    """Fits are off the commit: none after record_population, all after analyse_search."""
    from search.analysis.run import analyse_search

    sessions, search_id, trial_id = _record(tmp_path)
    with sessions() as session:
        assert repo.trial_fits(session, trial_id=trial_id) == []
    report = analyse_search(sessions, search_id)
    assert report.state == "done" and report.fitted == 1 and report.distilled == 0
    with sessions() as session:
        fits = repo.trial_fits(session, trial_id=trial_id)
        assert repo.get_search(session, search_id=search_id).analysis_state == "done"
    assert {f["kind"] for f in fits} == {"closed_form", "linear", "distilled"}
    assert all(f["layer"] == 0 and f["epoch"] == 2 for f in fits)


def test_analysis_error_does_not_lose_the_trial(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from search.analysis.run import analyse_search

    def boom(**_: Any) -> list[dict[str, Any]]:
        raise RuntimeError("analysis exploded")

    monkeypatch.setattr(analysis, "analyse_curves", boom)  # run imports this module lazily
    sessions, search_id, trial_id = _record(tmp_path)
    report = analyse_search(sessions, search_id)
    assert report.state == "failed" and "analysis exploded" in (report.error or "")
    with sessions() as session:
        trial = repo.get_trial(session, trial_id=trial_id)
        assert trial.state == "complete"
        assert repo.trial_curves(session, trial_id=trial_id)
        assert repo.trial_fits(session, trial_id=trial_id) == []
        search = repo.get_search(session, search_id=search_id)
        assert search.state == "complete" and search.analysis_state == "failed"
        assert "fits of trial #0 (rational): RuntimeError: analysis exploded" in search.analysis_error
