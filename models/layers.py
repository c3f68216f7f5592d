"""Batched building blocks: K candidates' layers stored as one stacked tensor each.

Every parameter and buffer has a leading K axis, so the optimizer can broadcast a
per-candidate learning rate as a ``(K, 1, ...)`` view and compaction is one
``index_select(0, index)`` per tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InvalidInput

# SELU's negative saturation value -scale*alpha, used by AlphaDropout.
_SELU_ALPHA_PRIME = -1.7580993408473766


class BatchedLinear(nn.Module):
    """K independent dense layers: weight ``(K, in, out)``, bias ``(K, 1, out)``.

    With ``shared_input`` the input is one ``(B, in)`` tensor seen by every candidate
    (the first layer of an MLP), broadcast as a stride-0 ``(K, B, in)`` view, not copied.
    (Measured on CPU: faster than one ``(B, in) @ (in, K*out)`` GEMM, whose permuted
    weight and transposed output cost more copies than they save.)
    ``bias=False`` before batch norm, which cancels a bias exactly (its gradient would
    be rounding noise that Adam amplifies to full-size steps).
    """

    def __init__(self, k: int, n_in: int, n_out: int, *, shared_input: bool = False,
                 bias: bool = True):
        super().__init__()
        self.n_in, self.n_out, self.shared_input = n_in, n_out, shared_input
        self.weight = nn.Parameter(torch.empty(k, n_in, n_out))  # (K, in, out)
        self.bias = nn.Parameter(torch.zeros(k, 1, n_out)) if bias else None  # (K, 1, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared_input:  # x: (B, in)
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)  # (K, B, in), a view
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)  # (K, B, out)

    def forward_outputs_first(self, x: torch.Tensor) -> torch.Tensor:
        """The same layer computed transposed: ``(K, B, in) -> (K, out, B)``, contiguous.

        For a narrow output layer (a few classes) ``W^T x^T`` is 3-4x faster on CPU than
        ``x W`` in forward and backward (MKL's batched GEMM handles a short M far better
        than a short N), and ``(K, C, B)`` is the layout cross-entropy wants anyway.
        The backward (:class:`_OutputsFirst`) hands back a contiguous input gradient, so
        the activation's backward before it runs on matching layouts.
        """
        if self.shared_input:  # x: (B, in)
            x = x.unsqueeze(0).expand(self.weight.shape[0], -1, -1)  # (K, B, in), a view
        return _OutputsFirst.apply(x, self.weight, self.bias)

    def fans(self) -> tuple[int, int]:
        return self.n_in, self.n_out

    def extra_repr(self) -> str:
        return f"k={self.weight.shape[0]}, in={self.n_in}, out={self.n_out}, shared={self.shared_input}"


class _OutputsFirst(torch.autograd.Function):
    """``y_t = W^T x^T + b^T``: ``x (K, B, in), W (K, in, out), b (K, 1, out) -> (K, out, B)``."""

    # custom_fwd/bwd: under bf16 autocast the backward runs in the forward's autocast
    # state, so its GEMMs see matching dtypes (bf16 gradient, float32 saved weights).
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        w_t, x_t = weight.transpose(1, 2), x.transpose(1, 2)  # views
        if bias is None:
            return torch.bmm(w_t, x_t)
        return torch.baddbmm(bias.transpose(1, 2), w_t, x_t)  # (K, out, B)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(g.transpose(1, 2), weight.transpose(1, 2))  # (K, B, in)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(g, x).transpose(1, 2).contiguous()  # (K, in, out)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(2).unsqueeze(1)  # (K, 1, out)
        return grad_x, grad_w, grad_b


class BatchedConv2d(nn.Module):
    """K independent conv layers ("same" padding, stride 1): weight ``(K, out, in, k, k)``.

    Layout ``(B, K*C, H, W)``: the first layer convolves the shared ``(B, C, H, W)``
    input with all ``K*out`` filters (groups=1); later layers use groups=K so each
    candidate sees only its own channels.
    """

    def __init__(self, k: int, n_in: int, n_out: int, kernel: int, *, shared_input: bool = False,
                 bias: bool = True):
        super().__init__()
        self.n_in, self.n_out, self.kernel, self.shared_input = n_in, n_out, kernel, shared_input
        self.weight = nn.Parameter(torch.empty(k, n_out, n_in, kernel, kernel))  # (K, out, in, k, k)
        self.bias = nn.Parameter(torch.zeros(k, n_out)) if bias else None  # (K, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[0]
        w = self.weight.reshape(k * self.n_out, self.n_in, self.kernel, self.kernel)
        groups = 1 if self.shared_input else k
        b = None if self.bias is None else self.bias.reshape(-1)
        return F.conv2d(x, w, b, padding="same", groups=groups)  # (B, K*out, H, W)

    def fans(self) -> tuple[int, int]:
        area = self.kernel * self.kernel
        return self.n_in * area, self.n_out * area

    def extra_repr(self) -> str:
        return (f"k={self.weight.shape[0]}, in={self.n_in}, out={self.n_out}, "
                f"kernel={self.kernel}, shared={self.shared_input}")


class BatchedNorm(nn.Module):
    """Per-candidate batch or layer norm with its own affine parameters ``(K, U)``.

    * mlp layout ``(K, B, U)``: batch norm over B per (candidate, unit); layer norm over U.
    * conv layout ``(B, K*U, H, W)``: batch norm per channel (channels are per candidate
      already); layer norm is ``group_norm`` with K groups, i.e. over (U, H, W) of each
      candidate and row, with a per-channel affine.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, k: int, units: int, kind: str, layout: str, *,
                 eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        if kind not in ("batch", "layer"):
            raise InvalidInput(f"unknown norm {kind!r}; use 'none', 'batch' or 'layer'")
        self.kind, self.layout, self.units, self.eps, self.momentum = kind, layout, units, eps, momentum
        self.weight = nn.Parameter(torch.ones(k, units))  # (K, U)
        self.bias = nn.Parameter(torch.zeros(k, units))  # (K, U)
        if kind == "batch":
            self.register_buffer("running_mean", torch.zeros(k, units))  # (K, U)
            self.register_buffer("running_var", torch.ones(k, units))  # (K, U)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[0]
        if self.layout == "conv":  # (B, K*U, H, W)
            if self.kind == "batch":
                return F.batch_norm(x, self.running_mean.view(-1), self.running_var.view(-1),
                                    self.weight.reshape(-1), self.bias.reshape(-1),
                                    self.training, self.momentum, self.eps)
            return F.group_norm(x, k, self.weight.reshape(-1), self.bias.reshape(-1), self.eps)
        w = self.weight.unsqueeze(1)  # (K, 1, U)
        b = self.bias.unsqueeze(1)  # (K, 1, U)
        if self.kind == "layer":  # x: (K, B, U)
            return torch.addcmul(b, F.layer_norm(x, (self.units,), eps=self.eps), w)
        if self.training:
            var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)  # (K, 1, U)
            n = x.shape[1]
            with torch.no_grad():
                self.running_mean.lerp_(mean.squeeze(1), self.momentum)
                unbiased = var.squeeze(1) * (n / max(n - 1, 1))
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean = self.running_mean.unsqueeze(1)
            var = self.running_var.unsqueeze(1)
        scale = torch.rsqrt(var + self.eps) * w  # (K, 1, U)
        return torch.addcmul(b - mean * scale, x, scale)

    def extra_repr(self) -> str:
        return f"k={self.weight.shape[0]}, units={self.units}, {self.kind}, {self.layout}"


def dropout_masks(gens: list[torch.Generator], shape: tuple[int, ...], keep_p: float,
                  device: torch.device) -> torch.Tensor:
    """``(K, *shape)`` Bernoulli(keep_p) masks, candidate k drawn from its own generator.

    One draw per candidate (a short loop over K, only when dropout is on) so that a
    K=1 network with the same seed draws exactly the same masks.
    """
    return torch.stack([torch.rand(shape, generator=g, device=device) for g in gens]) < keep_p


def apply_dropout(x: torch.Tensor, mask: torch.Tensor, p: float,
                  kind: str | torch.Tensor) -> torch.Tensor:
    """Standard (inverted) dropout, or AlphaDropout for SELU-like families.

    AlphaDropout sets dropped units to SELU's saturation value and applies the affine
    correction ``a*x + b`` that keeps zero mean and unit variance (Klambauer et al. 2017).
    ``kind``: ``"standard"`` or ``"alpha"`` for all K candidates, or a ``(K, 1, 1)`` bool
    tensor (True: alpha) for a population that mixes the two.
    """
    if isinstance(kind, torch.Tensor):
        return torch.where(kind, apply_dropout(x, mask, p, "alpha"),
                           apply_dropout(x, mask, p, "standard"))
    if kind == "alpha":
        a = ((1 - p) * (1 + p * _SELU_ALPHA_PRIME**2)) ** -0.5
        b = -a * _SELU_ALPHA_PRIME * p
        return torch.where(mask, x, _SELU_ALPHA_PRIME) * a + b
    return x * mask * (1.0 / (1.0 - p))


_NORMAL_STD = {
    "kaiming_normal": lambda fan_in, fan_out: math.sqrt(2.0 / fan_in),
    "lecun_normal": lambda fan_in, fan_out: math.sqrt(1.0 / fan_in),
    "xavier_normal": lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)),
    "snake": lambda fan_in, fan_out: math.sqrt(1.0 / fan_in),
}


def init_weight_(
    layer: BatchedLinear | BatchedConv2d, scheme: str | Sequence[str | None],
    gens: list[torch.Generator],
) -> None:
    """Initialise each candidate's slice from its own generator (weight, then bias if any).

    ``scheme``: one for all candidates, or one per candidate (a mixed population: each
    candidate keeps its family's init, drawn exactly as in its own K=1 network).

    Schemes (fan_in = inputs x kernel area):

    * ``default``: PyTorch's Linear/Conv default, weight and bias ~ U(-1/sqrt(fan_in), +).
    * ``kaiming_normal``: N(0, 2/fan_in), bias 0 (ReLU-like families).
    * ``lecun_normal``: N(0, 1/fan_in), bias 0 (SELU, self-normalising).
    * ``xavier_normal``: N(0, 2/(fan_in + fan_out)), bias 0.
    * ``snake``: N(0, 1/fan_in), bias 0 (the variance-preserving choice of Ziyin et al. 2020
      for snake's near-identity slope at 0).
    * ``siren``: here (the output layer after sine layers) as ``default``; the layers that
      feed a sine get SIREN's omega-scaled init from :func:`models.blocks.init_family_weight_`.
    """
    fan_in, fan_out = layer.fans()
    w_shape = tuple(layer.weight.shape[1:])
    b_shape = tuple(layer.bias.shape[1:]) if layer.bias is not None else None
    with torch.no_grad():
        schemes = [scheme] * len(gens) if isinstance(scheme, str) else list(scheme)
        for i, (g, scheme_i) in enumerate(zip(gens, schemes, strict=True)):
            if scheme_i is None:
                continue  # this candidate's slice is drawn by the caller (models.blocks)
            if scheme_i in ("default", "siren"):
                bound = 1.0 / math.sqrt(fan_in)
                w = (torch.rand(w_shape, generator=g) * 2 - 1) * bound
                b = None if b_shape is None else (torch.rand(b_shape, generator=g) * 2 - 1) * bound
            else:
                if scheme_i not in _NORMAL_STD:
                    raise InvalidInput(
                        f"unknown weight_init {scheme_i!r}; use default or one of {sorted(_NORMAL_STD)}"
                    )
                std = _NORMAL_STD[scheme_i](fan_in, fan_out)
                w = torch.randn(w_shape, generator=g) * std
                b = None if b_shape is None else torch.zeros(b_shape)
            layer.weight[i].copy_(w)
            if layer.bias is not None and b is not None:
                layer.bias[i].copy_(b)
