"""A distilled activation: a piecewise-linear curve through knots, evaluated with torch.

Not a registered (searchable) family: it is what curve analysis distils a learned
activation into, so that its inference cost and accuracy can be compared with the
learned one, and what a distilled export's ``torch.export`` program runs.
Also here: rebuilding one candidate's learned activation from the parameters the
engine stored with its curve, and timing an activation's forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .base import UNIT_DIM, Activation, get_activation

# Above this many interior knots a bucketize lookup is cheaper than ReLU hinges
# (measured, bench/README.md: CPU about 16; an H100 about 2, where each hinge is a
# separate memory-bound kernel). An exported program keeps the choice it was traced with.
MAX_HINGES = 16
MAX_HINGES_CUDA = 2


class PiecewiseLinear(nn.Module):
    """``y = s_i * x + t_i`` on the segment ``i`` that ``x`` falls in (knots sorted by x).

    Inside the knots it interpolates linearly between them; outside it extends the
    first and last segments. Knots of shape ``(n,)`` give one curve shared by every
    unit (one curve per layer); knots of shape ``(U, n)`` give each unit its own curve
    (a per-unit learned family), the unit axis being dim 2 of the input as in every
    activation layout (``(K, B, U)`` or ``(B, K, U, H, W)``). :func:`pad_knots` brings
    per-unit knot lists of different lengths to one ``n``.
    """

    inner: torch.Tensor
    slope: torch.Tensor
    intercept: torch.Tensor

    def __init__(self, knots_x: Any, knots_y: Any):
        super().__init__()
        kx = torch.as_tensor(np.asarray(knots_x, dtype=np.float32))
        ky = torch.as_tensor(np.asarray(knots_y, dtype=np.float32))
        if kx.ndim not in (1, 2) or kx.shape[-1] < 2 or kx.shape != ky.shape:
            raise ValueError("a piecewise-linear curve needs at least two (x, y) knots of equal "
                             "length: shape (n,) for one curve or (units, n) for one per unit")
        if not bool((kx[..., 1:] > kx[..., :-1]).all()):
            raise ValueError("knots_x must be strictly increasing")
        slope = (ky[..., 1:] - ky[..., :-1]) / (kx[..., 1:] - kx[..., :-1])  # (n-1,) or (U, n-1)
        self.per_unit = kx.ndim == 2
        self.register_buffer("inner", kx[..., 1:-1].clone())  # segment boundaries (own storage)
        self.register_buffer("slope", slope.contiguous())
        self.register_buffer("intercept", (ky[..., :-1] - slope * kx[..., :-1]).contiguous())

    @property
    def n_knots(self) -> int:
        return int(self.slope.shape[-1]) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_knots - 2 <= (MAX_HINGES_CUDA if x.is_cuda else MAX_HINGES):
            return self._hinges(x)
        if not self.per_unit:
            idx = torch.bucketize(x, self.inner)  # 0 .. n-2
            return torch.addcmul(self.intercept[idx], self.slope[idx], x)
        xu = x.movedim(UNIT_DIM, -1)  # (..., U)
        shape = xu.shape
        flat = xu.reshape(-1, shape[-1]).t().contiguous()  # (U, M)
        idx = torch.searchsorted(self.inner, flat)  # (U, M), same side as bucketize
        y = torch.addcmul(self.intercept.gather(1, idx), self.slope.gather(1, idx), flat)
        return y.t().reshape(shape).movedim(-1, UNIT_DIM)

    def _hinges(self, x: torch.Tensor) -> torch.Tensor:
        """The same curve as a line plus one ReLU hinge per interior knot.

        ``y = t_0 + s_0 x + sum_j (s_j - s_{j-1}) relu(x - k_j)``: elementwise only, so
        for a few knots it is several times faster than a bucketize-and-gather lookup
        on CPU (measured: bench/README.md).
        """
        slope, inner = self.slope, self.inner
        intercept = self.intercept[..., 0]
        if self.per_unit:  # (U, n-1): parameters broadcast along the unit axis of x
            shape = [1] * x.dim()
            shape[UNIT_DIM] = slope.shape[0]
            slope = slope.t().reshape(slope.shape[1], *shape)  # (n-1, 1, 1, U, ...)
            inner = inner.t().reshape(inner.shape[1], *shape)  # (n-2, 1, 1, U, ...)
            intercept = intercept.reshape(shape)
        y = torch.addcmul(intercept, slope[0], x)
        for j in range(self.n_knots - 2):
            y = torch.addcmul(y, slope[j + 1] - slope[j], torch.relu(x - inner[j]))
        return y


def pad_knots(knots: Sequence[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit ``(knots_x, knots_y)`` of different lengths as two ``(U, n)`` arrays.

    Shorter lists get extra knots on their longest segment, on the line (the curve
    is unchanged), so one tensor holds every unit's curve.
    """
    if not knots:
        raise ValueError("no knots to pad")
    n = max(len(kx) for kx, _ in knots)
    xs, ys = [], []
    for kx, ky in knots:
        kx = [float(v) for v in kx]
        ky = [float(v) for v in ky]
        while len(kx) < n:
            i = max(range(len(kx) - 1), key=lambda j: kx[j + 1] - kx[j])
            kx.insert(i + 1, (kx[i] + kx[i + 1]) / 2)
            ky.insert(i + 1, (ky[i] + ky[i + 1]) / 2)
        xs.append(kx)
        ys.append(ky)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def activation_from_params(
    family: str, family_params: Mapping[str, Any], params: Mapping[str, Any], units: int
) -> Activation:
    """Candidate's learned activation (K=1) from ``models.stats.activation_params``'s output."""
    cls = get_activation(family)
    act = cls([dict(family_params)], units=units, layout="mlp")
    state = act.state_dict()
    for name, value in params.items():
        if name in state:
            t = torch.as_tensor(value, dtype=state[name].dtype).reshape(state[name].shape)
            state[name] = t
    act.load_state_dict(state)
    return act.eval()


@torch.no_grad()
def time_forward(module: nn.Module, x: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median seconds of one ``module(x)`` (CPU or the tensor's device)."""
    for _ in range(warmup):
        module(x)
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        module(x)
        sync()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]
