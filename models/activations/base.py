"""The contract every activation family follows, and the registry of families.

A family is one :class:`Activation` subclass registered by name. It is always
*batched*: one module holds K candidates of a population, each with its own
parameter values (sampled hyperparameters and, for trainable families, learned
tensors). K=1 is a plain network.

Layouts (where the candidate axis and the unit axis sit in the input):

* ``"mlp"``:  x is ``(K, B, U)``; a parameter of shape ``(K, U)`` views as ``(K, 1, U)``.
* ``"conv"``: x is ``(B, K, U, *spatial)`` (grouped-conv layout, channels are units);
  a parameter ``(K, U)`` views as ``(1, K, U, 1, ...)``.

In both layouts the unit axis is dim 2, so families that mix units (maxout,
groupsort, k-WTA, crelu) work along ``dim=2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from core.errors import InvalidInput, UnknownActivation

from ..params import SHARING as SHARING  # re-exported: the families import it from here
from ..params import ParamKind as ParamKind
from ..params import ParamSpec, resolve_params, structural_values

Layout = Literal["mlp", "conv"]
WeightInit = Literal["default", "kaiming_normal", "lecun_normal", "xavier_normal", "snake", "siren"]
DropoutKind = Literal["standard", "alpha"]

UNIT_DIM = 2


class Activation(nn.Module):
    """Base class of every family: a batched activation for K candidates.

    Subclasses set the class attributes, implement :meth:`forward`, and declare
    their parameters in :meth:`space`. Learned tensors are ``nn.Parameter`` with a
    leading K axis; fixed per-candidate values are buffers with a leading K axis,
    so compaction (:meth:`keep`) and ``state_dict`` treat both alike.

    Args:
        params: one dict per candidate (length K). Missing keys take the default.
            Structural keys must be equal across candidates.
        units: number of units of the pre-activation (U).
        layout: ``"mlp"`` or ``"conv"`` (see module docstring).
    """

    name: ClassVar[str] = ""
    formula: ClassVar[str] = ""
    trainable: ClassVar[bool] = False
    pointwise: ClassVar[bool] = True
    weight_init: ClassVar[WeightInit] = "default"
    dropout_kind: ClassVar[DropoutKind] = "standard"
    reference: ClassVar[str] = ""
    flops_per_element: ClassVar[int] = 1
    #: What :meth:`curve` samples: the activation itself, or (gated units) the gate's response.
    curve_label: ClassVar[str] = "activation"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__()
        if len(params) == 0:
            raise InvalidInput(f"{self.name}: a population needs at least one candidate")
        if layout not in ("mlp", "conv"):
            raise InvalidInput(f"layout must be 'mlp' or 'conv', not {layout!r}")
        self.k = len(params)
        self.units = int(units)
        self.layout: Layout = layout
        self.params_list = [self.resolve_params(p) for p in params]
        self.structural = {
            s.name: self.params_list[0][s.name] for s in self.space() if s.structural
        }
        for i, p in enumerate(self.params_list[1:], start=1):
            for key, value in self.structural.items():
                if p[key] != value:
                    raise InvalidInput(
                        f"{self.name}: structural parameter {key!r} differs between candidates "
                        f"0 ({value!r}) and {i} ({p[key]!r}); a population shares its shape"
                    )

    # ----- description --------------------------------------------------------------
    @classmethod
    def space(cls) -> list[ParamSpec]:
        """The parameters Optuna samples for this family (empty for parameter-free ones)."""
        return []

    @classmethod
    def structural_values(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters that fix a layer's shape (``ParamSpec.structural``), resolved.

        The one place that says which they are: a population shares them, so the
        search fixes them per population and the builders size layers from them.
        """
        return structural_values(cls.name, cls.space(), params)

    @classmethod
    def resolve_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults and reject unknown keys."""
        return resolve_params(cls.name, cls.space(), params)

    @classmethod
    def pre_units(cls, units: int, structural: Mapping[str, Any]) -> int:
        """Pre-activation width the layer must produce for ``units`` outputs (maxout: k*units)."""
        return units

    @classmethod
    def post_units(cls, pre: int, structural: Mapping[str, Any]) -> int:
        """Width after the activation for ``pre`` inputs (crelu: 2*pre; maxout: pre/k)."""
        return pre

    @classmethod
    def element_flops(cls, structural: Mapping[str, Any]) -> int:
        """Approximate FLOPs per pre-activation element (counted in a network's FLOPs).

        Trainable units can cost far more than a ReLU (a rational is two
        polynomials, a meta-neuron a small network), and a FLOPs column that
        ignored them would flatter exactly the families it should not.
        """
        return cls.flops_per_element

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """JSON-able catalogue entry."""
        return {
            "name": cls.name,
            "formula": cls.formula,
            "trainable": cls.trainable,
            "pointwise": cls.pointwise,
            "weight_init": cls.weight_init,
            "dropout": cls.dropout_kind,
            "reference": cls.reference,
            "curve_label": cls.curve_label,
            "parameters": [s.as_dict() for s in cls.space()],
        }

    # ----- tensors ----------------------------------------------------------------
    def per_candidate(self, key: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(K,)`` tensor of one parameter's value for each candidate."""
        return torch.tensor([float(p[key]) for p in self.params_list], dtype=dtype)

    def param_units(self) -> int:
        """U for per-unit sharing, 1 for per-layer (needs a ``sharing`` param)."""
        return self.units if self.structural.get("sharing", "layer") == "unit" else 1

    def view(self, p: torch.Tensor) -> torch.Tensor:
        """Broadcast a ``(K, U')`` or ``(K, U', *extra)`` tensor against the input layout.

        ``U'`` is U or 1. Trailing ``extra`` dims (e.g. a rational's coefficients)
        stay last, so ``view(p)[..., j]`` is coefficient j.
        """
        extra = p.shape[2:]
        if self.layout == "mlp":
            return p.reshape(p.shape[0], 1, p.shape[1], *extra)
        n_spatial = self._n_spatial
        return p.reshape(1, p.shape[0], p.shape[1], *([1] * n_spatial), *extra)

    _n_spatial: int = 2  # conv layout: number of spatial dims (set by the network builder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def curve(self, x: torch.Tensor) -> torch.Tensor | None:
        """Sample the activation on a 1-D grid ``x`` (G,) -> ``(K, U', G)``.

        ``U'`` is 1 for fixed and per-layer families and U for per-unit ones.
        Families that mix units (maxout, groupsort, k-WTA) return None: they have
        no 1-D curve. The default evaluates :meth:`forward` in the mlp layout.
        """
        if not self.pointwise:
            return None
        u = self.param_units()
        grid = x.to(self._probe_device()).reshape(1, -1, 1).expand(self.k, -1, u)  # (K, G, U')
        saved_units, saved_layout = self.units, self.layout
        try:
            self.units, self.layout = u, "mlp"
            with torch.no_grad():
                y = self.forward(grid.contiguous())  # (K, G, U')
        finally:
            self.units, self.layout = saved_units, saved_layout
        return y.transpose(1, 2).contiguous()

    def candidate_curve(self, x: torch.Tensor, pos: int) -> torch.Tensor | None:
        """Candidate ``pos``'s curve ``(U', G)`` on the grid ``x`` (None: no 1-D curve)."""
        y = self.curve(x)
        return None if y is None else y[pos]

    def leaves(self) -> list[Activation]:
        """The single-family modules behind this one (itself; a mixed layer: its slices)."""
        return [self]

    def locate(self, pos: int) -> tuple[Activation, int]:
        """The single-family module holding candidate ``pos``, and its position there."""
        if not 0 <= pos < self.k:
            raise IndexError(f"candidate position {pos} out of range for K={self.k}")
        return self, pos

    def _probe_device(self) -> torch.device:
        for t in list(self.parameters()) + list(self.buffers()):
            return t.device
        return torch.device("cpu")

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the candidates in ``index`` (compaction after pruning)."""
        for name, p in list(self._parameters.items()):
            if p is not None:
                self._parameters[name] = nn.Parameter(p.data.index_select(0, index))
        for name, b in list(self._buffers.items()):
            if b is not None:
                self._buffers[name] = b.index_select(0, index)
        self.params_list = [self.params_list[int(i)] for i in index.tolist()]
        self.k = len(self.params_list)
        for child in self.children():
            if isinstance(child, Activation):
                child.keep(index)

    def extra_repr(self) -> str:
        return f"k={self.k}, units={self.units}, layout={self.layout}, {self.structural}"


# ----- registry -----------------------------------------------------------------------
REGISTRY: dict[str, type[Activation]] = {}


def register(cls: type[Activation]) -> type[Activation]:
    """Class decorator: add a family to the registry under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__qualname__} has no name")
    if cls.name in REGISTRY:
        raise TypeError(f"activation {cls.name!r} registered twice")
    REGISTRY[cls.name] = cls
    return cls


# Looked up after lower-casing and "-" -> "_", so "k-wta" and "K_WTA" reach k_wta too.
ALIASES: dict[str, str] = {"swish": "silu", "kwta": "k_wta", "pade": "rational",
                           "meta_neuron": "vaf", "bspline": "spline"}


def get_activation(name: str) -> type[Activation]:
    """The family class for ``name`` (aliases allowed), or :class:`UnknownActivation`."""
    key = ALIASES.get(name.lower().replace("-", "_"), name.lower().replace("-", "_"))
    key = ALIASES.get(key, key)
    try:
        return REGISTRY[key]
    except KeyError:
        raise UnknownActivation(
            f"unknown activation {name!r}; choose from: {', '.join(sorted(REGISTRY))}"
        ) from None


def is_trainable(name: str) -> bool:
    """Whether the family learns parameters with the weights; UnknownActivation if no such family."""
    return get_activation(name).trainable


def families() -> list[type[Activation]]:
    """Every registered family, in registration order."""
    return list(REGISTRY.values())


@dataclass
class BaseFunction:
    """A parameter-free scalar function usable as the base of affine/rational/vaf families."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    formula: str = ""
    extras: dict[str, Any] = field(default_factory=dict)


BASE_FUNCTIONS: dict[str, BaseFunction] = {}


def register_base(name: str, fn: Callable[[torch.Tensor], torch.Tensor], formula: str = "") -> None:
    """Add a scalar function that affine/rational/vaf families may build on."""
    BASE_FUNCTIONS[name] = BaseFunction(name, fn, formula)
