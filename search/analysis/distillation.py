"""What curve analysis is worth at the network level: accuracy after distilling, after merging.

:mod:`search.analysis.curves` judges one learned curve at a time. Here a trained network
(a finalist, whose weights are stored) is rebuilt and

* every learned activation is replaced by its piecewise-linear distillation (each
  curve sampled over the pre-activation range the validation rows produce, within
  ``rel_error`` of its range; per-unit families get one curve per unit), and the
  validation (and, where the protocol scored it, test) metric is measured before and
  after, with the forward-time speed-up of the whole network on one batch, timed in
  the same process (:func:`distil_network`, :func:`analyse_network`);
* every layer whose activation is a line over the data range is folded into the next
  linear layer where that is exact (:func:`models.merge.merge_layer`), and the metric
  after merging, the hidden layers, parameters and FLOPs before and after are reported;
  where it is not exact the reason is (:func:`linear_layers`).

:func:`analyse_finalists` runs it on a search's trainable finalists once the search
is complete (:mod:`search.analysis.run`, off the critical path) and stores one row per trial in ``actsearch_fits`` (kind ``network``,
layer -1: the whole network), whose ``extra`` holds the result. That row reuses the
fits table's JSON column rather than a new table: the result is one small JSON
document per trial, read whole, never queried by field.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from models.activations import Activation, is_trainable
from models.activations.piecewise import PiecewiseLinear, pad_knots, time_forward
from models.engine import build_network
from models.merge import merge_blocker, merge_layer
from models.network import PopulationNet
from models.spec import ArchSpec
from store import repo

from ..datasets import Splits
from .curves import (
    DEFAULT_DISTIL_REL_ERROR,
    DEFAULT_LINEAR_TOL,
    density_weights,
    distil_piecewise_linear,
    linearity,
)

log = logging.getLogger(__name__)

__all__ = [
    "NETWORK_LAYER",
    "EvalData",
    "analyse_finalists",
    "analyse_network",
    "finalist_network_row",
    "finalists_to_analyse",
    "distil_for_export",
    "distil_network",
    "linear_layers",
    "network_metric",
    "stored_network_analysis",
]

NETWORK_LAYER = -1  # the fits row of the whole network
CURVE_POINTS = 201  # grid points each activation is sampled on before distilling
HIST_BINS = 64
MAX_ROWS = 4096  # validation rows that set the ranges (a fixed prefix: deterministic)
TIMING_ROWS = 1024  # batch of the speed-up timing
TIMING_REPEATS = 10


@dataclass
class EvalData:
    """Standardised rows to judge a network on; the test split only where it was scored."""

    X_val: np.ndarray
    y_val: np.ndarray
    task: str
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


# --------------------------------------------------------------------------- metrics


@torch.no_grad()
def network_metric(net: torch.nn.Module, X: Any, y: Any, task: str, chunk: int = 4096) -> float:
    """Accuracy, or R^2, of a K=1 network on ``(X, y)`` (as :func:`models.engine.evaluate`)."""
    net.eval()
    x = torch.as_tensor(np.asarray(X, dtype=np.float32))
    out = torch.cat([net(x[i:i + chunk])[0] for i in range(0, x.shape[0], chunk)])  # (N, C)
    if task == "classification":
        labels = torch.as_tensor(np.asarray(y)).long()
        return float((out.argmax(-1) == labels).double().mean())
    target = torch.as_tensor(np.asarray(y, dtype=np.float64)).reshape(-1)
    sse = float((out[:, 0].double() - target).square().sum())
    sst = float((target - target.mean()).square().sum())
    if sst == 0.0:
        return 1.0 if sse == 0.0 else 0.0
    return 1.0 - sse / sst


def _metrics(net: torch.nn.Module, data: EvalData) -> dict[str, float | None]:
    test = None
    if data.X_test is not None and data.y_test is not None and len(data.X_test):
        test = network_metric(net, data.X_test, data.y_test, data.task)
    return {"validation": network_metric(net, data.X_val, data.y_val, data.task), "test": test}


def _change(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("validation", "test"):
        b, a = before[split], after[split]
        out[f"{split}_before"], out[f"{split}_after"] = b, a
        out[f"{split}_change"] = None if a is None or b is None else a - b
    return out


# --------------------------------------------------------------------------- ranges


@torch.no_grad()
def layer_preacts(net: PopulationNet, X: Any, max_rows: int = MAX_ROWS) -> list[np.ndarray]:
    """Each hidden layer's pre-activations ``(N, U)`` on the first ``max_rows`` rows (K=1)."""
    net.eval()
    x = torch.as_tensor(np.asarray(X, dtype=np.float32)[:max_rows])
    collected: list[torch.Tensor] = []
    net(x, preacts=collected)
    return [z[0].double().numpy() for z in collected]  # (N, U) each


def _range(z: np.ndarray) -> tuple[float, float]:
    lo, hi = float(z.min()), float(z.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("non-finite pre-activations: the network diverged")
    if hi - lo < 1e-6:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def _weights(grid: np.ndarray, values: np.ndarray, lo: float, hi: float) -> np.ndarray | None:
    hist, edges = np.histogram(values, bins=HIST_BINS, range=(lo, hi))
    return density_weights(grid, hist.astype(np.float64), edges)


def _curves(act: torch.nn.Module, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """``(grid (G,), y (U', G))`` of a K=1 activation over ``[lo, hi]``: U' is 1 (one curve
    for the layer) or the layer's units; a family with a curve per group of consecutive
    channels (group_rational) has each group's curve repeated for its channels."""
    if not isinstance(act, Activation):
        raise ValueError(f"layer activation {type(act).__name__} is not a learned family")
    if getattr(act, "gated", False):
        raise ValueError(f"{act.name} is a gated unit: its curve is the gate's response, which "
                         "multiplies the value half, so no 1-D piecewise-linear copy reproduces "
                         "the layer (fits and distillation apply to pointwise families)")
    grid = np.linspace(lo, hi, CURVE_POINTS)
    y = act.curve(torch.from_numpy(grid.astype(np.float32)))
    if y is None:
        raise ValueError(f"{act.name} mixes units (no 1-D curve), so it cannot be distilled "
                         "or merged")
    ys = y[0].double().numpy()
    units = int(getattr(act, "units", ys.shape[0]) or ys.shape[0])
    if 1 < ys.shape[0] < units and units % ys.shape[0] == 0:
        ys = np.repeat(ys, units // ys.shape[0], axis=0)
    return grid, ys


# --------------------------------------------------------------------------- distillation


def distil_network(
    net: PopulationNet, X: Any, rel_error: float = DEFAULT_DISTIL_REL_ERROR,
) -> tuple[PopulationNet, list[dict[str, Any]]]:
    """A copy of ``net`` (K=1) with every activation replaced by a :class:`PiecewiseLinear`.

    Each curve is sampled over the layer's pre-activation range on ``X`` and distilled
    within ``rel_error`` of its y range there (:func:`search.analysis.distil_piecewise_linear`);
    outside that range the end segments extend. Returns the copy and per layer
    ``{layer, per_unit, knots, max_error, knots_x, knots_y}`` (knots as lists: (n,) or (U, n)).
    """
    if not rel_error > 0:
        raise ValueError(f"rel_error must be positive, got {rel_error!r}")
    out = copy.deepcopy(net).eval()
    layers = []
    for i, z in enumerate(layer_preacts(net, X)):
        lo, hi = _range(z)
        grid, ys = _curves(net.acts[i], lo, hi)
        knots = []
        errors = []
        for y in ys:  # one curve per unit (per-unit families) or one for the layer
            tol = rel_error * max(float(np.ptp(y)), 1e-6)
            kx, ky = distil_piecewise_linear(grid, y, tol)
            knots.append((kx, ky))
            errors.append(float(np.max(np.abs(np.interp(grid, kx, ky) - y))))
        per_unit = len(knots) > 1
        kx_arr, ky_arr = pad_knots(knots) if per_unit else knots[0]
        out.acts[i] = PiecewiseLinear(kx_arr, ky_arr)
        layers.append({"layer": i, "per_unit": per_unit, "units": len(knots),
                       "knots": max(len(k[0]) for k in knots), "range": [lo, hi],
                       "max_error": max(errors), "knots_x": np.asarray(kx_arr).tolist(),
                       "knots_y": np.asarray(ky_arr).tolist()})
    return out, layers


def network_speedup(learned: torch.nn.Module, distilled: torch.nn.Module, X: Any, *,
                    rows: int = TIMING_ROWS, repeats: int = TIMING_REPEATS) -> dict[str, float]:
    """Median forward seconds of both networks on the same batch, and their ratio (> 1: faster).

    The batch is ``rows`` rows of ``X`` (repeated when ``X`` has fewer: a validation
    split of a few dozen rows would time call overhead, not the network).
    """
    X = np.asarray(X, dtype=np.float32)
    x = torch.as_tensor(np.resize(X, (rows, X.shape[1])))
    t_learned = time_forward(learned.eval(), x, repeats=repeats)
    t_distilled = time_forward(distilled.eval(), x, repeats=repeats)
    return {"learned_s": t_learned, "distilled_s": t_distilled, "batch": int(x.shape[0]),
            "speedup": t_learned / max(t_distilled, 1e-12)}


# --------------------------------------------------------------------------- linear layers


def linear_layers(net: PopulationNet, X: Any, tol: float = DEFAULT_LINEAR_TOL) -> list[dict[str, Any]]:
    """Per hidden layer: is its activation a line over the data range, and can it be merged.

    Each unit's curve (one for per-layer families) is fitted by a line weighted by the
    density of that unit's pre-activations (:func:`search.analysis.linearity`); the
    layer is near-linear when every unit is within ``tol`` of its range. ``slope`` and
    ``intercept`` are per unit; ``mergeable`` is False with a ``reason`` where folding
    is not exact (:func:`models.merge.merge_blocker`) or the layer is not linear.
    """
    out = []
    for i, z in enumerate(layer_preacts(net, X)):
        lo, hi = _range(z)
        grid, ys = _curves(net.acts[i], lo, hi)
        per_unit = ys.shape[0] > 1
        slopes, intercepts, rels = [], [], []
        for u, y in enumerate(ys):
            values = z[:, u] if per_unit else z.ravel()
            s, b, _, rel = linearity(grid, y, _weights(grid, values, lo, hi))
            slopes.append(s)
            intercepts.append(b)
            rels.append(rel)
        near = bool(max(rels) <= tol)
        reason = merge_blocker(net, i)
        if not near:
            reason = (f"not near-linear: worst unit deviates {max(rels):.3g} of its range from "
                      f"a line (tolerance {tol})")
        out.append({"layer": i, "near_linear": near, "max_rel_error": float(max(rels)),
                    "near_linear_unit_fraction": float(np.mean([r <= tol for r in rels])),
                    "units": len(rels), "slope": slopes, "intercept": intercepts,
                    "mergeable": reason is None, "reason": reason})
    return out


def _size(net: PopulationNet) -> dict[str, int]:
    return {"hidden_layers": len(net.layers), "params": net.count_params(),
            "flops": net.count_flops()}


def _merge_all(net: PopulationNet, layers: Sequence[dict[str, Any]]
               ) -> tuple[PopulationNet, list[int], dict[int, str]]:
    """Merge every mergeable layer, last first (an earlier layer's inputs do not change).

    A layer mergeable alone may not be once the others are merged (the last hidden
    layer left); it stays, with the reason. Returns the net, merged and kept layers.
    """
    merged, done, kept = net, [], {}
    for info in sorted((x for x in layers if x["mergeable"]), key=lambda x: -x["layer"]):
        reason = merge_blocker(merged, info["layer"])
        if reason is not None:
            kept[info["layer"]] = reason
            continue
        merged = merge_layer(merged, info["layer"], info["slope"], info["intercept"])
        done.append(info["layer"])
    return merged, sorted(done), kept


# --------------------------------------------------------------------------- one network


def analyse_network(
    net: PopulationNet, data: EvalData, *, rel_error: float = DEFAULT_DISTIL_REL_ERROR,
    linear_tol: float = DEFAULT_LINEAR_TOL, time_speedup: bool = True,
) -> dict[str, Any]:
    """Distillation and merging of one trained K=1 network, as one JSON-able dict.

    ``{"before": {validation, test}, "distilled": {...change, speedup, layers},
    "merge": {"layers": [...], "all": {...} | None}, "size": {...}}``; metrics are the
    task's (accuracy or R^2), test only where ``data`` carries the test split.
    """
    net = net.eval()
    before = _metrics(net, data)
    distilled, layers = distil_network(net, data.X_val, rel_error)
    dist: dict[str, Any] = {
        "rel_error": rel_error,
        **_change(before, _metrics(distilled, data)),
        "layers": [{k: v for k, v in x.items() if k not in ("knots_x", "knots_y")}
                   for x in layers],
    }
    if time_speedup:
        dist.update(network_speedup(net, distilled, data.X_val))
    lin = linear_layers(net, data.X_val, linear_tol)
    merges = []
    for info in lin:
        row = {k: info[k] for k in ("layer", "near_linear", "max_rel_error",
                                    "near_linear_unit_fraction", "mergeable", "reason")}
        if info["mergeable"]:
            one = merge_layer(net, info["layer"], info["slope"], info["intercept"])
            row.update(_change(before, _metrics(one, data)), size_after=_size(one))
        merges.append(row)
    merged_all = None
    if any(x["mergeable"] for x in lin):
        merged, done, kept = _merge_all(net, lin)
        merged_all = {"layers": done, "kept": {str(k): v for k, v in kept.items()},
                      **_change(before, _metrics(merged, data)), "size_after": _size(merged)}
    return {"task": data.task, "before": before, "size": _size(net), "distilled": dist,
            "merge": {"tol": linear_tol, "layers": merges, "all": merged_all}}


def distil_for_export(
    net: PopulationNet, data: Splits, rel_error: float = DEFAULT_DISTIL_REL_ERROR,
) -> tuple[PopulationNet, dict[str, Any]]:
    """The distilled copy of an exported model and what meta.json says about it.

    The summary holds ``rel_error``, the validation and test metric before, after and
    their change, and per layer the knots (``knots_x``, ``knots_y``: (n,) or (U, n)).
    The test split is used because the exported model is the final choice.
    """
    eval_data = EvalData(np.asarray(data.X_val), np.asarray(data.y_val), str(data.task),
                         np.asarray(data.X_test), np.asarray(data.y_test))
    net = net.eval()
    before = _metrics(net, eval_data)
    distilled, layers = distil_network(net, eval_data.X_val, rel_error)
    return distilled, {"rel_error": rel_error, **_change(before, _metrics(distilled, eval_data)),
                       "layers": layers}


# --------------------------------------------------------------------------- a search


def stored_network_analysis(session: Session, *, trial_id: int) -> dict[str, Any] | None:
    """The stored network-level analysis of a trial (None if it has none)."""
    rows = repo.trial_fits(session, trial_id=trial_id, layer=NETWORK_LAYER)
    rows = [r for r in rows if r["kind"] == "network"]
    return {**rows[-1]["extra"], "epoch": rows[-1]["epoch"]} if rows else None


def finalists_to_analyse(session: Session, *, search_id: int) -> list[Any]:
    """The search's complete trainable finalists with weights and no ``network`` row yet."""
    out = []
    for trial in repo.list_trials(session, search_id=search_id, phase="finalist", limit=None):
        if trial.state != "complete" or not is_trainable(trial.family):
            continue
        if not repo.has_weights(session, trial_id=trial.id):
            continue
        if any(f["kind"] == "network" for f in repo.trial_fits(session, trial_id=trial.id,
                                                              layer=NETWORK_LAYER)):
            continue
        out.append(trial)
    return out


def finalist_network_row(
    session: Session, *, trial: Any, arch: ArchSpec, data: Splits, n_outputs: int,
    with_test: bool, rel_error: float = DEFAULT_DISTIL_REL_ERROR,
    linear_tol: float = DEFAULT_LINEAR_TOL,
) -> dict[str, Any]:
    """The ``network`` fits row of one finalist (its weights rebuilt and analysed); raises on error.

    Reads only (weights, the epoch of its curve fits): the caller stores the row, so
    the computation holds no write transaction.
    """
    eval_data = EvalData(np.asarray(data.X_val), np.asarray(data.y_val), str(data.task),
                         np.asarray(data.X_test) if with_test else None,
                         np.asarray(data.y_test) if with_test else None)
    state, _, _ = repo.load_weights(session, trial_id=trial.id)
    net = build_network(arch, trial.family, [trial.family_params], eval_data.X_val.shape[1],
                        n_outputs)
    net.load_candidate_state(state)
    result = analyse_network(net, eval_data, rel_error=rel_error, linear_tol=linear_tol)
    epoch = max((int(f["epoch"]) for f in repo.trial_fits(session, trial_id=trial.id)), default=0)
    d = result["distilled"]
    return {
        "layer": NETWORK_LAYER, "epoch": epoch, "unit": None, "kind": "network",
        "family": trial.family, "params": {"rel_error": rel_error, "linear_tol": linear_tol},
        "rmse": None, "max_error": max((x["max_error"] for x in d["layers"]), default=None),
        "r2": None, "extra": result,
    }


def analyse_finalists(
    session: Session, *, search_id: int, arch: ArchSpec, data: Splits, n_outputs: int,
    test_family: str | None = None, rel_error: float = DEFAULT_DISTIL_REL_ERROR,
    linear_tol: float = DEFAULT_LINEAR_TOL,
) -> int:
    """Analyse every complete trainable finalist with weights and store one ``network`` row each.

    ``data`` is the search's split (scaled as in training); the test split is used only
    for ``test_family`` (the final choice, the one family the protocol scores on test).
    Trials already analysed are skipped; a failure is logged and skips that trial only.
    Returns how many trials were analysed. (:func:`search.analysis.run.analyse_search`
    runs the same per-trial steps, each in its own transaction, and records failures.)
    """
    done = 0
    for trial in finalists_to_analyse(session, search_id=search_id):
        try:
            row = finalist_network_row(session, trial=trial, arch=arch, data=data,
                                       n_outputs=n_outputs, with_test=trial.family == test_family,
                                       rel_error=rel_error, linear_tol=linear_tol)
        except Exception:
            log.warning("network analysis of trial %d (%s) failed; nothing stored", trial.id,
                        trial.family, exc_info=True)
            continue
        repo.add_fits(session, trial_id=trial.id, rows=[row])
        done += 1
    return done
