"""Which candidates can share a population, and what each costs relative to ReLU.

A population shares its linear/conv layers (one batched pass for K), so its candidates
must need the same widths around every activation; their families may differ
(:class:`models.activations.mixed.MixedActivation`). Families that change widths
(maxout's k: the layer produces k*units; crelu: the activation doubles them) can
only share with families of the same widths, which :func:`population_key` captures.
Structural parameters (rational degree, VAF width/depth, spline grid, sharing) do not
need to match: each distinct combination becomes its own slice of K.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from .activations import get_activation
from .network import ActParams, FamilySpec, _layer_names, layer_widths
from .spec import ArchSpec


def _layer_units(arch: ArchSpec) -> list[int]:
    return (list(arch.conv_channels) if arch.kind == "cnn" else []) + list(arch.hidden)


def population_key(arch: ArchSpec, family: FamilySpec, act_params: ActParams) -> Hashable:
    """A hashable shape signature: candidates with equal keys can train in one population.

    It is the ``(pre, post)`` width pair of every hidden layer: the width the linear/conv
    layer produces for this family and structural parameters, and the width after the
    activation. Everything else a population shares (architecture, batch size, epochs,
    optimizer, device) is the caller's to hold equal. For ``mlp:64,64``: relu, prelu,
    vaf (any width/depth), groupsort, k_wta ... all give ``((64, 64), (64, 64))``;
    maxout k=2 ``((128, 64), (128, 64))``; crelu ``((64, 128), (128, 256))``... (crelu's
    next layer reads 128 units).

    Args:
        arch: the architecture.
        family: one family, or one per hidden layer (``activation_scope="layer"``).
        act_params: the candidate's parameters (a dict, or one per hidden layer).
    """
    names = _layer_names(arch, family, "population_key")
    units = _layer_units(arch)
    params = act_params if not isinstance(act_params, Mapping) else [act_params] * len(names)
    return tuple(layer_widths(get_activation(n), p, u)
                 for n, p, u in zip(names, list(params), units, strict=True))


def structural_params(family: str, act_params: Mapping[str, Any]) -> dict[str, Any]:
    """The family's structural parameters of ``act_params`` (defaults filled): what makes a
    slice; candidates no longer need to agree on them to share a population."""
    cls = get_activation(family)
    resolved = cls.resolve_params(act_params)
    return {s.name: resolved[s.name] for s in cls.space() if s.structural}


def plan_populations(arch: ArchSpec, entries: Sequence[tuple[FamilySpec, ActParams]],
                     k: int) -> list[list[int]]:
    """Split candidates into populations of at most ``k``: same :func:`population_key`
    within each, families mixed freely, in order of first appearance.

    ``entries``: one ``(family, act_params)`` per candidate (e.g. what Optuna's asks
    returned). Returns lists of indices into ``entries``; train each list as one
    population, passing each candidate's family as ``Candidate.family``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    groups: dict[Hashable, list[int]] = {}
    for i, (family, params) in enumerate(entries):
        groups.setdefault(population_key(arch, family, params), []).append(i)
    return [members[j : j + k] for members in groups.values() for j in range(0, len(members), k)]


def _structural_choices(spec: Any) -> list[Any]:
    """The values a structural parameter can take (a range's ends and middle for numbers)."""
    if spec.kind == "categorical":
        return list(spec.choices or (spec.default,))
    if spec.kind == "int":
        step = int(spec.step or 1)
        return list(range(int(spec.low), int(spec.high) + 1, step))[:32]
    return [spec.low, spec.default, spec.high]


def fixed_population_key(arch: ArchSpec, family: str) -> Hashable | None:
    """The family's :func:`population_key` when no structural value changes it, else None.

    A family with a fixed key (relu, prelu, vaf of any width, spline of any grid...) can be
    planned into a mixed population before anything is sampled; one whose widths follow a
    sampled value (maxout's k) can only share with candidates that drew the same value,
    so the search gives it populations of its own with that value fixed.
    """
    from itertools import islice, product

    cls = get_activation(family)
    structural = [s for s in cls.space() if s.structural]
    keys = set()
    combos = product(*(_structural_choices(s) for s in structural)) if structural else [()]
    for combo in islice(combos, 256):
        params = {s.name: v for s, v in zip(structural, combo, strict=True)}
        try:
            keys.add(population_key(arch, family, params))
        except Exception:  # noqa: BLE001 - a value this architecture refuses: not sampled either
            continue
        if len(keys) > 1:
            return None
    return keys.pop() if len(keys) == 1 else None
