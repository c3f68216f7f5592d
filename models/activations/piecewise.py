"""A distilled activation: a piecewise-linear curve through knots, evaluated with torch.

Not a registered (searchable) family: it is what curve analysis distils a learned
activation into, so that its inference cost can be compared with the learned one.
Also here: rebuilding one candidate's learned activation from the parameters the
engine stored with its curve, and timing an activation's forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import Activation, get_activation


class PiecewiseLinear(nn.Module):
    """``y = s_i * x + t_i`` on the segment ``i`` that ``x`` falls in (knots sorted by x).

    Inside the knots it interpolates linearly between them; outside it extends the
    first and last segments. Shared by every unit (one curve per layer).
    """

    def __init__(self, knots_x: Sequence[float], knots_y: Sequence[float]):
        super().__init__()
        kx = torch.as_tensor(list(knots_x), dtype=torch.float32)
        ky = torch.as_tensor(list(knots_y), dtype=torch.float32)
        if kx.ndim != 1 or kx.numel() < 2 or kx.shape != ky.shape:
            raise ValueError("a piecewise-linear curve needs at least two (x, y) knots of equal length")
        if not bool((kx[1:] > kx[:-1]).all()):
            raise ValueError("knots_x must be strictly increasing")
        slope = (ky[1:] - ky[:-1]) / (kx[1:] - kx[:-1])  # (n-1,)
        self.register_buffer("inner", kx[1:-1].contiguous())  # segment boundaries
        self.register_buffer("slope", slope)
        self.register_buffer("intercept", ky[:-1] - slope * kx[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.bucketize(x, self.inner)  # 0 .. n-2
        return torch.addcmul(self.intercept[idx], self.slope[idx], x)


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
