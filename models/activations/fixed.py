"""Fixed families: their shape is chosen by the search, not learned.

Sampled values (leaky slope, ELU alpha, ...) are per-candidate buffers with a
leading K axis, so one module serves a whole population.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .base import Activation, Layout, ParamSpec, register, register_base


@register
class ReLU(Activation):
    name = "relu"
    formula = "max(0, z)"
    weight_init = "kaiming_normal"
    reference = "Nair & Hinton 2010"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


register_base("relu", torch.relu, "max(0, z)")


@register
class LeakyReLU(Activation):
    name = "leaky_relu"
    formula = "z if z > 0 else slope*z"
    weight_init = "kaiming_normal"
    reference = "Maas et al. 2013"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        self.register_buffer("slope", self.per_candidate("slope").reshape(self.k, 1))  # (K, 1)

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [ParamSpec("slope", "float", default=0.01, low=1e-3, high=0.3, log=True,
                          help="negative-side slope")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, x * self.view(self.slope))


register_base("leaky_relu", lambda z: F.leaky_relu(z, 0.01), "leaky_relu(z, 0.01)")
