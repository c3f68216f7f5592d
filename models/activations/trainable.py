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

from ..kernels import fused
from .base import BASE_FUNCTIONS, SHARING, Activation, Layout, ParamSpec, register


def per_unit(act: Activation, key: str) -> torch.Tensor:
    """``(K, U')`` initial values of a learned tensor from one sampled parameter."""
    return act.per_candidate(key).reshape(act.k, 1).expand(act.k, act.param_units()).clone()


def base_choices() -> tuple[str, ...]:
    """Base functions a family may start from, in registration order (stable for Optuna).

    ``identity`` is left out: an affine map or meta-neuron over it is linear, so
    sampling it spends trials on networks that collapse to one linear layer.
    """
    return tuple(name for name in BASE_FUNCTIONS if name != "identity")


_BASE_FLOPS = 5  # a typical smooth base function (silu, tanh, ...)


@register
class PReLU(Activation):
    name = "prelu"
    flops_per_element = 2
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
        # relu(z) - a*relu(-z): 8x faster forward+backward on CPU than the torch.where
        # form (3.9 vs 0.50 ms at K=32, 128 rows, 64 units), the learned a's gradient included
        return torch.relu(x) - self.view(self.a) * torch.relu(-x)


@register
class AGSig(Activation):
    """Sigmoid with learned amplitude ``a`` and gain ``b`` (a smooth, bounded family)."""

    name = "agsig"
    flops_per_element = 6
    formula = "a/(1 + exp(-b*z))  (a, b learned)"
    trainable = True
    weight_init = "xavier_normal"
    reference = "Chen & Chang 1996 (sigmoid with adaptive gain and amplitude)"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        self.a = nn.Parameter(per_unit(self, "a_init"))  # (K, U')
        self.b = nn.Parameter(per_unit(self, "b_init"))  # (K, U')

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            SHARING,
            ParamSpec("a_init", "float", default=1.0, low=0.5, high=4.0, log=True, learned=True,
                      help="initial amplitude"),
            ParamSpec("b_init", "float", default=1.0, low=0.25, high=4.0, log=True, learned=True,
                      help="initial gain"),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.view(self.a) * torch.sigmoid(self.view(self.b) * x)


@register
class FReLU(Activation):
    """ReLU with a learned input shift ``d`` and output bias ``e`` (negative outputs allowed)."""

    name = "frelu"
    flops_per_element = 3
    formula = "relu(z + d) + e  (d, e learned)"
    trainable = True
    weight_init = "kaiming_normal"
    reference = "Qiu et al. 2018 (flexible ReLU), with a learned input shift"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        self.d = nn.Parameter(per_unit(self, "d_init"))  # (K, U')
        self.e = nn.Parameter(per_unit(self, "e_init"))  # (K, U')

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            SHARING,
            ParamSpec("d_init", "float", default=0.0, low=-0.5, high=0.5, learned=True,
                      help="initial input shift"),
            ParamSpec("e_init", "float", default=0.0, low=-0.5, high=0.5, learned=True,
                      help="initial output bias"),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.view(self.d)) + self.view(self.e)


@register
class Affine(Activation):
    """Any base function with learned input and output affine maps (the four-way family).

    With the default init (a, b, c, d) = (1, 1, 0, 0) it starts exactly as its base.
    """

    name = "affine"
    formula = "a*f(b*z + c) + d  (a, b, c, d learned; f a base function)"
    trainable = True
    reference = "generalises PReLU-style slopes and swish-style gains to any base"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        self.base = str(self.structural["base"])  # looked up per call: the module stays picklable
        self.a = nn.Parameter(per_unit(self, "a_init"))  # (K, U')
        self.b = nn.Parameter(per_unit(self, "b_init"))  # (K, U')
        self.c = nn.Parameter(per_unit(self, "c_init"))  # (K, U')
        self.d = nn.Parameter(per_unit(self, "d_init"))  # (K, U')

    @classmethod
    def element_flops(cls, structural: Mapping[str, Any]) -> int:
        return 4 + _BASE_FLOPS  # a*f(b*z+c)+d: two multiply-adds around the base

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            SHARING,
            ParamSpec("base", "categorical", default="relu", choices=base_choices(),
                      structural=True, help="the base function f"),
            ParamSpec("a_init", "float", default=1.0, low=0.5, high=2.0, log=True, learned=True,
                      help="initial output scale"),
            ParamSpec("b_init", "float", default=1.0, low=0.5, high=2.0, log=True, learned=True,
                      help="initial input scale"),
            ParamSpec("c_init", "float", default=0.0, low=-0.5, high=0.5, learned=True,
                      help="initial input shift"),
            ParamSpec("d_init", "float", default=0.0, low=-0.5, high=0.5, learned=True,
                      help="initial output shift"),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = BASE_FUNCTIONS[self.base].fn
        inner = self.view(self.b) * x + self.view(self.c)
        return self.view(self.a) * f(inner) + self.view(self.d)


@register
class APL(Activation):
    """Adaptive piecewise-linear: ReLU plus S learned hinges (slopes ``a_s``, positions ``b_s``).

    Hinge positions start evenly spread over ``[-hinge_range, hinge_range]`` (cell
    centres); slopes start at ``a_init`` (0 = exactly ReLU).
    """

    name = "apl"
    fused = True  # runs through models.kernels (compiled where it pays)
    formula = "relu(z) + sum_s a_s*relu(-z + b_s)  (a_s, b_s learned)"
    trainable = True
    weight_init = "kaiming_normal"
    reference = "Agostinelli et al. 2015"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        s = int(self.structural["hinges"])
        self.a = nn.Parameter(per_unit(self, "a_init")[..., None].repeat(1, 1, s))  # (K, U', S)
        centres = (2 * torch.arange(s, dtype=torch.float32) + 1) / s - 1  # (S,) in (-1, 1)
        spread = per_unit(self, "hinge_range")[..., None]  # (K, U', 1)
        self.b = nn.Parameter(spread * centres)  # (K, U', S)

    @classmethod
    def element_flops(cls, structural: Mapping[str, Any]) -> int:
        return 1 + 3 * int(structural.get("hinges", 2))  # relu + per hinge: add, relu, multiply-add

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            SHARING,
            ParamSpec("hinges", "int", default=2, low=1, high=6, structural=True,
                      help="number of learned hinges S"),
            ParamSpec("a_init", "float", default=0.0, low=-0.5, high=0.5, learned=True,
                      help="initial hinge slope (0 = start as ReLU)"),
            ParamSpec("hinge_range", "float", default=1.0, low=0.25, high=3.0, log=True,
                      learned=True, help="initial hinges spread over [-range, range]"),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _apl_fused(x, self.view(self.a), self.view(self.b))


def _apl_unrolled(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """APL unrolled over its S hinges: every tensor stays the input's shape (no ``(..., S)``
    hinge tensor), so eagerly it is S small passes and compiled one loop (fwd and bwd).
    ``a``, ``b``: ``(.., S)`` broadcast views of the learned slopes and positions."""
    y = torch.relu(x)
    for s in range(a.shape[-1]):
        y = y + a[..., s] * torch.relu(b[..., s] - x)
    return y


_apl_fused = fused(_apl_unrolled)
