"""``PopulationNet``: K same-shape candidates (MLP or small CNN) in one module.

Each candidate has its own weights, norms and activation parameters, all stored
as stacked tensors with a leading K axis, so one forward/backward trains the
whole population; the loss summed over candidates gives each one its own gradient.
K=1 is a plain network, and :meth:`PopulationNet.candidate_state` /
:meth:`PopulationNet.load_candidate_state` move one candidate between populations.

About 570 lines: the builder, the forward pass, compaction (``keep``), state moves and
the size counts all walk the same per-layer lists; apart they would each re-derive them.
The transformer and resnet live in their own modules and reuse this one's parts.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import InvalidInput

from .activations import Activation, get_activation
from .activations.mixed import MixedActivation, slice_key
from .blocks import hidden_width, init_family_weight_
from .layers import (
    BatchedConv2d,
    BatchedLinear,
    BatchedNorm,
    apply_dropout,
    dropout_masks,
    init_weight_,
)
from .spec import ArchSpec

ActParams = Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class LayerInfo:
    """One hidden layer (a linear/conv followed by an activation).

    ``pre`` is the width the layer produces (the activation's input), ``post`` the
    width after the activation; ``spatial`` is (H, W) of a conv layer before pooling.
    """

    index: int
    kind: str  # "conv" or "dense"
    family: str
    n_in: int
    pre: int
    post: int
    spatial: tuple[int, int] | None
    residual: bool


def _dropout_seed(seed: int) -> int:
    """A dropout stream seed derived from the candidate's seed, distinct from its init stream."""
    return (int(seed) * 1_000_003 + 0x5EED) % (2**63 - 1)


def _act_init_seed(seed: int, layer: int) -> int:
    """The stream a seeded activation (VAF, spline) draws its random init from, per layer."""
    return (int(seed) * 1_000_033 + 7919 * (layer + 1) + 0xAC7) % (2**63 - 1)


def _make_activation(cls: type[Activation], params: Sequence[Mapping[str, Any]], units: int,
                     layout: str, seeds: Sequence[int], layer: int) -> Activation:
    """Build one slice's activation; families with random init get one stream per candidate,
    so candidate i of a population starts exactly as a K=1 net with its seed does."""
    if getattr(cls, "seeded_init", False):
        act = cls(params, units=units, layout=layout,  # type: ignore[call-arg]
                  init_seeds=[_act_init_seed(s, layer) for s in seeds])
    else:
        act = cls(params, units=units, layout=layout)  # type: ignore[arg-type]
    if layout == "conv":
        act._n_spatial = 2
    return act


FamilySpec = str | Sequence[str]  # one family, or one per hidden layer (scope "layer")


def _layer_names(arch: ArchSpec, family: FamilySpec, what: str) -> list[str]:
    n_layers = arch.n_hidden_layers()
    if isinstance(family, str):
        return [family] * n_layers
    names = list(family)
    if len(names) != n_layers:
        raise InvalidInput(
            f"{what}: {len(names)} activation families given for {n_layers} hidden layers; "
            "give one family, or one per hidden layer"
        )
    if arch.activation_scope == "net" and len(set(names)) > 1:
        raise InvalidInput(
            f"{what}: different families per layer need activation_scope='layer'; "
            "with scope 'net' give one family"
        )
    return names


def resolve_layers(
    arch: ArchSpec, family: FamilySpec | None, act_params: Sequence[ActParams],
    families: Sequence[FamilySpec | None] | None = None,
) -> tuple[list[list[type[Activation]]], list[list[Mapping[str, Any]]]]:
    """Per hidden layer and candidate: the family class and the parameter dict.

    ``family`` is the population's family (one name, or one per hidden layer);
    ``families`` optionally gives each candidate its own (``None`` entries take
    ``family``). ``act_params`` has one entry per candidate: a dict (the same
    parameters at every layer) or, with ``activation_scope="layer"``, a list with one
    dict per hidden layer. Returns ``classes[layer][c]`` and ``params[layer][c]``.
    """
    n_layers = arch.n_hidden_layers()
    k = len(act_params)
    if families is not None and len(families) != k:
        raise InvalidInput(f"{len(families)} families for {k} candidates")
    per_cand = list(families) if families is not None else [None] * k
    classes: list[list[type[Activation]]] = [[] for _ in range(n_layers)]
    cache: dict[tuple[str, ...], list[type[Activation]]] = {}
    for c in range(k):
        spec = per_cand[c] if per_cand[c] is not None else family
        if spec is None:
            raise InvalidInput(f"candidate {c} has no activation family; give the population's "
                               "family or one per candidate")
        names = tuple(_layer_names(arch, spec, f"candidate {c}"))
        if names not in cache:
            cache[names] = [get_activation(n) for n in names]
        for layer, cls in enumerate(cache[names]):
            classes[layer].append(cls)
    per_layer: list[list[Mapping[str, Any]]] = [[] for _ in range(n_layers)]
    for c, p in enumerate(act_params):
        if isinstance(p, Mapping):
            layer_params: Sequence[Mapping[str, Any]] = [p] * n_layers
        elif arch.activation_scope == "layer" and isinstance(p, Sequence) and not isinstance(p, str):
            layer_params = list(p)
            if len(layer_params) != n_layers or not all(isinstance(q, Mapping) for q in layer_params):
                raise InvalidInput(
                    f"candidate {c}: act_params needs one dict per hidden layer "
                    f"({n_layers}), got {len(layer_params)} entries"
                )
        else:
            raise InvalidInput(
                f"candidate {c}: act_params must be a dict"
                + (" or a list of dicts (one per hidden layer)" if arch.activation_scope == "layer"
                   else "; per-layer lists need activation_scope='layer'")
            )
        for layer in range(n_layers):
            per_layer[layer].append(layer_params[layer])
    return classes, per_layer


def candidate_slice_keys(
    arch: ArchSpec, family: FamilySpec | None, act_params: Sequence[ActParams],
    families: Sequence[FamilySpec | None] | None = None,
) -> list[tuple[Any, ...]]:
    """Per candidate: its (family, structural parameters) at every hidden layer.

    Candidates with equal keys fall in the same slice of every mixed layer; the engine
    orders a population by these keys so each slice is one contiguous run of K.
    """
    classes, per_layer = resolve_layers(arch, family, act_params, families)
    return [tuple(slice_key(classes[layer][c], per_layer[layer][c]) for layer in range(len(classes)))
            for c in range(len(act_params))]


def _structural(cls: type[Activation], params: Mapping[str, Any]) -> dict[str, Any]:
    return cls.structural_values(params)


# ----- architecture dispatch (transformer, resnet: models/transformer.py, models/resnet.py) -----
_ARCHITECTURES: dict[str, type[PopulationNet]] = {}
# Built in their own modules, which import this one: loaded on first use, so no circle.
_ARCHITECTURE_MODULES = {"transformer": "models.transformer", "resnet": "models.resnet"}


def register_architecture(kind: str) -> Any:
    """Class decorator: ``PopulationNet(arch, ...)`` builds this subclass for ``arch.kind``."""
    def add(cls: type[PopulationNet]) -> type[PopulationNet]:
        _ARCHITECTURES[kind] = cls
        return cls
    return add
# ----- end of architecture dispatch -------------------------------------------------------------


def layer_widths(cls: type[Activation], params: Mapping[str, Any], units: int,
                 param_match: bool = True) -> tuple[int, int]:
    """``(pre, post)``: the width a layer of nominal ``units`` must produce for this family,
    and the width after its activation (maxout: k*units -> units; crelu: units -> 2*units;
    gated: 2h -> h, with h = 2/3 of ``units`` under ``param_match``)."""
    st = _structural(cls, params)
    pre = cls.pre_units(hidden_width(cls, units, param_match), st)
    return pre, cls.post_units(pre, st)


def _layer_activation(classes: Sequence[type[Activation]], params: Sequence[Mapping[str, Any]],
                      units: int, layout: str, seeds: Sequence[int], layer: int,
                      param_match: bool = True) -> tuple[Activation, int, int]:
    """One hidden layer's activation module for all K candidates, and its (pre, post) widths.

    Candidates whose family and structural parameters agree form one slice; one slice
    is the family's own module (exactly as before mixing existed), several slices
    become a :class:`MixedActivation`. Every candidate must need the same widths.
    """
    widths = [layer_widths(cls, p, units, param_match)
              for cls, p in zip(classes, params, strict=True)]
    if len(set(widths)) > 1:
        detail = ", ".join(sorted({f"{cls.name}{dict(_structural(cls, p))}: {w[0]}->{w[1]}"
                                   for cls, p, w in zip(classes, params, widths, strict=True)}))
        raise InvalidInput(
            f"hidden layer {layer}: candidates of one population need the same widths around "
            f"the activation, got {detail}; group candidates with models.populations.population_key"
        )
    pre, post = widths[0]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for c, (cls, p) in enumerate(zip(classes, params, strict=True)):
        groups.setdefault(slice_key(cls, p), []).append(c)
    built = []
    for positions in groups.values():
        cls = classes[positions[0]]
        built.append((_make_activation(cls, [params[c] for c in positions], pre, layout,
                                       [seeds[c] for c in positions], layer), positions))
    if len(built) == 1:
        return built[0][0], pre, post
    return MixedActivation(built, pre, layout, len(classes)), pre, post  # type: ignore[arg-type]


class PopulationNet(nn.Module):
    """K candidates of one architecture, trained together.

    Args:
        arch: the architecture (validated here).
        family: one family name, or one per hidden layer (``activation_scope="layer"``).
        act_params: one entry per candidate (see :func:`resolve_layers`); K = its length.
        n_inputs: features per row.
        n_outputs: classes, or 1 for regression.
        seeds: one per candidate: weight init (and dropout). Default ``0..K-1``.

    Forward: ``(B, n_inputs) -> (K, B, n_outputs)``. Pass a list as ``preacts`` to
    collect each hidden layer's pre-activation as ``(K, N, U)`` (N = rows, or
    rows x positions for conv layers; U = channels/units).
    """

    def __new__(cls, arch: ArchSpec | None = None, *args: Any, **kwargs: Any) -> PopulationNet:
        """``PopulationNet(arch, ...)`` is the subclass registered for ``arch.kind`` if any
        (transformer, resnet); mlp and cnn are built here."""
        if cls is PopulationNet and arch is not None:
            if arch.kind in _ARCHITECTURE_MODULES and arch.kind not in _ARCHITECTURES:
                importlib.import_module(_ARCHITECTURE_MODULES[arch.kind])
            cls = _ARCHITECTURES.get(arch.kind, cls)
        return super().__new__(cls)

    def __init__(
        self,
        arch: ArchSpec,
        family: FamilySpec | None,
        act_params: Sequence[ActParams],
        n_inputs: int,
        n_outputs: int,
        seeds: Sequence[int] | None = None,
        families: Sequence[FamilySpec | None] | None = None,
    ):
        super().__init__()
        self._setup(arch, act_params, n_inputs, n_outputs, seeds)
        k, seeds = self.k, self.seeds
        classes, per_layer = resolve_layers(arch, family, act_params, families)
        # candidate_families[c][layer]: each candidate's family per hidden layer
        self.candidate_families = [[classes[layer][c].name for layer in range(len(classes))]
                                   for c in range(k)]

        gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.convs = nn.ModuleList()
        self.dense = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        self.layers: list[LayerInfo] = []

        def inits(layer: int) -> list[str]:  # each candidate's weight init for this layer
            return [cls.weight_init for cls in classes[layer]]

        layer = 0
        if arch.kind == "cnn":
            assert arch.input_shape is not None
            c_in, h, w = arch.input_shape
            for i, channels in enumerate(arch.conv_channels):
                act, pre, post = _layer_activation(classes[layer], per_layer[layer], channels,
                                                   "conv", seeds, layer, arch.param_match)
                conv = BatchedConv2d(k, c_in, pre, arch.kernel, shared_input=(i == 0),
                                     bias=arch.norm != "batch")
                init_family_weight_(conv, classes[layer], per_layer[layer], gens, first=(i == 0))
                self.convs.append(conv)
                self.norms.append(self._make_norm(k, pre, "conv"))
                self.acts.append(act)
                self.layers.append(LayerInfo(layer, "conv", self._layer_family(layer), c_in, pre,
                                             post, (h, w), arch.residual and i > 0 and c_in == post))
                c_in, h, w = post, h // arch.pool, w // arch.pool
                layer += 1
            n_in = c_in * h * w
            shared = False
        else:
            n_in, shared = self.n_inputs, True
        for j, width in enumerate(arch.hidden):
            act, pre, post = _layer_activation(classes[layer], per_layer[layer], width, "mlp",
                                               seeds, layer, arch.param_match)
            lin = BatchedLinear(k, n_in, pre, shared_input=shared, bias=arch.norm != "batch")
            init_family_weight_(lin, classes[layer], per_layer[layer], gens, first=(layer == 0))
            self.dense.append(lin)
            self.norms.append(self._make_norm(k, pre, "mlp"))
            self.acts.append(act)
            self.dropout_kinds.append([cls.dropout_kind for cls in classes[layer]])
            self.layers.append(LayerInfo(layer, "dense", self._layer_family(layer), n_in, pre, post,
                                         None, arch.residual and j > 0 and n_in == post))
            n_in, shared = post, False
            layer += 1
        self.out = BatchedLinear(k, n_in, self.n_outputs, shared_input=shared)
        # The output layer follows the init of the last hidden layer's family (per candidate).
        init_weight_(self.out, inits(len(classes) - 1) if classes else "default", gens)

    def _setup(self, arch: ArchSpec, act_params: Sequence[ActParams], n_inputs: int,
               n_outputs: int, seeds: Sequence[int] | None) -> None:
        """What every population net checks and records, whatever its architecture."""
        arch.validate(n_inputs=n_inputs)
        k = len(act_params)
        if k == 0:
            raise InvalidInput("a population needs at least one candidate")
        if n_outputs < 1:
            raise InvalidInput(f"n_outputs must be >= 1, got {n_outputs}")
        seeds = list(range(k)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != k:
            raise InvalidInput(f"{len(seeds)} seeds for {k} candidates")
        self.arch, self.k, self.seeds = arch, k, seeds
        self.n_inputs, self.n_outputs = int(n_inputs), int(n_outputs)
        # per dense layer, each candidate's dropout kind (SELU-like families: alpha)
        self.dropout_kinds: list[list[str]] = []
        self._alpha_masks: dict[int, torch.Tensor] = {}
        self._drop_gens: list[torch.Generator] | None = None

    @property
    def families(self) -> list[str]:
        """Per hidden layer: its family, or ``"mixed"`` where candidates differ."""
        return [self._layer_family(layer) for layer in range(len(self.candidate_families[0]))]

    def _layer_family(self, layer: int) -> str:
        names = {fams[layer] for fams in self.candidate_families}
        return names.pop() if len(names) == 1 else "mixed"

    def _make_norm(self, k: int, units: int, layout: str) -> nn.Module:
        if self.arch.norm == "none":
            return nn.Identity()
        return BatchedNorm(k, units, self.arch.norm, layout)

    # ----- forward --------------------------------------------------------------------
    def forward(self, x: torch.Tensor, preacts: list[torch.Tensor] | None = None) -> torch.Tensor:
        """``x (B, n_inputs) -> (K, B, n_outputs)``; appends pre-activations to ``preacts``."""
        b = x.shape[0]
        k = self.k
        layer = 0
        h: torch.Tensor = x
        if self.arch.kind == "cnn":
            assert self.arch.input_shape is not None
            h = x.reshape(b, *self.arch.input_shape)  # (B, C, H, W)
            for conv in self.convs:
                info = self.layers[layer]
                z = self.norms[layer](conv(h))  # (B, K*pre, H, W)
                hh, ww = z.shape[-2:]
                z5 = z.view(b, k, info.pre, hh, ww)  # (B, K, pre, H, W)
                if preacts is not None:
                    preacts.append(z5.detach().permute(1, 0, 3, 4, 2).reshape(k, -1, info.pre))
                a = self.acts[layer](z5).reshape(b, k * info.post, hh, ww)  # (B, K*post, H, W)
                if info.residual:
                    a = a + h
                if self.arch.pool > 1:
                    a = F.max_pool2d(a, self.arch.pool)
                h = a
                layer += 1
            h = h.reshape(b, k, -1).transpose(0, 1)  # (K, B, F)
        p = float(self.arch.dropout)
        for j, lin in enumerate(self.dense):
            info = self.layers[layer]
            z = self.norms[layer](lin(h))  # (K, B, pre)
            if preacts is not None:
                preacts.append(z.detach())
            a = self.acts[layer](z)  # (K, B, post)
            if p > 0 and self.training:
                masks = dropout_masks(self._dropout_generators(a.device), (b, info.post), 1 - p, a.device)
                a = apply_dropout(a, masks, p, self._dropout_kind(j, a.device))
            if info.residual:
                a = a + h
            h = a
            layer += 1
        # computed as (K, n_outputs, B) and returned as a (K, B, n_outputs) view
        return self.out.forward_outputs_first(h).transpose(1, 2)

    def _dropout_kind(self, j: int, device: torch.device) -> str | torch.Tensor:
        """Dense layer ``j``'s dropout kind: one name, or a ``(K, 1, 1)`` bool "alpha" mask
        when the population mixes SELU-like and other families (cached on the device, so
        a CUDA graph captures no host-to-device copy)."""
        kinds = self.dropout_kinds[j]
        if len(set(kinds)) == 1:
            return kinds[0]
        mask = self._alpha_masks.get(j)
        if mask is None or mask.device != device:
            mask = torch.tensor([kd == "alpha" for kd in kinds], device=device).reshape(-1, 1, 1)
            self._alpha_masks[j] = mask
        return mask

    def _dropout_generators(self, device: torch.device) -> list[torch.Generator]:
        if self._drop_gens is None or self._drop_gens[0].device != device:
            self._drop_gens = [
                torch.Generator(device=device).manual_seed(_dropout_seed(s)) for s in self.seeds
            ]
        return self._drop_gens

    # ----- bookkeeping ----------------------------------------------------------------
    def own_modules(self) -> Iterator[nn.Module]:
        """Every submodule except activations (which compact themselves)."""
        stack: list[nn.Module] = [self]
        while stack:
            m = stack.pop()
            yield m
            stack.extend(c for c in m.children() if not isinstance(c, Activation))

    def parameter_groups(self) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
        """``(decay, no_decay)``: weight decay applies to linear/conv weights only.

        Biases, norm affine parameters and every parameter inside an activation
        are never decayed (decaying a learned slope or coefficient changes the
        activation's shape, not the network's capacity).
        """
        decay_ids = {
            id(m.weight) for m in self.own_modules() if isinstance(m, (BatchedLinear, BatchedConv2d))
        }
        decay: list[tuple[str, nn.Parameter]] = []
        no_decay: list[tuple[str, nn.Parameter]] = []
        for name, p in self.named_parameters():
            (decay if id(p) in decay_ids else no_decay).append((name, p))
        return decay, no_decay

    def keep(self, index: torch.Tensor | Sequence[int]) -> None:
        """Keep only the candidates at positions ``index`` (compaction after pruning)."""
        index = torch.as_tensor(index, dtype=torch.long)
        for m in self.own_modules():
            for name, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[name] = nn.Parameter(p.data.index_select(0, index.to(p.device)),
                                                       requires_grad=p.requires_grad)
            for name, buf in list(m._buffers.items()):
                if buf is not None:
                    m._buffers[name] = buf.index_select(0, index.to(buf.device))
        for act in self.acts:
            assert isinstance(act, Activation)
            act.keep(index.to(act._probe_device()))
        pos = index.tolist()
        self.seeds = [self.seeds[i] for i in pos]
        self.candidate_families = [self.candidate_families[i] for i in pos]
        self.dropout_kinds = [[kinds[i] for i in pos] for kinds in self.dropout_kinds]
        self._alpha_masks = {}
        self.layers = [LayerInfo(info.index, info.kind, self._layer_family(info.index), info.n_in,
                                 info.pre, info.post, info.spatial, info.residual)
                       for info in self.layers]
        if self._drop_gens is not None:
            self._drop_gens = [self._drop_gens[i] for i in pos]
        self.k = len(pos)

    def param_positions(self) -> dict[str, list[int] | None]:
        """Per parameter name: the candidate positions its leading axis holds (None: all K).

        Only the slices of a mixed layer hold fewer than K candidates; the optimizer
        uses this to give each slice its candidates' learning rates and state.
        """
        out: dict[str, list[int] | None] = {name: None for name, _ in self.named_parameters()}
        for layer, act in enumerate(self.acts):
            if isinstance(act, MixedActivation):
                for name, _, positions in act.param_positions():
                    out[f"acts.{layer}.{name}"] = positions
        return out

    def _candidate_views(self, i: int) -> dict[str, torch.Tensor]:
        """Candidate ``i``'s state as ``(1, ...)`` views, named as in a K=1 net of its family."""
        if not 0 <= i < self.k:
            raise IndexError(f"candidate position {i} out of range for K={self.k}")
        views = {name: t[i : i + 1] for name, t in self.state_dict().items()
                 if not name.startswith("acts.")}
        for layer, act in enumerate(self.acts):
            assert isinstance(act, Activation)
            leaf, j = act.locate(i)
            for name, t in leaf.state_dict().items():
                views[f"acts.{layer}.{name}"] = t[j : j + 1]
        return views

    def candidate_state(self, i: int) -> dict[str, np.ndarray]:
        """Candidate ``i``'s parameters and buffers, each with a leading axis of 1.

        Loadable with :meth:`load_candidate_state` into any net of the same
        architecture and of that candidate's family (normally a K=1 one, which then
        reproduces candidate i); a mixed population's candidate state has the keys of
        a single-family net.
        """
        return {name: t.detach().cpu().numpy().copy() for name, t in self._candidate_views(i).items()}

    def load_candidate_state(self, state: Mapping[str, Any], position: int = 0) -> None:
        """Write one candidate's state (from :meth:`candidate_state`) into slot ``position``."""
        own = self._candidate_views(position)
        missing, unexpected = set(own) - set(state), set(state) - set(own)
        if missing or unexpected:
            raise InvalidInput(
                f"state does not match this network: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}; same architecture and family?"
            )
        with torch.no_grad():
            for name, t in own.items():
                src = torch.as_tensor(np.asarray(state[name]))
                if tuple(src.shape[1:]) != tuple(t.shape[1:]):
                    raise InvalidInput(
                        f"state {name!r} has shape {tuple(src.shape)}, the network expects "
                        f"(1, {', '.join(map(str, t.shape[1:]))})"
                    )
                t[0].copy_(src[0].to(t.dtype))

    # ----- size -----------------------------------------------------------------------
    def count_params(self, i: int = 0) -> int:
        """Trainable parameters of candidate ``i`` (weights, biases, norm affine, activation)."""
        total = sum(p[0].numel() for name, p in self.named_parameters() if not name.startswith("acts."))
        for act in self.acts:
            assert isinstance(act, Activation)
            leaf, _ = act.locate(i)
            total += sum(p[0].numel() for p in leaf.parameters())
        return int(total)

    def count_flops(self, i: int = 0) -> int:
        """FLOPs of one forward of one row for candidate ``i``.

        Counted: 2 per multiply-add of every linear and conv layer (including the
        output layer), 1 per bias add (hidden layers have no bias before batch norm),
        1 per residual add, and each activation's ``element_flops`` per
        pre-activation element (a trainable unit can cost as much as a layer).
        Not counted: normalisation, dropout, pooling and the loss.
        """
        flops = 0
        bias = 0 if self.arch.norm == "batch" else 1
        for info, act in zip(self.layers, self.acts, strict=True):
            leaf, _ = act.locate(i)
            act_cost = type(leaf).element_flops(leaf.structural)
            if info.kind == "conv":
                assert info.spatial is not None
                positions = info.spatial[0] * info.spatial[1]
                kk = self.arch.kernel * self.arch.kernel
                flops += positions * info.pre * (2 * info.n_in * kk + bias + act_cost)
                if info.residual:
                    flops += positions * info.post
            else:
                flops += info.pre * (2 * info.n_in + bias + act_cost)
                if info.residual:
                    flops += info.post
        flops += self.n_outputs * (2 * self.out.n_in + 1)
        return int(flops)

    def elements_per_row(self) -> int:
        """Activation elements per input row per candidate (sizes evaluation chunks)."""
        total = 0
        for info in self.layers:
            positions = math.prod(info.spatial) if info.spatial else 1
            total += (info.pre + info.post) * positions
        return max(total + self.n_outputs, 1)

    def extra_repr(self) -> str:
        return f"k={self.k}, families={self.families}"

