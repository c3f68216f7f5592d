"""What a learned activation curve is: nearest closed form, linearity, a distilled copy.

A learned curve y(x) is sampled on a grid spanning the observed pre-activation range
(``models.stats``). Here it is

* fitted to every pointwise fixed family of the registry (its float parameters fitted
  within their ranges) and to ``a*f(b*x + c) + d`` over every base function, by
  weighted least squares, weights being the pre-activation density so the fit is
  judged where the data falls (:func:`fit_closed_forms`);
* tested for near-linearity (:func:`linearity`, :func:`is_near_linear`): such a
  layer can be merged into its neighbours (prunable);
* distilled into the fewest piecewise-linear knots within a max abs error
  (:func:`distil_piecewise_linear`) and timed against the learned activation
  (:func:`measure_speedup`).

:func:`analyse_curves` runs all of it on a trial's final-epoch curves and returns rows
for ``store.repo.add_fits``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares

from models.activations import BASE_FUNCTIONS, families, get_activation
from models.activations.piecewise import PiecewiseLinear, activation_from_params, time_forward

log = logging.getLogger(__name__)

DEFAULT_LINEAR_TOL = 0.05  # max |residual| / y range over the observed range
DEFAULT_DISTIL_REL_ERROR = 0.01  # of the curve's y range
TOP_CLOSED_FORMS = 5  # stored per layer
FIT_POINTS = 51  # grid points the optimiser sees (scores use every point)


@dataclass
class Fit:
    """One closed form fitted to a curve. ``params`` are readable (name -> float)."""

    family: str
    params: dict[str, float]
    rmse: float
    max_error: float
    r2: float
    n_params: int = 0
    formula: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": self.params, "rmse": self.rmse,
                "max_error": self.max_error, "r2": self.r2, "formula": self.formula}


# --------------------------------------------------------------------------- weights


def density_weights(x: np.ndarray, hist: np.ndarray, edges: np.ndarray) -> np.ndarray | None:
    """Pre-activation density at each grid point (0 outside the observed range), summing to 1.

    In-range points get a floor of 1% of the mean in-range density so sparse bins still count.
    Returns None when the histogram is unusable (then fits are unweighted).
    """
    x = np.asarray(x, dtype=np.float64)
    hist = np.asarray(hist, dtype=np.float64).ravel()
    edges = np.asarray(edges, dtype=np.float64).ravel()
    if hist.size == 0 or edges.size != hist.size + 1 or not np.all(np.isfinite(edges)):
        return None
    widths = np.diff(edges)
    if not np.all(widths > 0):
        return None
    density = hist / widths
    inside = (x >= edges[0]) & (x <= edges[-1])
    if not inside.any():
        return None
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, hist.size - 1)
    w = np.where(inside, density[idx], 0.0)
    w = np.where(inside, w + 0.01 * max(float(w[inside].mean()), 1e-12), 0.0)
    total = w.sum()
    return w / total if total > 0 and np.isfinite(total) else None


def _prep(x: Any, y: Any, weights: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size or x.size < 2:
        raise ValueError(f"curve x ({x.size}) and y ({y.size}) need equal lengths >= 2")
    if weights is None:
        w = np.full(x.size, 1.0 / x.size)
    else:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size != x.size or not np.all(np.isfinite(w)) or w.min() < 0 or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative, not all zero, one per point")
        w = w / w.sum()
    finite = np.isfinite(x) & np.isfinite(y)
    return x[finite], y[finite], w[finite] / max(w[finite].sum(), 1e-300)


def _scores(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Weighted RMSE, max abs error where w > 0, weighted R^2."""
    res = pred - y
    if not np.all(np.isfinite(res)):
        return math.inf, math.inf, -math.inf
    rmse = float(np.sqrt(np.sum(w * res**2)))
    max_err = float(np.max(np.abs(res[w > 0])))
    mean = float(np.sum(w * y))
    var = float(np.sum(w * (y - mean) ** 2))
    r2 = 1.0 - rmse**2 / var if var > 1e-24 else (1.0 if rmse < 1e-9 else 0.0)
    return rmse, max_err, float(r2)


# --------------------------------------------------------------------------- closed forms


def _torch_fn(fn: Any) -> Any:
    def f(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return fn(torch.from_numpy(np.ascontiguousarray(z, dtype=np.float64))).numpy()
    return f


def _family_curve(name: str, values: Mapping[str, float], x: np.ndarray) -> np.ndarray:
    cls = get_activation(name)
    act = cls([dict(values)], units=1)
    y = act.curve(torch.from_numpy(x.astype(np.float32)))
    assert y is not None
    return y[0, 0].double().numpy()


def _weighted_affine(g: np.ndarray, y: np.ndarray, sw: np.ndarray) -> tuple[float, float]:
    """Least-squares a, d of ``a*g + d ~ y`` under sqrt-weights ``sw``."""
    design = np.stack([g * sw, sw], axis=1)
    sol, *_ = np.linalg.lstsq(design, y * sw, rcond=None)
    return float(sol[0]), float(sol[1])


def _homogeneous(f: Any) -> bool:
    """f(t*z) == t*f(z) for t > 0 (relu-like): then b can be normalised to +-1."""
    z = np.linspace(-3.0, 3.0, 13)
    return bool(np.allclose(f(2.5 * z), 2.5 * f(z), atol=1e-6))


def _subsample(x: np.ndarray, y: np.ndarray, w: np.ndarray, n: int = FIT_POINTS
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At most ``n`` evenly strided points (weights summed into them) for the optimiser."""
    if x.size <= n:
        return x, y, w
    step = math.ceil(x.size / n)
    idx = np.arange(0, x.size, step)
    ws = np.add.reduceat(w, idx)
    return x[idx], y[idx], ws / max(ws.sum(), 1e-300)


def _fit_affine(base: str, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Fit:
    """``a*f(b*x + c) + d``: a, d solved exactly, (b, c) by least squares from a few starts."""
    f = _torch_fn(BASE_FUNCTIONS[base].fn)
    xo, yo, wo = x, y, w
    x, y, w = _subsample(x, y, w)
    sw = np.sqrt(w)
    span = max(float(x.max() - x.min()), 1e-6)
    mid = float(np.sum(w * x))

    def residual(p: np.ndarray) -> np.ndarray:
        g = f(p[0] * x + p[1])
        a, d = _weighted_affine(g, y, sw)
        return (a * g + d - y) * sw

    if base == "identity":
        starts = [(1.0, 0.0)]
    else:
        starts = [(1.0, 0.0), (-1.0, 0.0), (4.0 / span, -4.0 * mid / span)]
    bound = 50.0 / span
    best = None
    for b0, c0 in starts:
        p0 = np.array([np.clip(b0, -bound, bound), c0])
        try:
            r = least_squares(residual, p0, bounds=([-bound, -1e3], [bound, 1e3]), method="trf",
                              x_scale=[1.0 / span, 1.0], max_nfev=40, xtol=1e-10, ftol=1e-12)
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
            best = r
        if best is not None and best.cost < 1e-14 * (1.0 + float(np.sum(w * y**2))):
            break  # exact already
    x, y, w, sw = xo, yo, wo, np.sqrt(wo)
    b, c = (float(best.x[0]), float(best.x[1])) if best is not None else (1.0, 0.0)
    g = f(b * x + c)
    a, d = _weighted_affine(g, y, sw)
    if base != "identity" and _homogeneous(f) and abs(b) > 1e-12:
        scale = abs(b)
        a, b, c = a * scale, b / scale, c / scale
    if base == "identity":  # a*(b*x + c) + d is a line: report slope and intercept
        params = {"slope": a * b, "intercept": a * c + d}
    else:
        params = {"a": a, "b": b, "c": c, "d": d}
    rmse, max_err, r2 = _scores(y, a * f(b * x + c) + d, w)
    formula = BASE_FUNCTIONS[base].formula or base
    return Fit(f"affine:{base}", {k: float(v) for k, v in params.items()}, rmse, max_err, r2,
               n_params=len(params), formula=f"a*f(b*x + c) + d, f(z) = {formula}")


def _fit_fixed(cls: Any, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Fit:
    """A fixed family as is; its float parameters fitted within their ranges."""
    floats = [s for s in cls.space() if s.kind == "float" and not s.structural]
    fixed = {s.name: s.default for s in cls.space() if s not in floats}
    xo, yo, wo = x, y, w
    x, y, w = _subsample(x, y, w)
    sw = np.sqrt(w)
    values: dict[str, float] = {s.name: float(s.default) for s in floats}
    if floats:
        def to_values(p: np.ndarray) -> dict[str, float]:
            return {s.name: float(math.exp(v) if s.log else v) for s, v in zip(floats, p, strict=True)}

        def enc(v: float, s: Any) -> float:
            return math.log(v) if s.log else v

        lo = [enc(float(s.low), s) for s in floats]
        hi = [enc(float(s.high), s) for s in floats]

        def residual(p: np.ndarray) -> np.ndarray:
            return (_family_curve(cls.name, {**fixed, **to_values(p)}, x) - y) * sw

        best = None
        for t in (0.5, 0.1):
            p0 = np.array([min(max(enc(float(s.default), s), lo[i]), hi[i]) if t == 0.5
                           else lo[i] + t * (hi[i] - lo[i]) for i, s in enumerate(floats)])
            try:
                r = least_squares(residual, p0, bounds=(lo, hi), max_nfev=20)
            except ValueError:
                continue
            if np.isfinite(r.cost) and (best is None or r.cost < best.cost):
                best = r
        if best is not None:
            values = to_values(best.x)
    x, y, w = xo, yo, wo
    pred = _family_curve(cls.name, {**fixed, **values}, x)
    rmse, max_err, r2 = _scores(y, pred, w)
    return Fit(cls.name, values, rmse, max_err, r2, n_params=len(values), formula=cls.formula)


def closed_form_candidates() -> list[str]:
    """Names :func:`fit_closed_forms` tries: pointwise fixed families, then affine over bases."""
    fixed = [c.name for c in families() if not c.trainable and c.pointwise]
    return fixed + [f"affine:{b}" for b in BASE_FUNCTIONS]


def fit_closed_forms(
    x: Any, y: Any, weights: Any = None, families: Iterable[str] | None = None
) -> list[Fit]:
    """Fit ``y(x)`` to each closed form (see :func:`closed_form_candidates`), best first.

    ``weights`` (e.g. :func:`density_weights`) weight the least squares and the
    RMSE and R^2; max_error is over the points of non-zero weight. Ties in RMSE go
    to the form with fewer parameters.
    """
    xs, ys, w = _prep(x, y, weights)
    names = list(families) if families is not None else closed_form_candidates()
    fits: list[Fit] = []
    for name in names:
        try:
            if name.startswith("affine:"):
                fits.append(_fit_affine(name.split(":", 1)[1], xs, ys, w))
            else:
                fits.append(_fit_fixed(get_activation(name), xs, ys, w))
        except Exception as exc:  # one bad form must not sink the others
            log.debug("fit of %s failed: %s", name, exc)
    scale = max(float(np.sqrt(np.sum(w * (ys - np.sum(w * ys)) ** 2))), 1e-12)
    fits.sort(key=lambda f: (round(f.rmse / scale, 4) if math.isfinite(f.rmse) else math.inf,
                             f.n_params))
    return fits


# --------------------------------------------------------------------------- linearity


def linearity(x: Any, y: Any, weights: Any = None) -> tuple[float, float, float, float]:
    """Weighted line fit: (slope, intercept, R^2, max |residual| / y range over the observed range)."""
    xs, ys, w = _prep(x, y, weights)
    sw = np.sqrt(w)
    slope, intercept = _weighted_affine(xs, ys, sw)
    res = slope * xs + intercept - ys
    _, _, r2 = _scores(ys, slope * xs + intercept, w)
    inside = w > 0
    y_range = float(np.ptp(ys[inside]))
    max_res = float(np.max(np.abs(res[inside])))
    tiny = 1e-9 * max(1.0, float(np.max(np.abs(ys[inside]))))
    rel = 0.0 if max_res <= tiny else max_res / max(y_range, tiny)
    return float(slope), float(intercept), float(r2), float(rel)


def is_near_linear(x: Any, y: Any, weights: Any = None, tol: float = DEFAULT_LINEAR_TOL) -> bool:
    """True when the curve is a line within ``tol`` of its range over the observed range."""
    return linearity(x, y, weights)[3] <= tol


# --------------------------------------------------------------------------- distillation


def _max_err(x: np.ndarray, y: np.ndarray, kx: Sequence[float], ky: Sequence[float]) -> float:
    return float(np.max(np.abs(np.interp(x, kx, ky) - y)))


TIGHTEN_STEPS = 8  # halvings of the error bound tried at the same knot count


def distil_piecewise_linear(x: Any, y: Any, max_error: float) -> tuple[np.ndarray, np.ndarray]:
    """Fewest knots within ``max_error``, then the tightest error those few knots reach.

    :func:`_distil_within` finds the fewest knots for the bound; the bound is then
    halved (up to ``TIGHTEN_STEPS`` times) while the knot count holds, so a curve
    that is exactly piecewise linear comes out exact (its kinks where they are, not
    anywhere within the bound) at no extra inference cost. Returns float64
    (knots_x, knots_y).
    """
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(y, dtype=np.float64).ravel()
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    if xs.size < 2:
        raise ValueError("need at least two points to distil")
    tol = max(float(max_error), 0.0)
    best = _distil_within(xs, ys, tol)
    for _ in range(TIGHTEN_STEPS):
        tol /= 2
        tighter = _distil_within(xs, ys, tol)
        if len(tighter[0]) > len(best[0]):
            break
        best = tighter
    return best


def _distil_within(xs: np.ndarray, ys: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Fewest knots (greedy, then kinks moved between grid points) within ``tol`` (sorted x).

    Greedy: each segment runs from its knot to the farthest grid point whose chord
    stays within ``tol`` of every grid point it spans. Then each pair of adjacent
    interior knots is replaced by the intersection of its neighbouring segments'
    lines where that keeps the error bound (a kink between two grid points costs
    one knot, not two).
    """
    n = xs.size
    knots = [0]
    i = 0
    while i < n - 1:
        j = i + 1
        while j + 1 < n:
            seg = slice(i, j + 2)
            chord = ys[i] + (ys[j + 1] - ys[i]) * (xs[seg] - xs[i]) / (xs[j + 1] - xs[i])
            if np.max(np.abs(chord - ys[seg])) > tol:
                break
            j += 1
        knots.append(j)
        i = j
    kx = [float(xs[k]) for k in knots]
    ky = [float(ys[k]) for k in knots]
    # merge: knots p = k-1, q = k (interior, adjacent) -> intersection of lines (p-1,p) and (q,q+1)
    k = 2
    while k < len(kx) - 1:
        p, q = k - 1, k
        s1 = (ky[p] - ky[p - 1]) / (kx[p] - kx[p - 1])
        s2 = (ky[q + 1] - ky[q]) / (kx[q + 1] - kx[q])
        merged = False
        if abs(s1 - s2) > 1e-12:
            xi = (ky[q] - ky[p] + s1 * kx[p] - s2 * kx[q]) / (s1 - s2)
            if kx[p - 1] < xi < kx[q + 1]:
                yi = ky[p] + s1 * (xi - kx[p])
                cx = kx[:p] + [xi] + kx[q + 1:]
                cy = ky[:p] + [yi] + ky[q + 1:]
                if _max_err(xs, ys, cx, cy) <= tol * (1 + 1e-9) + 1e-12:
                    kx, ky, merged = cx, cy, True
        if not merged:
            k += 1
    # drop knots that the error bound does not need (collinear neighbours)
    k = 1
    while k < len(kx) - 1:
        cx, cy = kx[:k] + kx[k + 1:], ky[:k] + ky[k + 1:]
        if _max_err(xs, ys, cx, cy) <= tol * (1 + 1e-9) + 1e-12:
            kx, ky = cx, cy
        else:
            k += 1
    return np.asarray(kx), np.asarray(ky)


def measure_speedup(
    learned: torch.nn.Module, knots_x: Sequence[float] | np.ndarray,
    knots_y: Sequence[float] | np.ndarray, *,
    units: int = 64, batch: int = 1024, repeats: int = 20, device: str = "cpu",
) -> dict[str, float]:
    """Forward time of the learned vs the distilled activation on a ``(1, batch, units)`` input.

    Returns {learned_s, distilled_s, speedup} (speedup = learned / distilled; > 1: faster).
    """
    gen = torch.Generator().manual_seed(0)
    lo, hi = float(knots_x[0]), float(knots_x[-1])
    x = (torch.rand(1, batch, units, generator=gen) * (hi - lo) + lo).to(device)
    distilled = PiecewiseLinear(knots_x, knots_y).to(device)
    learned = learned.to(device)
    t_learned = time_forward(learned, x, repeats=repeats)
    t_distilled = time_forward(distilled, x, repeats=repeats)
    return {"learned_s": t_learned, "distilled_s": t_distilled,
            "speedup": t_learned / max(t_distilled, 1e-12)}


# --------------------------------------------------------------------------- a trial


def _clean(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def analyse_curves(
    *, family: str, family_params: Mapping[str, Any], curves: Sequence[Mapping[str, Any]],
    stats: Sequence[Mapping[str, Any]] = (), linear_tol: float = DEFAULT_LINEAR_TOL,
    distil_rel_error: float = DEFAULT_DISTIL_REL_ERROR, top: int = TOP_CLOSED_FORMS,
    time_speedup: bool = True,
) -> list[dict[str, Any]]:
    """Fit rows for each layer's final-epoch curve, ready for ``store.repo.add_fits``.

    Per layer: the ``top`` closed forms (kind ``closed_form``), the line (kind
    ``linear``; extra says whether the layer is near-linear, i.e. prunable/mergeable,
    and for per-unit curves the fraction of near-linear units), and the distilled
    piecewise-linear curve (kind ``distilled``, knots and speed-up in extra). Per-unit
    curves are analysed on their pointwise median unit.
    """
    rows: list[dict[str, Any]] = []
    if getattr(get_activation(family), "gated", False):
        # A gated unit's curve is its gate's response, not a function of one input:
        # closed forms, linearity and a piecewise-linear copy would describe half a layer.
        log.info("curve analysis skipped for %s: a gated unit has no pointwise curve", family)
        return rows
    for layer in sorted({int(c["layer"]) for c in curves}):
        last = max((c for c in curves if int(c["layer"]) == layer), key=lambda c: int(c["epoch"]))
        epoch = int(last["epoch"])
        x = np.asarray(last["x"], dtype=np.float64).ravel()
        y_all = np.asarray(last["y"], dtype=np.float64).reshape(-1, x.size)
        y = np.median(y_all, axis=0)
        stat = next((s for s in stats if int(s["layer"]) == layer and int(s["epoch"]) == epoch), None)
        w = density_weights(x, stat["hist"], stat["edges"]) if stat is not None else None
        base = {"layer": layer, "epoch": epoch, "unit": None}
        for fit in fit_closed_forms(x, y, w)[:top]:
            rows.append({**base, "kind": "closed_form", "family": fit.family, "params": fit.params,
                         "rmse": _clean(fit.rmse), "max_error": _clean(fit.max_error),
                         "r2": _clean(fit.r2), "extra": {"formula": fit.formula}})
        slope, intercept, r2, rel = linearity(x, y, w)
        unit_linear = [linearity(x, yu, w)[3] <= linear_tol for yu in y_all]
        near = rel <= linear_tol
        pred = slope * x + intercept
        rmse, max_err, _ = _scores(y, pred, w if w is not None else np.full(x.size, 1.0 / x.size))
        rows.append({**base, "kind": "linear", "family": "linear",
                     "params": {"slope": slope, "intercept": intercept},
                     "rmse": _clean(rmse), "max_error": _clean(max_err), "r2": _clean(r2),
                     "extra": {"near_linear": near, "prunable": near, "max_rel_error": rel,
                               "tol": linear_tol, "units": len(unit_linear),
                               "near_linear_unit_fraction": float(np.mean(unit_linear))}})
        inside = w > 0 if w is not None else np.ones(x.size, dtype=bool)
        max_error = distil_rel_error * max(float(np.ptp(y[inside])), 1e-6)
        kx, ky = distil_piecewise_linear(x, y, max_error)
        dist_pred = np.interp(x, kx, ky)
        rmse, max_err, r2 = _scores(y, dist_pred, w if w is not None else np.full(x.size, 1.0 / x.size))
        extra: dict[str, Any] = {"knots_x": kx.tolist(), "knots_y": ky.tolist(),
                                 "target_max_error": max_error}
        if time_speedup:
            try:
                units = int(y_all.shape[0]) if y_all.shape[0] > 1 else 64  # per-unit: its U
                learned = activation_from_params(family, family_params, last.get("params") or {},
                                                 units)
                extra.update(measure_speedup(learned, kx, ky, units=units, batch=256, repeats=10))
            except Exception as exc:  # timing is a bonus; the fit stands without it
                log.debug("speed-up of trial layer %d not measured: %s", layer, exc)
        rows.append({**base, "kind": "distilled", "family": "piecewise_linear",
                     "params": {"knots": len(kx), "max_error": max_error},
                     "rmse": _clean(rmse), "max_error": _clean(max_err), "r2": _clean(r2),
                     "extra": extra})
    return rows
