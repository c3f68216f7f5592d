"""KAN-style spline activation: a SiLU residual plus a learned cubic B-spline.

The spline lives on a uniform grid of G intervals over ``[-grid_range, grid_range]``,
extended by 3 knots on each side (so G+3 cubic basis functions cover the range
fully); outside the extended knots only the SiLU residual remains, which keeps the
function well-defined for any input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from .base import SHARING, Activation, Layout, ParamSpec, register

ORDER = 3  # cubic


def bspline_basis(x: torch.Tensor, knots: torch.Tensor, order: int = ORDER) -> torch.Tensor:
    """Cox–de Boor recursion, vectorised over the knots: ``x (...)`` -> ``(..., len(knots)-order-1)``."""
    z = x.unsqueeze(-1)  # (..., 1)
    basis = ((z >= knots[:-1]) & (z < knots[1:])).to(x.dtype)  # (..., T-1) order 0
    for p in range(1, order + 1):
        left = (z - knots[: -(p + 1)]) / (knots[p:-1] - knots[: -(p + 1)])
        right = (knots[p + 1 :] - z) / (knots[p + 1 :] - knots[1:-p])
        basis = left * basis[..., :-1] + right * basis[..., 1:]
    return basis


def uniform_cubic_basis(x: torch.Tensor, grid: int, grid_range: float) -> torch.Tensor:
    """The same basis as :func:`bspline_basis` on the extended uniform knots, in closed form.

    On uniform knots every basis function is a shifted cardinal cubic B-spline,
    ``N(v) = (relu(2-|v|)^3 - 4*relu(1-|v|)^3)/6`` with v the distance to its centre in
    grid steps: about half the elementwise work (and autograd memory) of the recursion.
    ``x (...)`` -> ``(..., grid+3)``.
    """
    h = 2 * grid_range / grid
    centres = torch.arange(grid + ORDER, device=x.device, dtype=x.dtype)  # (G+3,)
    # knot 0 sits at -range - 3h; basis i is centred on knot i+2
    v = ((x.unsqueeze(-1) + grid_range + (ORDER - 2) * h) / h - centres).abs()
    return (torch.relu(2 - v).pow(3) - 4 * torch.relu(1 - v).pow(3)) / 6


def _randn_per_candidate(seeds: Sequence[int] | None, k: int) -> Callable[..., torch.Tensor]:
    """``randn(*shape) -> (K, *shape)``: candidate i from its own seed when seeds are given
    (so a population member starts like its K=1 run), else from the global generator."""
    if seeds is None:
        return lambda *shape: torch.randn(k, *shape)
    if len(seeds) != k:
        raise ValueError(f"{len(seeds)} init seeds for {k} candidates")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def draw(*shape: int) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in gens])

    return draw



@register
class Spline(Activation):
    """``w_b*silu(z) + w_s*sum_i c_i B_i(z)``; starts near SiLU (small random ``c``)."""

    name = "spline"
    formula = "w_b*silu(z) + w_s*sum_i c_i*B_i(z)  (cubic B-splines; w_b, w_s, c learned)"
    trainable = True
    fused = True  # runs through models.kernels (compiled where it pays)
    reference = "Liu et al. 2024 (KAN)"

    seeded_init = True  # the network passes one init seed per candidate

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp",
                 init_seeds: Sequence[int] | None = None):
        super().__init__(params, units, layout)
        g = int(self.structural["grid"])
        self.grid, self.grid_range = g, float(self.structural["grid_range"])
        u = self.param_units()
        self.w_b = nn.Parameter(torch.ones(self.k, u))  # (K, U')
        self.w_s = nn.Parameter(torch.ones(self.k, u))  # (K, U')
        std = self.per_candidate("coef_std").reshape(self.k, 1, 1)
        noise = _randn_per_candidate(init_seeds, self.k)(u, g + ORDER)
        self.c = nn.Parameter(noise * std)  # (K, U', G+3)

    @classmethod
    def element_flops(cls, structural: Mapping[str, Any]) -> int:
        return 40  # silu, four cubic basis values, their weighted sum

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            SHARING,
            ParamSpec("grid", "int", default=5, low=3, high=16, structural=True,
                      help="grid intervals G (G+3 basis functions)"),
            ParamSpec("grid_range", "float", default=2.0, low=1.0, high=4.0, step=0.5,
                      structural=True, help="the grid spans [-range, range]"),
            ParamSpec("coef_std", "float", default=0.1, low=1e-3, high=0.3, log=True,
                      learned=True, help="std of the initial spline coefficients"),
        ]

    def knots(self, x: torch.Tensor) -> torch.Tensor:
        """``(G+7,)`` extended uniform knots (not a buffer: buffers carry the K axis)."""
        r, h = self.grid_range, 2 * self.grid_range / self.grid
        n = self.grid + 2 * ORDER + 1
        return torch.linspace(-r - ORDER * h, r + ORDER * h, n, device=x.device, dtype=x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_b, w_s = self.view(self.w_b), self.view(self.w_s)
        if kernels.active():  # compiled inside kernels.compiling: Inductor fuses the unrolled form
            return _spline_fused(x, self.view(self.c), w_b, w_s, self.grid, self.grid_range)
        # Eagerly: one cubic per grid interval. Training, 4-7x faster forward and backward
        # than the (..., G+3) basis tensor at K=5-27, 128 rows, 64-256 units, G=5-14 (that
        # tensor was half of a mixed race's training steps on the small workload); without
        # gradients (validation, curves), 2-4x faster than the unrolled form at 450 rows.
        k, u = self.c.shape[0], self.c.shape[1]
        intervals = self.grid + 2 * ORDER + 1  # the padded grid's intervals, per (k, unit)
        base = self.view(torch.arange(k * u, device=x.device).reshape(k, u) * intervals)
        return _spline_local(x, self.c, base, w_b, w_s, self.grid, self.grid_range)


def _spline_unrolled(x: torch.Tensor, c: torch.Tensor, w_b: torch.Tensor, w_s: torch.Tensor,
                     grid: int, grid_range: float) -> torch.Tensor:
    """:meth:`Spline.forward` written for fusion: the G+3 basis functions unrolled.

    Every tensor stays the input's shape (no ``(..., G+3)`` basis tensor), so Inductor
    fuses the whole function into one loop over the elements (and one per parameter
    gradient). Same math as :func:`uniform_cubic_basis`: basis i is the cardinal cubic
    B-spline centred ``i - ORDER + 2`` steps from the range's left end.
    """
    h = 2 * grid_range / grid
    t = (x + grid_range + (ORDER - 2) * h) / h  # position in grid steps
    spline = torch.zeros_like(x)
    for i in range(grid + ORDER):
        v = (t - i).abs()
        basis = (torch.relu(2 - v).pow(3) - 4 * torch.relu(1 - v).pow(3)) / 6
        spline = spline + basis * c[..., i]
    return w_b * F.silu(x) + w_s * spline


_spline_fused = kernels.fused(_spline_unrolled)


#: The uniform cubic B-spline as a polynomial in ``u`` on one grid interval: row m is the
#: weight of coefficient ``c[j-1+m]`` in powers ``u^0 .. u^3`` (``(1-u)^3/6``,
#: ``(4-6u^2+3u^3)/6``, ``(1+3u+3u^2-3u^3)/6``, ``u^3/6``).
_CUBIC_ROWS = ((1.0, -3.0, 3.0, -1.0), (4.0, 0.0, -6.0, 3.0), (1.0, 3.0, 3.0, -3.0),
               (0.0, 0.0, 0.0, 1.0))


def _spline_local(x: torch.Tensor, c: torch.Tensor, base: torch.Tensor, w_b: torch.Tensor,
                  w_s: torch.Tensor, grid: int, grid_range: float) -> torch.Tensor:
    """:meth:`Spline.forward` from one cubic polynomial per grid interval.

    On interval ``j`` (``u = t - j``, ``t`` the input's position in grid steps) only the
    bases ``j-1 .. j+2`` are non-zero, so the spline there is one cubic in ``u`` whose 4
    coefficients are a fixed mix of ``c[j-1 .. j+2]`` (:data:`_CUBIC_ROWS`). Those are
    computed once per step for every interval of every candidate and unit (``c`` padded
    with zeros, so intervals on and beyond the extended knots hold 0), and each input
    reads its interval's 4 at ``base`` (its candidate and unit's first interval, broadcast
    like the input) and evaluates the cubic by Horner's rule: ~16 elementwise operations
    instead of a ``(..., G+3)`` basis tensor. ``t`` is clamped to ``[-2, G+4]``, where
    every basis is 0 and so is the spline's slope.
    """
    n = grid + ORDER
    h = 2 * grid_range / grid
    mix = torch.tensor(_CUBIC_ROWS, dtype=c.dtype, device=c.device) / 6
    table = (F.pad(c, (ORDER, ORDER + 1)).unfold(-1, 4, 1) @ mix).reshape(-1)  # (K*U'*(n+4)*4,)
    t = ((x + grid_range + (ORDER - 2) * h) / h).clamp(-2.0, n + 1.0)
    j = torch.floor(t).detach()
    u = t - j
    # (the integer clamp only matters for NaN inputs: a diverged candidate stays NaN)
    at = (base + (j.long() + 2).clamp(0, n + ORDER)) * 4
    a0, a1, a2, a3 = (table.take(at + p) for p in range(4))
    return w_b * F.silu(x) + w_s * (((a3 * u + a2) * u + a1) * u + a0)
