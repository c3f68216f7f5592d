"""Gated linear units: the layer before produces a value half and a gate half.

``GLU(z) = v * g(u)`` with ``z = [v, u]`` split along the unit axis, so a gated
family needs the projection before it to be twice as wide as its output
(:meth:`pre_units` = 2 x units, the maxout mechanism). By convention (Shazeer 2020,
"GLU Variants Improve Transformer") the hidden width of a gated network is scaled
by 2/3 so it has the parameters of the ungated one; the builders do that unless the
architecture says ``param_match: false`` (:func:`models.widths.hidden_width`).

These families are not pointwise: the output mixes two units. Their "curve" is the
gate's response, the multiplier ``g(u)`` applied to the value half as a function of
the gate pre-activation ``u`` (for swiglu, ``silu(u)``): that is what the dashboard
plots (labelled "gate response") and what the statistics' x range describes.
Closed-form fits and piecewise-linear distillation do not apply to them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from core.errors import InvalidInput

from .base import UNIT_DIM, Activation, register


def _identity(u: torch.Tensor) -> torch.Tensor:
    return u


class GatedActivation(Activation):
    """Base of the GLU variants: ``value * gate_fn(gate)`` over the two halves of dim 2."""

    pointwise = False
    gated: ClassVar[bool] = True
    gate_fn: ClassVar[Callable[[torch.Tensor], torch.Tensor]] = staticmethod(torch.sigmoid)
    gate_flops: ClassVar[int] = 4
    curve_label: ClassVar[str] = "gate response"

    def __init__(self, params: Any, units: int, layout: Any = "mlp"):
        super().__init__(params, units, layout)
        if self.units % 2:
            raise InvalidInput(
                f"{self.name}: a gated unit needs an even pre-activation width (value and gate "
                f"halves), got {self.units}"
            )

    @classmethod
    def pre_units(cls, units: int, structural: Mapping[str, Any]) -> int:
        return 2 * units

    @classmethod
    def post_units(cls, pre: int, structural: Mapping[str, Any]) -> int:
        return pre // 2

    @classmethod
    def element_flops(cls, structural: Mapping[str, Any]) -> int:
        # per pre-activation element: half of them go through the gate, then one multiply
        return (cls.gate_flops + 1 + 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = x.chunk(2, dim=UNIT_DIM)  # each (..., U/2, ...)
        return value * type(self).gate_fn(gate)

    def curve(self, x: torch.Tensor) -> torch.Tensor | None:
        """The gate response ``gate_fn(u)`` on the grid: ``(K, 1, G)``."""
        with torch.no_grad():
            y = type(self).gate_fn(x.to(self._probe_device()).float())  # (G,)
        return y.reshape(1, 1, -1).expand(self.k, 1, -1).contiguous()


@register
class GLU(GatedActivation):
    name = "glu"
    formula = "v*sigmoid(u) for z = [v, u] (curve: gate response sigmoid(u))"
    reference = "Dauphin et al. 2017"
    gate_fn = staticmethod(torch.sigmoid)


@register
class ReGLU(GatedActivation):
    name = "reglu"
    formula = "v*relu(u) for z = [v, u] (curve: gate response relu(u))"
    reference = "Shazeer 2020"
    gate_fn = staticmethod(torch.relu)
    gate_flops = 1


@register
class GeGLU(GatedActivation):
    name = "geglu"
    formula = "v*gelu(u) for z = [v, u] (curve: gate response gelu(u))"
    reference = "Shazeer 2020"
    gate_fn = staticmethod(F.gelu)
    gate_flops = 8


@register
class SwiGLU(GatedActivation):
    name = "swiglu"
    formula = "v*silu(u) for z = [v, u] (curve: gate response silu(u))"
    reference = "Shazeer 2020"
    gate_fn = staticmethod(F.silu)
    gate_flops = 5


@register
class Bilinear(GatedActivation):
    name = "bilinear"
    formula = "v*u for z = [v, u] (curve: gate response u)"
    reference = "Shazeer 2020 (bilinear GLU variant); Mnih & Hinton 2007"
    gate_fn = staticmethod(_identity)
    gate_flops = 0
