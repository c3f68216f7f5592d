"""Trainable families: parameters learned with the weights (never weight-decayed).

Each learned tensor has shape ``(K, U', ...)`` with U' = 1 (``sharing=layer``)
or U (``sharing=unit``); its initial value per candidate comes from the sampled
parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .base import SHARING, Activation, Layout, ParamSpec, register


@register
class PReLU(Activation):
    name = "prelu"
    formula = "z if z > 0 else a*z  (a learned)"
    trainable = True
    weight_init = "kaiming_normal"
    reference = "He et al. 2015"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        init = self.per_candidate("a_init").reshape(self.k, 1).expand(self.k, self.param_units())
        self.a = nn.Parameter(init.clone())  # (K, U')

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [SHARING, ParamSpec("a_init", "float", default=0.25, low=0.0, high=0.5,
                                   learned=True, help="initial negative slope")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, x * self.view(self.a))
