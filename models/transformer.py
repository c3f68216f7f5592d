"""``TransformerNet``: K pre-norm transformer encoders over token sequences, trained together.

Tokens and positions are embedded, then ``n_layers`` blocks of
``h += attn(LN(h)); h += W2 act(W1 LN(h))`` run with the searched activation in
every MLP (ratio 4, or 8/3 for gated families at equal parameters), and the
mean over positions goes through a final norm to a linear head. Every weight is
stacked with a leading K axis; the MLP's activation is the same per-layer
:class:`~models.activations.Activation` module (``(K, N, U)``, mlp layout) the
MLP builder uses, so any family, or a mixed-family composite, drops in.

Input rows are token ids ``(B, T)`` (float or integer; the engine's tensors are
float32, which holds ids exactly); ``vocab_size`` comes from the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import BatchedSelfAttention
from .blocks import init_family_weight_
from .layers import BatchedLinear, BatchedNorm, apply_dropout, dropout_masks, init_weight_
from .network import (
    ActParams,
    LayerInfo,
    PopulationNet,
    _layer_activation,
    register_architecture,
    resolve_layers,
)
from .spec import ArchSpec

EMBED_STD = 0.02  # GPT-2's embedding init


@register_architecture("transformer")
class TransformerNet(PopulationNet):
    """K transformer encoders; forward ``(B, T) token ids -> (K, B, n_outputs)``.

    ``preacts`` collects each block's MLP pre-activation as ``(K, B*T, pre)``.
    """

    input_dtype = torch.long  # what an exported program takes

    def __init__(self, arch: ArchSpec, family: str | Sequence[str] | None,
                 act_params: Sequence[ActParams], n_inputs: int, n_outputs: int,
                 seeds: Sequence[int] | None = None,
                 families: Sequence[str | Sequence[str] | None] | None = None):
        nn.Module.__init__(self)
        self._setup(arch, act_params, n_inputs, n_outputs, seeds)
        assert arch.vocab_size is not None
        k, d, t = self.k, arch.d_model, self.n_inputs
        classes, per_layer = resolve_layers(arch, family, act_params, families)
        self.candidate_families = [[classes[layer][c].name for layer in range(len(classes))]
                                   for c in range(k)]
        gens = [torch.Generator().manual_seed(s) for s in self.seeds]
        self.tok_emb = nn.Parameter(torch.empty(k, arch.vocab_size, d))  # (K, V, d)
        self.pos_emb = nn.Parameter(torch.empty(k, t, d))  # (K, T, d)
        with torch.no_grad():
            for i, g in enumerate(gens):
                self.tok_emb[i].copy_(torch.randn(arch.vocab_size, d, generator=g) * EMBED_STD)
                self.pos_emb[i].copy_(torch.randn(t, d, generator=g) * EMBED_STD)
        self.attn_norms, self.attns = nn.ModuleList(), nn.ModuleList()
        self.mlp_norms, self.fc1, self.fc2 = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.acts = nn.ModuleList()
        self.layers: list[LayerInfo] = []
        for layer in range(arch.n_layers):
            act, pre, post = _layer_activation(classes[layer], per_layer[layer], arch.mlp_width(),
                                               "mlp", self.seeds, layer, arch.param_match)
            attn = BatchedSelfAttention(k, d, arch.heads)
            init_weight_(attn.qkv, "default", gens)
            init_weight_(attn.proj, "default", gens)
            fc1 = BatchedLinear(k, d, pre)
            init_family_weight_(fc1, classes[layer], per_layer[layer], gens)
            fc2 = BatchedLinear(k, post, d)
            init_weight_(fc2, "default", gens)
            self.attn_norms.append(BatchedNorm(k, d, "layer", "mlp"))
            self.attns.append(attn)
            self.mlp_norms.append(BatchedNorm(k, d, "layer", "mlp"))
            self.fc1.append(fc1)
            self.fc2.append(fc2)
            self.acts.append(act)
            self.layers.append(LayerInfo(layer, "dense", self._layer_family(layer), d, pre, post,
                                         None, True))
        self.final_norm = BatchedNorm(k, d, "layer", "mlp")
        self.out = BatchedLinear(k, d, self.n_outputs)
        init_weight_(self.out, "default", gens)

    def _dropout(self, a: torch.Tensor) -> torch.Tensor:
        p = float(self.arch.dropout)
        if p <= 0 or not self.training:
            return a
        masks = dropout_masks(self._dropout_generators(a.device), tuple(a.shape[1:]), 1 - p, a.device)
        return apply_dropout(a, masks, p, "standard")

    def forward(self, x: torch.Tensor, preacts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``x (B, T)`` token ids -> ``(K, B, n_outputs)``."""
        b, t = x.shape
        k, d = self.k, self.arch.d_model
        vocab = self.tok_emb.shape[1]
        ids = x.long()  # (B, T)
        offsets = torch.arange(k, device=ids.device).view(k, 1, 1) * vocab
        flat = (ids.unsqueeze(0) + offsets).reshape(-1)  # (K*B*T,) rows of the stacked table
        h = self.tok_emb.reshape(k * vocab, d).index_select(0, flat).view(k, b, t, d)
        h = self._dropout(h + self.pos_emb.unsqueeze(1))  # (K, B, T, d)
        for layer in range(len(self.layers)):
            info = self.layers[layer]
            a = self.attns[layer](self.attn_norms[layer](h.reshape(k, b * t, d)).view(k, b, t, d))
            h = h + self._dropout(a)  # (K, B, T, d)
            z = self.fc1[layer](self.mlp_norms[layer](h.reshape(k, b * t, d)))  # (K, B*T, pre)
            if preacts is not None:
                preacts.append(z.detach())
            m = self.fc2[layer](self.acts[layer](z))  # (K, B*T, d)
            assert m.shape[-1] == d, info
            h = h + self._dropout(m.view(k, b, t, d))
        pooled = self.final_norm(h.mean(2))  # (K, B, d)
        return self.out.forward_outputs_first(pooled).transpose(1, 2)  # (K, B, C)

    # ----- size -----------------------------------------------------------------------
    def count_flops(self, i: int = 0) -> int:
        """FLOPs of one sequence for candidate ``i``: attention (projections, T x T scores
        and mix), the MLPs with their activations, residual adds and the head; embedding
        lookups, norms, the mean and dropout are not counted."""
        t, d = self.n_inputs, self.arch.d_model
        flops = 0
        for info, act, attn in zip(self.layers, self.acts, self.attns, strict=True):
            leaf, _ = act.locate(i)  # candidate i's own family slice
            act_cost = type(leaf).element_flops(leaf.structural)
            flops += t * attn.flops_per_token(t)
            flops += t * (info.pre * (2 * d + 1 + act_cost) + d * (2 * info.post + 1))
            flops += 2 * t * d  # two residual adds
        flops += self.n_outputs * (2 * d + 1)
        return int(flops)

    def elements_per_row(self) -> int:
        t, d = self.n_inputs, self.arch.d_model
        per_block = [t * (8 * d + info.pre + info.post) + self.arch.heads * t * t
                     for info in self.layers]
        return max(sum(per_block) + t * d + self.n_outputs, 1)
