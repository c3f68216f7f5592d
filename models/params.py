"""A family's searchable parameters, without torch.

:class:`ParamSpec` lives here, apart from the ``nn.Module`` families of
:mod:`models.activations.base` (which re-exports it), so
the search side (spec validation, Optuna's asks: :mod:`models.catalogue`) can read every
family's space in a process that never imports torch, such as ``actsearch search``'s
coordinator on its way to the first epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from core.errors import InvalidInput

ParamKind = Literal["float", "int", "categorical"]


@dataclass(frozen=True)
class ParamSpec:
    """One searchable parameter of a family.

    Attributes:
        name: key in the candidate's parameter dict.
        kind: float, int or categorical.
        low, high, log, step: range for float/int (Optuna's distributions).
        choices: values for categorical.
        default: value used when the parameter is not searched.
        structural: changes tensor shapes or code paths (maxout's k, rational
            degrees, sharing). Structural values are fixed per population; all
            K candidates of a population share them.
        learned: the value is the *initial* value of a tensor that is trained
            with the weights (e.g. prelu's slope); otherwise it stays fixed.
        divides_width: a categorical whose value must divide the width of every
            layer the activation is applied to (groupsort's group): the search only
            offers the choices that do (:meth:`choices_for`).
        help: one line for the catalogue.
    """

    name: str
    kind: ParamKind
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    structural: bool = False
    learned: bool = False
    divides_width: bool = False
    help: str = ""

    def choices_for(self, widths: Sequence[int]) -> tuple[Any, ...]:
        """The categorical choices usable with layers of these widths (all, unless
        ``divides_width``: then those dividing every width, possibly none)."""
        choices = tuple(self.choices or ())
        if not self.divides_width:
            return choices
        return tuple(c for c in choices if all(int(w) % int(c) == 0 for w in widths))

    def as_dict(self) -> dict[str, Any]:
        """JSON-able description for the catalogue (API, CLI)."""
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "default": self.default,
            "structural": self.structural,
            "learned": self.learned,
            "help": self.help,
        }
        if self.kind == "categorical":
            out["choices"] = list(self.choices or ())
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        return out


SHARING = ParamSpec(
    "sharing",
    "categorical",
    default="layer",
    choices=("layer", "unit"),
    structural=True,
    help="one set of activation parameters per layer, or one per unit",
)


def resolve_params(family: str, space: Sequence[ParamSpec],
                   params: Mapping[str, Any]) -> dict[str, Any]:
    """A family's parameters with defaults filled in; unknown keys refused."""
    known = {s.name: s for s in space}
    unknown = set(params) - set(known)
    if unknown:
        raise InvalidInput(
            f"{family}: unknown parameter(s) {sorted(unknown)}; "
            f"known: {sorted(known) or 'none'}"
        )
    return {name: params.get(name, spec.default) for name, spec in known.items()}


def structural_values(family: str, space: Sequence[ParamSpec],
                      params: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved values of the parameters that fix a layer's shape (``structural``)."""
    resolved = resolve_params(family, space, params)
    return {s.name: resolved[s.name] for s in space if s.structural}
