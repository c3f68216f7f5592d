"""A composite activation: several families (slices of K) behind one activation module.

A mixed population shares its linear/conv layers (one batched pass for all K) and
differs only in the activation each candidate applies. :class:`MixedActivation`
receives a layer's pre-activations for all K candidates, exactly like a single-family
module, and applies each *slice*'s family on that slice's candidates. A slice is one
family with one set of structural parameters (a VAF's width and depth, a rational's
degree, per-layer or per-unit sharing): inside a slice the child module is the family's
ordinary batched form, so its fused kernels (:mod:`models.kernels`) and its per-candidate
parameters work unchanged, and any architecture that calls the layer's activation module
gets mixed families for free.

Slices are ``nn.ModuleDict`` entries under stable names (``s0``, ``s1``, ...), so
parameter names survive compaction (the optimizer keys its state by name); a slice
whose candidates are all dropped disappears.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn

from core.errors import InvalidInput

from .base import Activation, Layout


class MixedActivation(Activation):
    """K candidates' activations of one layer, one child module per slice of K.

    Args:
        slices: ``(module, positions)`` per slice: a built single-family activation for
            ``len(positions)`` candidates, and those candidates' positions in the
            population (together a partition of ``range(k)``).
        units: pre-activation width U (shared: the layer before is one batched pass).
        layout: ``"mlp"`` ``(K, B, U)`` or ``"conv"`` ``(B, K, U, *spatial)``.
        k: population size.
    """

    name = "mixed"
    formula = "each candidate's own family"

    def __init__(self, slices: Sequence[tuple[Activation, Sequence[int]]], units: int,
                 layout: Layout, k: int):
        nn.Module.__init__(self)  # no per-candidate params of its own: the children hold them
        self.k, self.units, self.layout = int(k), int(units), layout
        self.params_list = [{} for _ in range(self.k)]
        self.structural = {}
        self.slices = nn.ModuleDict()
        self.positions: dict[str, list[int]] = {}
        seen: list[int] = []
        for j, (module, pos) in enumerate(sorted(slices, key=lambda s: min(s[1]))):
            pos = [int(p) for p in pos]
            if module.k != len(pos):
                raise InvalidInput(f"slice {j}: a module for {module.k} candidates given "
                                   f"{len(pos)} positions")
            self.slices[f"s{j}"] = module
            self.positions[f"s{j}"] = pos
            seen += pos
        if sorted(seen) != list(range(self.k)):
            raise InvalidInput(f"slice positions {sorted(seen)} are not a partition of 0..{self.k - 1}")
        self._refresh()

    # ----- bookkeeping ------------------------------------------------------------------
    def _refresh(self) -> None:
        """Recompute the gather/scatter plan after building or compaction.

        When each slice's positions are one contiguous run and the slices follow each
        other (the engine orders candidates so), a slice is a narrow view of the input
        and the output is one ``cat``; otherwise ``index_select`` gathers each slice
        and one more ``index_select`` puts the outputs back in population order.
        """
        order = [p for name in self.slices for p in self.positions[name]]
        self.contiguous = order == list(range(self.k))
        device = self._probe_device()
        self._index = {name: torch.tensor(pos, dtype=torch.long, device=device)
                       for name, pos in self.positions.items()}
        inverse = torch.empty(self.k, dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(self.k)
        self._inverse = inverse.to(device)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        out = super()._apply(fn, recurse)
        self._refresh()  # index tensors follow the module's device
        return out

    def leaves(self) -> list[Activation]:
        return [m for m in self.slices.values() if isinstance(m, Activation)]

    def locate(self, pos: int) -> tuple[Activation, int]:
        for name, module in self.slices.items():
            positions = self.positions[name]
            if pos in positions:
                assert isinstance(module, Activation)
                return module, positions.index(pos)
        raise IndexError(f"candidate position {pos} out of range for K={self.k}")

    def param_positions(self) -> Iterator[tuple[str, nn.Parameter, list[int] | None]]:
        for name, module in self.slices.items():
            for pname, p in module.named_parameters():
                yield f"slices.{name}.{pname}", p, list(self.positions[name])

    def keep(self, index: torch.Tensor) -> None:
        """Keep the candidates at population positions ``index`` (in that new order)."""
        old = [int(i) for i in index.tolist()]
        for name in list(self.slices):
            positions = self.positions[name]
            local = [positions.index(o) for o in old if o in positions]
            new = [j for j, o in enumerate(old) if o in positions]
            if not local:
                del self.slices[name]
                del self.positions[name]
                continue
            module = self.slices[name]
            assert isinstance(module, Activation)
            module.keep(torch.tensor(local, dtype=torch.long, device=index.device))
            self.positions[name] = new
        # slices stay ordered by their first position
        names = sorted(self.slices, key=lambda n: min(self.positions[n]))
        reordered = nn.ModuleDict({n: self.slices[n] for n in names})
        self.slices = reordered
        self.k = len(old)
        self.params_list = [{} for _ in range(self.k)]
        self._refresh()

    # ----- forward ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = 0 if self.layout == "mlp" else 1  # the candidate axis
        outs = []
        if self.contiguous:
            # one split (its backward is one cat), not a narrow per slice: each narrow's
            # backward zero-fills a full (K, B, U) gradient, so 8 slices cost 8 fills and
            # 7 adds per layer (19% of a mixed K=32 step on CPU in torch.profiler)
            sizes = [len(self.positions[name]) for name in self.slices]
            parts = torch.split(x, sizes, dim)  # (K_s, B, U) views
            outs = [module(part) for module, part in zip(self.slices.values(), parts, strict=True)]
            return torch.cat(outs, dim)
        for name, module in self.slices.items():
            outs.append(module(x.index_select(dim, self._index[name])))
        return torch.cat(outs, dim).index_select(dim, self._inverse)

    def curve(self, x: torch.Tensor) -> torch.Tensor | None:
        """None: slices may have different U' (per-layer vs per-unit); use
        :meth:`candidate_curve` per position."""
        return None

    def candidate_curve(self, x: torch.Tensor, pos: int) -> torch.Tensor | None:
        module, j = self.locate(pos)
        return module.candidate_curve(x, j)

    def families_at(self) -> list[str]:
        """Family name of each candidate position."""
        out = [""] * self.k
        for name, module in self.slices.items():
            for p in self.positions[name]:
                out[p] = type(module).name
        return out

    def extra_repr(self) -> str:
        parts = [f"{n}: {type(m).name} x{len(self.positions[n])}" for n, m in self.slices.items()]
        return f"k={self.k}, units={self.units}, layout={self.layout}, " + ", ".join(parts)


def slice_key(cls: type[Activation], params: Mapping[str, object]) -> tuple[object, ...]:
    """What makes two candidates' activations one slice: the family and its structural values."""
    resolved = cls.resolve_params(params)
    return (cls.name, tuple(sorted((s.name, repr(resolved[s.name]))
                                   for s in cls.space() if s.structural)))
