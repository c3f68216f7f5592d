"""Family-aware helpers shared by every network builder: widths and weight init.

Gated families need their projection split into value and gate halves
(``pre_units = 2 * units``); with ``param_match`` the hidden width is scaled by 2/3
first so the gated network has the parameters of the ungated one (Shazeer 2020; exact
for a transformer's d -> 2h -> d MLP, about 10% fewer where gated layers feed each other,
as a resnet's convs do).
SIREN's sine needs the layer before it initialised for its frequency ``omega_0``,
which differs per candidate, so it cannot be a plain scheme name of
:func:`models.layers.init_weight_`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .activations import Activation
from .layers import BatchedConv2d, BatchedLinear, init_weight_

#: Hidden-width factor of gated families at equal parameters (8/3 = 4 x 2/3 in a transformer).
GATED_WIDTH_FACTOR = 2.0 / 3.0


def is_gated(cls: type[Activation]) -> bool:
    """The family splits its input into value and gate halves (glu, swiglu, ...)."""
    return bool(getattr(cls, "gated", False))


def hidden_width(cls: type[Activation], width: int, param_match: bool) -> int:
    """The output width a layer of nominal ``width`` gets with family ``cls``."""
    if is_gated(cls) and param_match:
        return max(1, round(width * GATED_WIDTH_FACTOR))
    return int(width)


def init_family_weight_(layer: BatchedLinear | BatchedConv2d,
                        cls: type[Activation] | Sequence[type[Activation]],
                        params: Sequence[Mapping[str, Any]], gens: list[torch.Generator],
                        *, first: bool = False) -> None:
    """Initialise the layer feeding each candidate's activation, candidate i from ``gens[i]``.

    ``cls``: the family of every candidate, or one per candidate (a mixed population;
    each candidate is drawn exactly as in its own K=1 network).
    ``siren``: weights ~ U(-sqrt(6/n)/omega_0, +) with each candidate's omega_0, or
    U(-1/n, 1/n) for the first layer of the network (n = fan-in); bias ~ U(-1/sqrt(n), +)
    (PyTorch's default, as SIREN's reference code keeps). Other schemes go to
    :func:`models.layers.init_weight_`.
    """
    classes = [cls] * len(gens) if isinstance(cls, type) else list(cls)
    init_weight_(layer, [None if c.weight_init == "siren" else c.weight_init for c in classes],
                 gens)
    fan_in, _ = layer.fans()
    w_shape = tuple(layer.weight.shape[1:])
    with torch.no_grad():
        for i, (g, c) in enumerate(zip(gens, classes, strict=True)):
            if c.weight_init != "siren":
                continue
            resolved = c.resolve_params(params[i])
            omega = float(resolved.get("omega_0", 30.0))
            bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / omega
            layer.weight[i].copy_((torch.rand(w_shape, generator=g) * 2 - 1) * bound)
            if layer.bias is not None:
                b_bound = 1.0 / math.sqrt(fan_in)
                b_shape = tuple(layer.bias.shape[1:])
                layer.bias[i].copy_((torch.rand(b_shape, generator=g) * 2 - 1) * b_bound)
