"""``ResNetNet``: K residual CNNs over images, trained together.

A 3x3 stem, then one stage per width in ``conv_channels`` with ``blocks`` residual
blocks each (3x3 conv, batch norm, activation, twice; the first block of every
stage after the first downsamples with stride 2; a 1x1 conv + batch norm projects
the shortcut where the width or resolution changes), global average pooling, an
optional dense head, and a linear output.

The activation is applied to each conv's normalised output *before* the residual
add (``x + act(bn(conv(act(bn(conv(x))))))``), so families that change the width
(gated units halve it) fit every block; every activation is the per-layer
:class:`~models.activations.Activation` module in the conv layout
``(B, K, U, H, W)``, as the plain CNN uses it.

Layout: ``(B, K*C, H, W)``; the stem convolves the shared input with all K
candidates' filters at once, later convs are grouped by candidate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import init_family_weight_
from .layers import (
    BatchedConv2d,
    BatchedLinear,
    BatchedNorm,
    apply_dropout,
    dropout_masks,
    init_weight_,
)
from .network import (
    ActParams,
    LayerInfo,
    PopulationNet,
    _layer_activation,
    register_architecture,
    resolve_layers,
)
from .spec import ArchSpec


class StridedConv2d(BatchedConv2d):
    """:class:`BatchedConv2d` with a stride (padding ``kernel // 2``), for downsampling."""

    def __init__(self, k: int, n_in: int, n_out: int, kernel: int, *, stride: int = 1,
                 shared_input: bool = False):
        super().__init__(k, n_in, n_out, kernel, shared_input=shared_input, bias=False)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.weight.shape[0]
        w = self.weight.reshape(k * self.n_out, self.n_in, self.kernel, self.kernel)
        groups = 1 if self.shared_input else k
        return F.conv2d(x, w, None, stride=self.stride, padding=self.kernel // 2, groups=groups)


@register_architecture("resnet")
class ResNetNet(PopulationNet):
    """K residual CNNs; forward ``(B, C*H*W)`` (or ``(B, C, H, W)``) -> ``(K, B, n_outputs)``."""


    def __init__(self, arch: ArchSpec, family: str | Sequence[str] | None,
                 act_params: Sequence[ActParams], n_inputs: int, n_outputs: int,
                 seeds: Sequence[int] | None = None,
                 families: Sequence[str | Sequence[str] | None] | None = None):
        nn.Module.__init__(self)
        self._setup(arch, act_params, n_inputs, n_outputs, seeds)
        assert arch.input_shape is not None
        k = self.k
        classes, per_layer = resolve_layers(arch, family, act_params, families)
        self.candidate_families = [[classes[layer][c].name for layer in range(len(classes))]
                                   for c in range(k)]
        gens = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.convs = nn.ModuleList()  # one per activated conv, in layer order
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        self.shortcuts = nn.ModuleDict()  # block's second layer index -> 1x1 projection
        self.shortcut_norms = nn.ModuleDict()
        self.layers: list[LayerInfo] = []
        self.dense = nn.ModuleList()
        c_in, h, w = arch.input_shape

        def conv_layer(n_in: int, channels: int, stride: int, hw: tuple[int, int],
                       residual: bool) -> tuple[int, tuple[int, int]]:
            layer = len(self.layers)
            act, pre, post = _layer_activation(classes[layer], per_layer[layer], channels,
                                               "conv", self.seeds, layer, arch.param_match)
            conv = StridedConv2d(k, n_in, pre, 3, stride=stride, shared_input=(layer == 0))
            init_family_weight_(conv, classes[layer], per_layer[layer], gens, first=(layer == 0))
            out_hw = ((hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1)
            self.convs.append(conv)
            self.norms.append(BatchedNorm(k, pre, "batch", "conv"))
            self.acts.append(act)
            self.layers.append(LayerInfo(layer, "conv", self._layer_family(layer), n_in, pre, post,
                                         out_hw, residual))
            return post, out_hw

        c, hw = conv_layer(c_in, arch.conv_channels[0], 1, (h, w), False)  # the stem
        for s, channels in enumerate(arch.conv_channels):
            for blk in range(arch.blocks):
                stride = 2 if (s > 0 and blk == 0) else 1
                block_in, block_hw = c, hw
                mid, hw = conv_layer(c, channels, stride, hw, False)
                c, hw = conv_layer(mid, channels, 1, hw, True)
                second = str(len(self.layers) - 1)
                if stride != 1 or block_in != c:
                    proj = StridedConv2d(k, block_in, c, 1, stride=stride)
                    init_weight_(proj, "default", gens)
                    self.shortcuts[second] = proj
                    self.shortcut_norms[second] = BatchedNorm(k, c, "batch", "conv")
                del block_hw
        n_in = c
        p = float(arch.dropout)
        self.dropout_p = p
        for width in arch.hidden:
            layer = len(self.layers)
            act, pre, post = _layer_activation(classes[layer], per_layer[layer], width, "mlp",
                                               self.seeds, layer, arch.param_match)
            lin = BatchedLinear(k, n_in, pre)
            init_family_weight_(lin, classes[layer], per_layer[layer], gens)
            self.dense.append(lin)
            self.acts.append(act)
            self.dropout_kinds.append([c.dropout_kind for c in classes[layer]])
            self.layers.append(LayerInfo(layer, "dense", self._layer_family(layer), n_in, pre,
                                         post, None, False))
            n_in = post
        self.out = BatchedLinear(k, n_in, self.n_outputs)
        init_weight_(self.out, "default", gens)

    def forward(self, x: torch.Tensor, preacts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``x (B, C*H*W)`` standardised pixels -> ``(K, B, n_outputs)``."""
        assert self.arch.input_shape is not None
        b, k = x.shape[0], self.k
        h = x.reshape(b, *self.arch.input_shape)  # (B, C, H, W)
        block_in = h
        n_conv = len(self.convs)
        for layer in range(n_conv):
            info = self.layers[layer]
            z = self.norms[layer](self.convs[layer](h))  # (B, K*pre, H', W')
            hh, ww = z.shape[-2:]
            z5 = z.view(b, k, info.pre, hh, ww)  # (B, K, pre, H', W')
            if preacts is not None:
                preacts.append(z5.detach().permute(1, 0, 3, 4, 2).reshape(k, -1, info.pre))
            a = self.acts[layer](z5).reshape(b, k * info.post, hh, ww)  # (B, K*post, H', W')
            if info.residual:
                key = str(layer)
                if key in self.shortcuts:
                    a = a + self.shortcut_norms[key](self.shortcuts[key](block_in))
                else:
                    a = a + block_in
                block_in = a
            elif layer == 0:
                block_in = a  # the stem's output enters the first block
            h = a
        feats = h.mean(dim=(2, 3)).view(b, k, -1).transpose(0, 1)  # (K, B, C)
        for j, lin in enumerate(self.dense):
            info = self.layers[n_conv + j]
            z = lin(feats)  # (K, B, pre)
            if preacts is not None:
                preacts.append(z.detach())
            a = self.acts[n_conv + j](z)  # (K, B, post)
            if self.dropout_p > 0 and self.training:
                masks = dropout_masks(self._dropout_generators(a.device), (b, info.post),
                                      1 - self.dropout_p, a.device)
                a = apply_dropout(a, masks, self.dropout_p, self._dropout_kind(j, a.device))
            feats = a
        return self.out.forward_outputs_first(feats).transpose(1, 2)  # (K, B, C)

    # ----- size -----------------------------------------------------------------------
    def count_flops(self, i: int = 0) -> int:
        """FLOPs of one image for candidate ``i``: convs (2 per multiply-add), the 1x1
        projections, activations, residual adds, the dense head and output layer;
        batch norm and pooling are not counted."""
        flops = 0
        for info, act in zip(self.layers, self.acts, strict=True):
            leaf, _ = act.locate(i)  # candidate i's own family slice
            act_cost = type(leaf).element_flops(leaf.structural)
            if info.kind == "conv":
                assert info.spatial is not None
                positions = info.spatial[0] * info.spatial[1]
                flops += positions * info.pre * (2 * info.n_in * 9 + act_cost)
                if info.residual:
                    flops += positions * info.post
                    proj = self.shortcuts[str(info.index)] if str(info.index) in self.shortcuts else None
                    if proj is not None:
                        assert isinstance(proj, BatchedConv2d)
                        flops += positions * info.post * 2 * proj.n_in
            else:
                flops += info.pre * (2 * info.n_in + 1 + act_cost)
        flops += self.n_outputs * (2 * self.out.n_in + 1)
        return int(flops)

    def elements_per_row(self) -> int:
        total = 0
        for info in self.layers:
            positions = info.spatial[0] * info.spatial[1] if info.spatial else 1
            total += (2 * info.pre + 2 * info.post) * positions
        return max(total + self.n_outputs, 1)
