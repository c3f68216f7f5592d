"""Pre-activation statistics and learned-curve sampling for a population.

Both run on a fixed sample of validation rows at a few recorded epochs, so they
show how the inputs each activation sees evolve, and what the (learned) activation
looks like over exactly that range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .activations import Activation
from .network import PopulationNet

QUANTILES: tuple[float, ...] = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)
# Above this many values per candidate and layer, quantiles and the histogram come
# from an evenly strided subsample (min, max, mean, std and dead_fraction never do).
MAX_SAMPLED_VALUES = 1 << 20
# Elements per evaluation chunk (K x rows x activation elements per row).
CHUNK_ELEMENTS = 1 << 24


def chunk_rows(net: PopulationNet, n_rows: int, budget: int = CHUNK_ELEMENTS) -> int:
    """Rows per no-grad chunk so that one chunk's activations stay near ``budget`` elements."""
    return int(max(1, min(n_rows, budget // (net.k * net.elements_per_row()))))


def _quantile_key(q: float) -> str:
    return f"{q:g}"


class _LayerAccumulator:
    """Streaming min/max/sum/sum-of-squares/unit-max plus a subsample, over row chunks."""

    def __init__(self, total_rows: int):
        self.total_rows = total_rows
        self.count = 0
        self.stride: int | None = None
        self.mn: torch.Tensor | None = None
        self.mx: torch.Tensor | None = None
        self.s: torch.Tensor | None = None
        self.ss: torch.Tensor | None = None
        self.unit_max: torch.Tensor | None = None
        self.samples: list[torch.Tensor] = []

    def add(self, z: torch.Tensor, rows: int) -> None:
        k, n, units = z.shape  # (K, N, U): N = rows x positions
        v = z.reshape(k, n * units)
        if self.stride is None:
            per_candidate = self.total_rows * (n // max(rows, 1)) * units
            stride = max(1, math.ceil(per_candidate / MAX_SAMPLED_VALUES))
            while stride > 1 and math.gcd(stride, units) != 1:  # cover every unit evenly
                stride += 1
            self.stride = stride
        mn, mx = v.amin(1), v.amax(1)  # (K,)
        s, ss = v.sum(1, dtype=torch.float64), (v * v).sum(1, dtype=torch.float64)
        umax = z.amax(1)  # (K, U)
        if self.mn is None:
            self.mn, self.mx, self.s, self.ss, self.unit_max = mn, mx, s, ss, umax
        else:
            assert self.mx is not None and self.s is not None and self.ss is not None
            assert self.unit_max is not None
            self.mn = torch.minimum(self.mn, mn)
            self.mx = torch.maximum(self.mx, mx)
            self.s, self.ss = self.s + s, self.ss + ss
            self.unit_max = torch.maximum(self.unit_max, umax)
        self.count += n * units
        self.samples.append(v[:, :: self.stride])

    def finish(self, positions: Sequence[int], hist_bins: int) -> list[dict[str, Any]]:
        assert self.mn is not None and self.mx is not None and self.s is not None
        assert self.ss is not None and self.unit_max is not None
        sample = torch.cat(self.samples, dim=1).float()  # (K, M)
        if sample.device.type == "cpu":  # numpy's sort is about twice as fast as torch's on CPU
            sorted_v = torch.from_numpy(np.sort(sample.numpy(), axis=1))
        else:
            sorted_v = sample.sort(dim=1).values
        m = sorted_v.shape[1]
        q = torch.tensor(QUANTILES, dtype=torch.float64) * (m - 1)
        lo_i, hi_i = q.floor().long(), q.ceil().long()
        frac = (q - lo_i.double()).float().to(sorted_v.device)
        qv = torch.lerp(sorted_v[:, lo_i.to(sorted_v.device)], sorted_v[:, hi_i.to(sorted_v.device)],
                        frac)  # (K, Q)
        mean = self.s / self.count
        std = (self.ss / self.count - mean * mean).clamp_min(0).sqrt()
        lo, hi = self.mn.float(), self.mx.float()
        degenerate = ~(hi > lo)
        lo = torch.where(degenerate, lo - 0.5, lo)
        hi = torch.where(degenerate, hi + 0.5, hi)
        lo = torch.nan_to_num(lo, nan=-1.0, posinf=1.0, neginf=-1.0)
        hi = torch.nan_to_num(hi, nan=1.0, posinf=1.0, neginf=-1.0)
        scaled = (sample - lo[:, None]) / (hi - lo).clamp_min(1e-30)[:, None] * hist_bins
        bins = scaled.nan_to_num(0.0).floor().clamp(0, hist_bins - 1).long()  # (K, M)
        counts = torch.zeros(sample.shape[0], hist_bins, device=sample.device)
        counts.scatter_add_(1, bins, torch.ones_like(sample))
        hist = counts / max(m, 1)  # fraction of values per bin
        t = torch.linspace(0, 1, hist_bins + 1, device=sample.device)
        edges = lo[:, None] + (hi - lo)[:, None] * t  # (K, bins+1)
        dead = (self.unit_max <= 0).float().mean(1)  # (K,)

        def cpu(x: torch.Tensor) -> np.ndarray:
            return x.detach().cpu().numpy()

        mn_np, mx_np, mean_np, std_np = cpu(self.mn), cpu(self.mx), cpu(mean), cpu(std)
        qv_np, hist_np, edges_np, dead_np = cpu(qv), cpu(hist), cpu(edges), cpu(dead)
        out = []
        for pos in positions:
            out.append({
                "min": float(mn_np[pos]),
                "max": float(mx_np[pos]),
                "mean": float(mean_np[pos]),
                "std": float(std_np[pos]),
                "quantiles": {_quantile_key(qq): float(qv_np[pos, j]) for j, qq in enumerate(QUANTILES)},
                "hist": hist_np[pos].astype(np.float32),
                "edges": edges_np[pos].astype(np.float32),
                "dead_fraction": float(dead_np[pos]),
            })
        return out


@torch.no_grad()
def preact_stats(
    net: PopulationNet,
    x: torch.Tensor,
    *,
    hist_bins: int = 64,
    positions: Sequence[int] | None = None,
) -> list[list[dict[str, Any]]]:
    """Statistics of each hidden layer's pre-activation on rows ``x``: ``[layer][j]``.

    ``j`` runs over ``positions`` (candidate positions in the net; default all).
    Each dict: min, max, mean, std (population), quantiles {"0.001": v, ...}
    (:data:`QUANTILES`), hist (float32 ``(hist_bins,)``: the fraction of values in
    each bin), edges (float32 ``(hist_bins + 1,)``, evenly over [min, max]),
    dead_fraction: the fraction of units (channels for conv layers) whose
    pre-activation is <= 0 for every row (and position) in the sample; for
    ReLU-like families these units output 0 everywhere and get no gradient: dead.
    The net runs in eval mode (running batch-norm statistics, no dropout).
    """
    positions = list(range(net.k)) if positions is None else list(positions)
    was_training = net.training
    net.eval()
    try:
        n = x.shape[0]
        step = chunk_rows(net, n)
        accs = [_LayerAccumulator(n) for _ in net.layers]
        for start in range(0, n, step):
            xb = x[start : start + step]
            pre: list[torch.Tensor] = []
            net(xb, preacts=pre)
            for acc, z in zip(accs, pre, strict=True):
                acc.add(z, xb.shape[0])
        return [acc.finish(positions, hist_bins) for acc in accs]
    finally:
        net.train(was_training)


def curve_range(q_lo: float, q_hi: float, margin: float = 0.1) -> tuple[float, float]:
    """The curve grid's range: [q0.001, q0.999] widened by ``margin`` of its span each side.

    A degenerate range (non-finite, or a span near 0) is widened to include [-1, 1].
    """
    if not (math.isfinite(q_lo) and math.isfinite(q_hi)):
        return -1.0, 1.0
    span = q_hi - q_lo
    if span <= 1e-6 * max(1.0, abs(q_lo), abs(q_hi)):
        return min(q_lo, -1.0), max(q_hi, 1.0)
    return q_lo - margin * span, q_hi + margin * span


def activation_params(act: Activation, pos: int) -> dict[str, list[Any]]:
    """Candidate ``pos``'s learned tensors and per-candidate values of one activation, as lists."""
    out: dict[str, list[Any]] = {}
    for name, t in list(act.named_parameters()) + list(act.named_buffers()):
        value = t[pos].detach().cpu().tolist()
        out[name] = value if isinstance(value, list) else [value]
    return out


@torch.no_grad()
def sample_curves(
    net: PopulationNet,
    stats: list[list[dict[str, Any]]],
    positions: Sequence[int],
    curve_points: int = 201,
) -> list[list[dict[str, Any] | None]]:
    """Sample each layer's activation of each candidate over its observed range: ``[layer][j]``.

    ``stats`` is :func:`preact_stats`'s output for the same ``positions``. Each dict:
    x float32 ``(G,)``, y float32 ``(U', G)`` (U' = 1 for fixed/per-layer families, U for
    per-unit ones) and params. A candidate whose family has no 1-D curve (``curve()``
    returns None, e.g. maxout) gets None; a layer where no candidate has one, an
    empty list.
    """
    out: list[list[dict[str, Any] | None]] = []
    for layer, act in enumerate(net.acts):
        assert isinstance(act, Activation)
        rows: list[dict[str, Any] | None] = []
        for j, pos in enumerate(positions):
            q = stats[layer][j]["quantiles"]
            lo, hi = curve_range(q[_quantile_key(QUANTILES[0])], q[_quantile_key(QUANTILES[-1])])
            grid = torch.linspace(lo, hi, curve_points, dtype=torch.float32)  # (G,)
            leaf, local = act.locate(pos)  # a mixed layer: the candidate's own family
            y = leaf.candidate_curve(grid, local)  # (U', G) or None
            if y is None:
                rows.append(None)
                continue
            rows.append({
                "x": grid.numpy().astype(np.float32),
                "y": y.detach().cpu().numpy().astype(np.float32),
                "params": activation_params(leaf, local),
            })
        out.append(rows if any(r is not None for r in rows) else [])
    return out
