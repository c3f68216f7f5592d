"""Merging a hidden layer whose activation is affine into the next linear layer.

If a dense layer's activation is ``a*z + b`` per unit over the data (a learned
curve that came out linear), then ``Linear -> norm -> affine act -> Linear`` is one
affine map, and the two linear layers fold into one:
``W' = W1 diag(s*a) W2``, ``b' = ((b1*s + t)*a + b) W2 + b2`` (``s, t``: the
eval-mode batch norm's scale and shift, 1 and 0 without one). The result is a
plain :class:`PopulationNet` (K=1) with one hidden layer fewer, so it is evaluated,
counted and exported exactly like the original.

The merge is done only where it is exact at inference; otherwise
:func:`merge_blocker` says why not (layer norm, convolution, a skip connection that
reads the layer's output, the only hidden layer). Imports torch and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
import torch

from .activations import Activation
from .layers import BatchedLinear, BatchedNorm
from .network import PopulationNet

__all__ = ["batchnorm_affine", "fold_affine", "merge_blocker", "merge_layer"]


def batchnorm_affine(norm: BatchedNorm, k: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate ``k``'s eval-mode batch norm as ``z * scale + shift`` (both ``(U,)``)."""
    scale = torch.rsqrt(norm.running_var[k] + norm.eps) * norm.weight[k]
    return scale, norm.bias[k] - norm.running_mean[k] * scale


def fold_affine(
    w1: torch.Tensor, b1: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
    w2: torch.Tensor, b2: torch.Tensor, *, skip: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``((x W1 + b1) * alpha + beta [+ x]) W2 + b2`` as one ``x W + b``.

    Shapes: ``w1 (in, mid)``, ``b1, alpha, beta (mid,)``, ``w2 (mid, out)``, ``b2 (out,)``;
    ``skip`` adds the identity (a residual layer, ``in == mid``). Computed in float64.
    """
    w1, b1, alpha, beta, w2, b2 = (t.double() for t in (w1, b1, alpha, beta, w2, b2))
    inner = w1 * alpha  # (in, mid) = W1 diag(alpha)
    if skip:
        if w1.shape[0] != w1.shape[1]:
            raise ValueError(f"a skip connection needs in == mid, got {tuple(w1.shape)}")
        inner = inner + torch.eye(w1.shape[0], dtype=inner.dtype)
    return inner @ w2, (b1 * alpha + beta) @ w2 + b2


def _dense_index(net: PopulationNet, layer: int) -> int:
    return layer - sum(1 for info in net.layers if info.kind == "conv")


def merge_blocker(net: PopulationNet, layer: int) -> str | None:
    """Why hidden layer ``layer`` cannot be merged into its successor exactly; None if it can."""
    if net.k != 1:
        return f"merging works on one candidate (K=1), this network holds K={net.k}"
    if not 0 <= layer < len(net.layers):
        return f"no hidden layer {layer} (the network has {len(net.layers)})"
    info = net.layers[layer]
    if net.arch.kind in ("transformer", "resnet"):
        return (f"a {net.arch.kind} block: its activation sits between a norm and a residual "
                "add inside the block, so no affine fold into the next layer is exact")
    if info.kind == "conv":
        return ("a convolution layer: merging two convolutions widens the kernel (and pooling "
                "after it is not linear); only dense layers are merged")
    if info.pre != info.post:
        return f"its activation changes the width ({info.pre} -> {info.post})"
    if net.arch.norm == "layer":
        return "layer norm before the activation normalises each row: not an affine map"
    nxt = layer + 1
    if nxt < len(net.layers) and net.layers[nxt].residual:
        return "the next layer's skip connection reads this layer's output"
    if len(net.arch.hidden) == 1 and net.arch.kind == "mlp":
        return ("the only hidden layer: merging it leaves a linear model, which the "
                "architecture (at least one hidden layer) cannot express")
    return None


def _layer_params(net: PopulationNet, keep: Sequence[int]) -> tuple[Any, Any]:
    """Family and act_params (one candidate) for a net of the kept layers."""
    acts = [cast(Activation, net.acts[i]) for i in keep]
    families = [net.families[i] for i in keep]
    per_layer = [dict(a.params_list[0]) for a in acts]
    if net.arch.activation_scope == "layer":
        return families, per_layer
    return families[0], per_layer[0]


def merge_layer(net: PopulationNet, layer: int, alpha: Any, beta: Any) -> PopulationNet:
    """A new K=1 network with hidden layer ``layer`` folded into the next linear layer.

    ``alpha, beta``: the activation's affine fit per unit (``(pre,)``, or scalars).
    Raises ValueError with :func:`merge_blocker`'s reason where the merge is not exact.
    """
    reason = merge_blocker(net, layer)
    if reason is not None:
        raise ValueError(f"layer {layer} is not mergeable: {reason}")
    info = net.layers[layer]
    j = _dense_index(net, layer)
    lin = cast(BatchedLinear, net.dense[j])
    dtype = lin.weight.dtype
    alpha_t = torch.as_tensor(np.broadcast_to(np.asarray(alpha, dtype=np.float64), (info.pre,)).copy())
    beta_t = torch.as_tensor(np.broadcast_to(np.asarray(beta, dtype=np.float64), (info.pre,)).copy())
    with torch.no_grad():
        w1 = lin.weight[0]  # (in, pre)
        b1 = lin.bias[0, 0] if lin.bias is not None else torch.zeros(info.pre, dtype=dtype)
        if net.arch.norm == "batch":
            scale, shift = batchnorm_affine(cast(BatchedNorm, net.norms[layer]))
            w1, b1 = w1 * scale, b1 * scale + shift
        last = layer == len(net.layers) - 1
        nxt = net.out if last else cast(BatchedLinear, net.dense[j + 1])
        w2 = nxt.weight[0]  # (pre, out)
        b2 = nxt.bias[0, 0] if nxt.bias is not None else torch.zeros(w2.shape[1], dtype=dtype)
        w, b = fold_affine(w1, b1, alpha_t, beta_t, w2, b2, skip=info.residual)

    keep = [i for i in range(len(net.layers)) if i != layer]
    hidden = [h for i, h in enumerate(net.arch.hidden) if i != j]
    arch = replace(net.arch, hidden=hidden)
    family, params = _layer_params(net, keep)
    merged = PopulationNet(arch, family, [params], net.n_inputs, net.n_outputs, seeds=net.seeds)
    expected = [net.layers[i].residual for i in keep]
    if [x.residual for x in merged.layers] != expected:
        raise ValueError(f"layer {layer} is not mergeable: merging it would change which "
                         "layers have skip connections")

    old = net.state_dict()
    new = merged.state_dict()
    remap = {old_i: new_i for new_i, old_i in enumerate(keep)}
    n_conv = len(net.arch.conv_channels) if net.arch.kind == "cnn" else 0
    dense_remap = {o - n_conv: n - n_conv for o, n in remap.items() if o >= n_conv}
    for name, tensor in old.items():
        group, _, rest = name.partition(".")
        if group in ("acts", "norms", "convs", "dense"):
            idx_s, _, tail = rest.partition(".")
            idx = int(idx_s)
            table = dense_remap if group == "dense" else remap
            if idx not in table:
                continue  # the merged layer itself
            target = f"{group}.{table[idx]}.{tail}"
        else:
            target = name
        if target in new and new[target].shape == tensor.shape:
            new[target] = tensor.clone()
    target_w = "out.weight" if last else f"dense.{j}.weight"
    new[target_w] = w.to(dtype).unsqueeze(0)
    bias_key = "out.bias" if last else f"dense.{j}.bias"
    if bias_key in new:
        new[bias_key] = b.to(dtype).reshape(1, 1, -1)
    elif net.arch.norm == "batch":
        # no bias before batch norm: a constant shift of its input moves its running mean
        mean_key = f"norms.{layer}.running_mean"  # the successor's norm, now at index `layer`
        new[mean_key] = new[mean_key] - b.to(dtype).reshape(1, -1)
    else:  # pragma: no cover - every bias-free dense layer sits before a batch norm
        raise ValueError("the merged layer has no bias to hold the folded constant")
    merged.load_state_dict(new)
    return merged.eval()
