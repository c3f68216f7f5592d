"""Activations of recent architectures: squared ReLU, StarReLU, sine (SIREN), Gaussian.

squared_relu and sine are fixed (sine's frequency is searched); star_relu and
gaussian learn their parameters with the weights (per layer or per unit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import SHARING, Activation, Layout, ParamSpec, register
from .trainable import per_unit

# StarReLU's init (Yu et al. 2022, MetaFormer baselines): with z ~ N(0, 1),
# s*relu(z)^2 + b has mean 0 and variance 1 for s = 1/sqrt(1.25), b = -0.5*s.
STAR_S = 0.8944
STAR_B = -0.4472


@register
class SquaredReLU(Activation):
    name = "squared_relu"
    flops_per_element = 2
    formula = "relu(z)^2"
    weight_init = "kaiming_normal"
    reference = "So et al. 2021 (Primer)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


@register
class StarReLU(Activation):
    """``s*relu(z)^2 + b`` with learned scale and bias (init keeps unit variance)."""

    name = "star_relu"
    flops_per_element = 4
    formula = "s*relu(z)^2 + b  (s, b learned)"
    trainable = True
    weight_init = "kaiming_normal"
    reference = "Yu et al. 2022 (MetaFormer baselines)"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        self.s = nn.Parameter(per_unit(self, "s_init"))  # (K, U')
        self.b = nn.Parameter(per_unit(self, "b_init"))  # (K, U')

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            SHARING,
            ParamSpec("s_init", "float", default=STAR_S, low=0.25, high=2.0, log=True,
                      learned=True, help="initial scale (0.8944: unit variance for N(0,1) input)"),
            ParamSpec("b_init", "float", default=STAR_B, low=-1.0, high=0.5, learned=True,
                      help="initial bias (-0.4472: zero mean for N(0,1) input)"),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.view(self.b), torch.relu(x).square(), self.view(self.s))


@register
class Sine(Activation):
    """SIREN's ``sin(omega_0 z)``; the layer before is initialised as SIREN prescribes.

    Weights ~ U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0) (n = fan-in) so ``omega_0 z`` is
    spread over a few periods whatever omega_0 is, and the first layer of a network
    ~ U(-1/n, 1/n) (``weight_init = "siren"``, see :func:`models.widths.init_family_weight_`).
    """

    name = "sine"
    flops_per_element = 6
    formula = "sin(omega_0*z)"
    weight_init = "siren"
    reference = "Sitzmann et al. 2020 (SIREN)"
    omega: torch.Tensor  # (K, 1) buffer

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        self.register_buffer("omega", self.per_candidate("omega_0").reshape(self.k, 1))  # (K, 1)

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [ParamSpec("omega_0", "float", default=30.0, low=1.0, high=60.0, log=True,
                          help="frequency (SIREN uses 30); weights are scaled by 1/omega_0")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.view(self.omega) * x)


@register
class Gaussian(Activation):
    """``exp(-z^2 / (2 sigma^2))``: a bump, with a learned width per layer or unit."""

    name = "gaussian"
    flops_per_element = 5
    formula = "exp(-z^2/(2*sigma^2))  (sigma learned)"
    trainable = True
    weight_init = "xavier_normal"
    reference = "Ramasinghe & Lucey 2022 (Beyond periodicity: Gaussian activations)"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        self.sigma = nn.Parameter(per_unit(self, "sigma_init"))  # (K, U')

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [SHARING, ParamSpec("sigma_init", "float", default=1.0, low=0.2, high=4.0, log=True,
                                   learned=True, help="initial width sigma")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # |sigma| >= 1e-3: a step that drives sigma through 0 flips nothing and divides by no 0
        sigma = self.view(self.sigma).abs().clamp_min(1e-3)
        return torch.exp(-0.5 * (x / sigma).square())
