"""Numbers over seeds: mean, spread, intervals, differences, epochs-to-target, linearity.

Every figure the report prints is computed here from per-seed values kept in
results.json, so a reader can recompute it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from search.analysis.curves import DEFAULT_LINEAR_TOL, density_weights, is_near_linear, linearity
from search.protocol import mean_interval


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std, 95% Student-t half-width and n of the finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    mean, half = mean_interval(finite)
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0 if finite else math.nan
    return {"mean": mean, "std": std, "ci95": half, "n": len(finite),
            "n_failed": len(values) - len(finite)}


def welch_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """``mean(a) - mean(b)`` with Welch's 95% interval and a one-word verdict.

    verdict: ``higher`` (interval above 0), ``lower`` (below 0) or ``n.s.`` (it
    contains 0, or there are too few values for an interval).
    """
    a = [float(v) for v in a if math.isfinite(v)]
    b = [float(v) for v in b if math.isfinite(v)]
    if not a or not b:
        return {"diff": math.nan, "lo": math.nan, "hi": math.nan, "verdict": "n.s."}
    diff = float(np.mean(a) - np.mean(b))
    if len(a) < 2 or len(b) < 2:
        lo, hi = -math.inf, math.inf
    elif np.var(a) == 0 and np.var(b) == 0:
        lo = hi = diff  # identical replicates on both sides: the difference is exact
    else:
        with warnings.catch_warnings():  # scipy warns when one side is (nearly) constant
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        lo, hi = float(ci.low), float(ci.high)
    verdict = "higher" if lo > 0 else "lower" if hi < 0 else "n.s."
    return {"diff": diff, "lo": lo, "hi": hi, "verdict": verdict}


def mean_curve(curves: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise mean and std over seeds of per-epoch curves (a shorter, diverged one pads NaN)."""
    length = max(len(c) for c in curves)
    arr = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        arr[i, : len(c)] = c
    with np.errstate(all="ignore"):
        return np.nanmean(arr, axis=0), np.nanstd(arr, axis=0, ddof=0)


def first_epoch_reaching(curve: Sequence[float], target: float) -> int | None:
    """The first (1-based) epoch whose value reaches ``target``, or None if it never does."""
    for epoch, value in enumerate(curve, start=1):
        if math.isfinite(value) and value >= target - 1e-12:
            return epoch
    return None


def epochs_to_target(curves: Sequence[Sequence[float]], target: float) -> dict[str, Any]:
    """Per seed epochs to reach ``target``; mean over the seeds that reach it."""
    per_seed = [first_epoch_reaching(c, target) for c in curves]
    reached = [e for e in per_seed if e is not None]
    return {"target": target, "per_seed": per_seed, "reached": len(reached), "n": len(per_seed),
            "mean": float(np.mean(reached)) if reached else None}


def curve_linearity(curves: Sequence[Mapping[str, Any]], stats_rows: Sequence[Mapping[str, Any]],
                    tol: float = DEFAULT_LINEAR_TOL, keep_curve: bool = False
                    ) -> list[dict[str, Any]]:
    """Per layer of one candidate, whether its last recorded curve is near-linear.

    Judged where the data falls: weights are the pre-activation density of the same
    epoch (:func:`search.analysis.density_weights`), zero outside the observed range.
    Per-unit curves are judged on their median unit, as the product's analysis does;
    ``rel_residual`` is the largest distance from the best line over the observed range,
    relative to the curve's range there (near-linear: at most ``tol``).
    ``keep_curve`` adds the sampled x, y and the weights (for plotting examples).
    """
    out = []
    for layer in sorted({int(c["layer"]) for c in curves}):
        last = max((c for c in curves if int(c["layer"]) == layer), key=lambda c: int(c["epoch"]))
        x = np.asarray(last["x"], dtype=np.float64).ravel()
        y = np.median(np.asarray(last["y"], dtype=np.float64).reshape(-1, x.size), axis=0)
        stat = next((s for s in stats_rows if int(s["layer"]) == layer
                     and int(s["epoch"]) == int(last["epoch"])), None)
        w = density_weights(x, stat["hist"], stat["edges"]) if stat is not None else None
        row: dict[str, Any] = {"layer": layer, "epoch": int(last["epoch"]),
                               "near_linear": bool(is_near_linear(x, y, w, tol=tol)),
                               "rel_residual": linearity(x, y, w)[3]}
        if keep_curve:
            step = max(1, x.size // 50)  # ~50 points draw the shape; results.json stays small
            row.update(x=x[::step].tolist(), y=y[::step].tolist(),
                       observed=[float(x[w > 0].min()), float(x[w > 0].max())]
                       if w is not None else [float(x.min()), float(x.max())])
        out.append(row)
    return out


def round_floats(obj: Any, digits: int = 6) -> Any:
    """Round every float in a JSON-able tree (keeps results.json small and diff-able)."""
    if isinstance(obj, float):
        return round(obj, digits) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    return obj
