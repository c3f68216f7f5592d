"""VAF / meta-neuron: each activation is a tiny 1-in/1-out network of its own.

``z -> h_1 = f(w_in*z + b_in)`` (width W), then ``depth-1`` hidden layers
``h_{l+1} = f(W_l h_l + b_l)`` (or ``h_l + f(W_l h_l + b_l)`` with residual links),
then ``y = w_out . h + b_out``. Weights have a leading K axis and one set per layer
or per unit. All K candidates and all units run as one batched matmul per layer.

Initialisation (so training starts from a known activation, not a random curve):

* neuron 0 of the input layer is ``f(z)`` (``w_in=1, b_in=0``); the other W-1 neurons
  get random ``w_in, b_in ~ N(0, 1)`` to break symmetry;
* ``w_out = e_0``: the output reads neuron 0 only (the other neurons' readout starts at
  zero, like a zero-initialised residual branch; its gradient is their activations, so
  they join in from the first step): with ``depth=1`` the subnetwork starts exactly at f;
* residual links: hidden weights ~ ``N(0, init_std^2/W)``, biases 0, and
  ``b_out = -(depth-1)*f(0)`` cancels the constant each near-zero layer adds: the
  subnetwork starts at ``f(z)`` up to O(init_std);
* no residual links: hidden weights are ``I`` plus that noise, so it starts at
  ``f(f(...f(z)))`` (depth times), which is ``f(z)`` for idempotent bases such as relu.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import kernels
from .base import BASE_FUNCTIONS, SHARING, Activation, Layout, ParamSpec, register
from .spline import _randn_per_candidate
from .trainable import base_choices

_BASE_FLOPS = 5  # a typical smooth base function (silu, tanh, ...)


def _vaf_mlp(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor, w_hidden: torch.Tensor | None,
             b_hidden: torch.Tensor | None, w_out: torch.Tensor, b_out: torch.Tensor, inner: str,
             residual: bool) -> torch.Tensor:
    """The subnetwork in the mlp layout, written for fusion: ``x (K, B, U) -> (K, B, U)``.

    The same math as :meth:`VAF.forward` with no transposes and no tiny matmuls, so
    Inductor emits a few loops over the elements. Depth 1 is unrolled over the width
    (every tensor ``(K, B, U)``; each parameter's gradient one reduction). Deeper nets
    keep the width as a trailing axis ``(K, B, U, W)`` and unroll only the sum of each
    hidden layer over its W inputs: unrolling both axes (W^2 terms per layer) took
    Inductor 100-220 s to compile at W=6, and the earlier ``(K, B, U, W, W)`` broadcast
    product ran about 2x slower than this form (bench/README.md).
    Parameters are ``(K, U', ...)`` as stored.
    """
    f = BASE_FUNCTIONS[inner].fn
    if w_hidden is None:
        wi, bi, wo = w_in.unsqueeze(1), b_in.unsqueeze(1), w_out.unsqueeze(1)  # (K, 1, U', W)
        y = b_out.unsqueeze(1) + wo[..., 0] * f(x * wi[..., 0] + bi[..., 0])
        for j in range(1, w_in.shape[-1]):
            y = y + wo[..., j] * f(x * wi[..., j] + bi[..., j])
        return y  # (K, B, U)
    h = f(x.unsqueeze(-1) * w_in.unsqueeze(1) + b_in.unsqueeze(1))  # (K, B, U, W)
    if b_hidden is not None:
        wh, bh = w_hidden.unsqueeze(1), b_hidden.unsqueeze(1)  # (K, 1, U', D-1, W, W), (.., D-1, W)
        for layer in range(w_hidden.shape[2]):
            pre = bh[:, :, :, layer] + h[..., 0:1] * wh[:, :, :, layer, 0]  # (K, B, U, W)
            for i in range(1, w_in.shape[-1]):
                pre = pre + h[..., i : i + 1] * wh[:, :, :, layer, i]
            h = h + f(pre) if residual else f(pre)
    return (h * w_out.unsqueeze(1)).sum(-1) + b_out.unsqueeze(1)  # (K, B, U)


def _vaf_shared_gemm(x: torch.Tensor, w_in: torch.Tensor, b_in: torch.Tensor,
                     w_hidden: torch.Tensor | None, b_hidden: torch.Tensor | None,
                     w_out: torch.Tensor, b_out: torch.Tensor, inner: str,
                     residual: bool) -> torch.Tensor:
    """Eager form for one subnetwork per layer (U' = 1): ``x (K, B, U) -> (K, B, U)``.

    All B*U elements of a candidate share the weights, so each hidden layer is one
    ``(K, B*U, W) @ (K, W, W)`` batched GEMM (autograd's backward: two more), with no
    transposes of the input; the per-unit form needs K*U tiny matmuls instead.
    """
    f = BASE_FUNCTIONS[inner].fn
    k, b, u = x.shape
    h = f(x.reshape(k, b * u, 1) * w_in.reshape(k, 1, -1) + b_in.reshape(k, 1, -1))  # (K, N, W)
    if w_hidden is not None and b_hidden is not None:
        for layer in range(w_hidden.shape[2]):
            pre = torch.baddbmm(b_hidden[:, 0, layer].unsqueeze(1), h, w_hidden[:, 0, layer])
            h = h + f(pre) if residual else f(pre)
    y = torch.baddbmm(b_out.reshape(k, 1, 1), h, w_out.reshape(k, -1, 1))  # (K, N, 1)
    return y.reshape(k, b, u)


_vaf_mlp_fused = kernels.fused(_vaf_mlp)



@register
class VAF(Activation):
    """A learned 1-in/1-out subnetwork per layer (or per unit) replacing the activation."""

    name = "vaf"
    formula = "w_out . f(W_{d-1} ... f(w_in*z + b_in) ...) + b_out  (all weights learned)"
    trainable = True
    fused = True  # runs through models.kernels (compiled where it pays)
    reference = "Apicella et al. 2019 (VAF)"

    seeded_init = True  # the network passes one init seed per candidate

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp",
                 init_seeds: Sequence[int] | None = None):
        super().__init__(params, units, layout)
        width, depth = int(self.structural["width"]), int(self.structural["depth"])
        self.inner = str(self.structural["inner"])  # looked up per call: stays picklable
        self.residual = bool(self.structural["residual"])
        self.depth = depth
        k, u = self.k, self.param_units()
        std = self.per_candidate("init_std").reshape(k, 1, 1)  # (K, 1, 1)

        randn = _randn_per_candidate(init_seeds, k)
        w_in = randn(u, width)
        b_in = randn(u, width)
        w_in[..., 0], b_in[..., 0] = 1.0, 0.0
        self.w_in = nn.Parameter(w_in)  # (K, U', W)
        self.b_in = nn.Parameter(b_in)  # (K, U', W)

        if depth > 1:
            std4 = std.reshape(k, 1, 1, 1, 1)
            noise = randn(u, depth - 1, width, width) * std4 / width**0.5
            eye = torch.zeros(width, width) if self.residual else torch.eye(width)
            self.w_hidden = nn.Parameter(eye + noise)  # (K, U', depth-1, W, W)
            self.b_hidden = nn.Parameter(torch.zeros(k, u, depth - 1, width))  # (K, U', depth-1, W)
        else:
            self.register_parameter("w_hidden", None)
            self.register_parameter("b_hidden", None)

        w_out = torch.zeros(k, u, width)
        w_out[..., 0] = 1.0
        self.w_out = nn.Parameter(w_out)  # (K, U', W) reads neuron 0 only, at first
        f0 = float(BASE_FUNCTIONS[self.inner].fn(torch.zeros(())))
        shift = -(depth - 1) * f0 if self.residual else 0.0
        self.b_out = nn.Parameter(torch.full((k, u), shift))  # (K, U')

    @classmethod
    def element_flops(cls, structural: Mapping[str, Any]) -> int:
        w, d = int(structural.get("width", 4)), int(structural.get("depth", 1))
        return 2 * w + w * _BASE_FLOPS + (d - 1) * w * (2 * w + _BASE_FLOPS) + 2 * w

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            SHARING,
            ParamSpec("width", "int", default=4, low=2, high=16, log=True, structural=True,
                      help="hidden width W of the subnetwork"),
            ParamSpec("depth", "int", default=1, low=1, high=3, structural=True,
                      help="hidden layers of the subnetwork"),
            ParamSpec("inner", "categorical", default="relu", choices=base_choices(),
                      structural=True, help="activation inside the subnetwork"),
            ParamSpec("residual", "categorical", default=True, choices=(False, True),
                      structural=True, help="residual links between the hidden layers"),
            ParamSpec("init_std", "float", default=0.01, low=1e-3, high=0.3, log=True,
                      learned=True, help="scale of the hidden layers' init noise"),
        ]

    def _to_ku(self, x: torch.Tensor) -> torch.Tensor:
        """Either layout -> ``(K, U, N)`` with N the flattened batch (and spatial) axes."""
        if self.layout == "mlp":
            return x.transpose(1, 2)  # (K, U, B)
        return x.movedim(0, 2).reshape(x.shape[1], x.shape[2], -1)  # (K, U, B*H*W)

    def _from_ku(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.layout == "mlp":
            return y.transpose(1, 2)  # (K, B, U)
        shape = (like.shape[1], like.shape[2], like.shape[0], *like.shape[3:])
        return y.reshape(shape).movedim(2, 0)  # (B, K, U, *spatial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        args = (self.w_in, self.b_in, self.w_hidden, self.b_hidden, self.w_out, self.b_out,
                self.inner, self.residual)
        if self.layout == "mlp" and (kernels.active()
                                     or (self.depth == 1 and not torch.is_grad_enabled())):
            # Compiled inside kernels.compiling; elsewhere no-grad passes (validation,
            # curve sampling) of depth 1 run it eagerly: the unrolled form is ~6x faster
            # there than the (K, U, N, W) matmuls below (15 -> 2.6 ms at K=64, 360 rows,
            # 64 units).
            return _vaf_mlp_fused(x, *args)
        if self.layout == "mlp" and self.param_units() == 1:
            return _vaf_shared_gemm(x, *args)
        f = BASE_FUNCTIONS[self.inner].fn
        z = self._to_ku(x).unsqueeze(-1)  # (K, U, N, 1)
        h = f(z * self.w_in.unsqueeze(2) + self.b_in.unsqueeze(2))  # (K, U, N, W)
        if self.w_hidden is not None and self.b_hidden is not None:
            for layer in range(self.depth - 1):
                pre = h @ self.w_hidden[:, :, layer] + self.b_hidden[:, :, layer].unsqueeze(2)
                h = h + f(pre) if self.residual else f(pre)
        y = (h @ self.w_out.unsqueeze(-1)).squeeze(-1) + self.b_out.unsqueeze(-1)  # (K, U, N)
        return self._from_ku(y, x)
