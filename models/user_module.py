"""The user's own ``nn.Module`` with a candidate activation in each ``act()`` slot.

``actsearch.search_module(build, data)`` calls ``build(act)`` once per candidate;
the user's code calls ``act()`` (or ``act(width)``) wherever an activation goes
and gets a :class:`SlotActivation`: the candidate's family (K=1) adapted to the
user's tensors, ``(B, U)`` or ``(B, C, *spatial)`` with units on dim 1.

This module builds (:func:`build_candidate`), probes (:func:`probe_module`: slot
widths from a forward on real rows; a ``build`` that ignores ``act`` is refused),
adapts an existing model (:func:`replacing_build`), records each slot's
pre-activation statistics and learned curve (:func:`record_module`) and evaluates
a trained module; :mod:`models.user_training` trains K of them, fused or one by one.

User code runs in this (the user's) process only. Imports torch, numpy and ``core``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from core.errors import InvalidInput

from .activations import get_activation
from .stats import QUANTILES, _LayerAccumulator, _quantile_key, activation_params, curve_range

Build = Callable[[Callable[..., nn.Module]], nn.Module]


# --------------------------------------------------------------------------- slots
class SlotActivation(nn.Module):
    """One ``act()`` slot: a K=1 family activation on the user's ``(B, U, *spatial)`` tensors."""

    def __init__(self, family: str, params: dict[str, Any], units: int) -> None:
        super().__init__()
        self.family = family
        self.units = int(units)
        self.inner = get_activation(family)([params], units=self.units, layout="mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.units:
            raise InvalidInput(f"act() slot of width {self.units} got a tensor of shape "
                               f"{tuple(x.shape)}; units must be on dim 1, (batch, {self.units}, ...)")
        if x.dim() == 2:
            return self.inner(x.unsqueeze(0)).squeeze(0)  # (1, B, U) layout "mlp"
        self.inner.layout = "conv"
        self.inner._n_spatial = x.dim() - 2
        try:
            return self.inner(x.unsqueeze(1)).squeeze(1)  # (B, 1, C, *spatial) layout "conv"
        finally:
            self.inner.layout = "mlp"

    def extra_repr(self) -> str:
        return f"{self.family}, units={self.units}"


class _ProbeSlot(nn.Module):
    """What ``act()`` returns while the module is probed: identity, recording the units it sees."""

    def __init__(self, width: int | None) -> None:
        super().__init__()
        self.width = width
        self.seen: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise InvalidInput(f"an act() slot got a tensor of shape {tuple(x.shape)}; it needs "
                               "(batch, units, ...)")
        self.seen = int(x.shape[1])
        return x


@dataclass
class ModuleShape:
    """What probing the user's module found: its class name and each slot's width."""

    name: str
    slots: list[int]
    n_outputs: int


def check_shape_preserving(family: str) -> None:
    cls = get_activation(family)
    structural = {p.name: p.default for p in cls.space() if p.structural}
    if not cls.pointwise or cls.post_units(8, structural) != 8 or cls.pre_units(8, structural) != 8:
        raise InvalidInput(f"family {family!r} changes or mixes the units of a layer, so it cannot "
                           "stand in for an activation of your own module; drop it from families")


def probe_module(build: Build, x_sample: torch.Tensor) -> ModuleShape:
    """Build the module once with identity slots and run ``x_sample`` through it.

    Finds each slot's width (a declared ``act(width)`` must match what reaches
    it) and the output width; refuses a ``build`` that never calls ``act`` or
    creates slots its forward never uses.
    """
    probes: list[_ProbeSlot] = []

    def act(width: int | None = None) -> nn.Module:
        if width is not None and (not isinstance(width, int) or width < 1):
            raise InvalidInput(f"act(width): width must be a positive int, got {width!r}")
        probes.append(_ProbeSlot(width))
        return probes[-1]

    module = build(act)
    if not isinstance(module, nn.Module):
        raise InvalidInput(f"build(act) must return an nn.Module, got {type(module).__name__}")
    if not probes:
        raise InvalidInput(
            f"build(act) returned a {type(module).__name__} without calling act(): call act() "
            "(or act(width)) wherever an activation goes, e.g. nn.Sequential(nn.Linear(8, 32), "
            "act(), nn.Linear(32, 2))")
    module.eval()
    with torch.no_grad():
        out = module(x_sample)
    unused = [i for i, p in enumerate(probes) if p.seen is None]
    if unused:
        raise InvalidInput(f"act() slot(s) {unused} of {len(probes)} were created but never used "
                           "in forward: create exactly one act() per activation the forward applies")
    widths = []
    for i, p in enumerate(probes):
        assert p.seen is not None
        if p.width is not None and p.width != p.seen:
            raise InvalidInput(f"act({p.width}) (slot {i}) receives tensors with {p.seen} units "
                               "on dim 1; give the width the slot sees, or act() to infer it")
        widths.append(p.seen)
    if not isinstance(out, torch.Tensor):
        raise InvalidInput(f"the module's forward must return a tensor, got {type(out).__name__}")
    n_out = 1 if out.dim() == 1 else int(out.reshape(out.shape[0], -1).shape[1])
    return ModuleShape(type(module).__name__, widths, n_out)


def replacing_build(model: nn.Module, replace: Sequence[type[nn.Module]]) -> Build:
    """A ``build`` that deep-copies ``model`` and puts ``act()`` in place of each ``replace`` module.

    Raises InvalidInput when the model holds none of those types (activations
    called as functions, ``F.relu(x)``, cannot be replaced).
    """
    types = tuple(replace)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise InvalidInput("replace= takes nn.Module classes, e.g. replace=(nn.ReLU, nn.GELU)")
    names = ", ".join(t.__name__ for t in types)
    found = [n for n, m in model.named_modules() if isinstance(m, types) and n]
    if not found:
        raise InvalidInput(
            f"{type(model).__name__} holds no {names} module to replace: activations called as "
            "functions (F.relu(x), torch.tanh(x)) cannot be replaced. Write a "
            "build(act) function that calls act() where each activation goes, and pass it to "
            "search_module instead")

    def build(act: Callable[..., nn.Module]) -> nn.Module:
        copy_ = copy.deepcopy(model)
        for name in found:
            parent_name, _, attr = name.rpartition(".")
            parent = copy_.get_submodule(parent_name) if parent_name else copy_
            setattr(parent, attr, act())
        return copy_

    return build


def build_candidate(build: Build, family: str, act_params: dict[str, Any], slots: Sequence[int],
                    seed: int) -> nn.Module:
    """The user's module for one candidate: its weights seeded, each slot the candidate's family."""
    torch.manual_seed(seed)
    made: list[SlotActivation] = []

    def act(width: int | None = None) -> nn.Module:
        i = len(made)
        if i >= len(slots):
            raise InvalidInput(f"build(act) called act() {i + 1} times, but {len(slots)} times "
                               "when probed; build must create the same slots every time")
        made.append(SlotActivation(family, dict(act_params), slots[i]))
        return made[-1]

    module = build(act)
    if len(made) != len(slots):
        raise InvalidInput(f"build(act) called act() {len(made)} times, but {len(slots)} times "
                           "when probed; build must create the same slots every time")
    return module


def _slots(module: nn.Module) -> list[SlotActivation]:
    return [m for m in module.modules() if isinstance(m, SlotActivation)]


# --------------------------------------------------------------------------- tensors
def reshape_rows(x: torch.Tensor, input_shape: Sequence[int] | None) -> torch.Tensor:
    return x if not input_shape else x.reshape(x.shape[0], *input_shape)


def stacked_outputs(out: torch.Tensor, task: str) -> torch.Tensor:
    """``(K, B, C)`` logits or ``(K, B)`` values from the K modules' stacked outputs.

    A regression module may return ``(B, 1)`` or ``(B,)``; the leading K axis is always
    there, so a ``(K, 1)`` output is one row per candidate, never squeezed.
    """
    if task == "classification" or out.dim() == 2:
        return out
    return out[..., 0]


def stacked_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss per candidate ``(K,)`` of outputs ``(K, B, C)`` or ``(K, B)``."""
    if task == "classification":
        k, b, _ = out.shape
        return F.cross_entropy(out.transpose(1, 2), y.expand(k, b), reduction="none").mean(1)
    return (out - y).square().mean(1)


# --------------------------------------------------------------------------- recording
@torch.no_grad()
def record_module(module: nn.Module, x: torch.Tensor, *, hist_bins: int, curve_points: int
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pre-activation statistics and learned curves of each slot of one trained module."""
    slots = _slots(module)
    seen: list[list[torch.Tensor]] = [[] for _ in slots]
    hooks = [s.register_forward_pre_hook(lambda _m, args, i=i: seen[i].append(args[0]))
             for i, s in enumerate(slots)]
    was = module.training
    module.eval()
    try:
        module(x)
    finally:
        for h in hooks:
            h.remove()
        module.train(was)
    stats, curves = [], []
    for layer, (slot, zs) in enumerate(zip(slots, seen, strict=True)):
        z = torch.cat([t.detach().float() for t in zs], 0)
        z = z.movedim(1, -1).reshape(1, -1, slot.units)  # (1, rows x positions, U)
        acc = _LayerAccumulator(x.shape[0])
        acc.add(z, x.shape[0])
        s = acc.finish([0], hist_bins)[0]
        stats.append({"layer": layer, **s})
        q = s["quantiles"]
        lo, hi = curve_range(q[_quantile_key(QUANTILES[0])], q[_quantile_key(QUANTILES[-1])])
        grid = torch.linspace(lo, hi, curve_points, dtype=torch.float32)
        y = slot.inner.curve(grid)  # (1, U', G) or None
        if y is not None:
            curves.append({"layer": layer, "x": grid.numpy().astype(np.float32),
                           "y": y[0].detach().cpu().numpy().astype(np.float32),
                           "params": activation_params(slot.inner, 0)})
    return stats, curves


# --------------------------------------------------------------------------- inference
def load_candidate(build: Build, family: str, act_params: dict[str, Any], slots: Sequence[int],
                   state_dict: dict[str, np.ndarray]) -> nn.Module:
    """A trained candidate rebuilt from its stored weights, in eval mode."""
    module = build_candidate(build, family, act_params, slots, seed=0)
    module.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()})
    return module.eval()


@torch.no_grad()
def module_outputs(module: nn.Module, X: np.ndarray, input_shape: Sequence[int] | None,
                   task: str, chunk: int = 4096) -> np.ndarray:
    """Class probabilities ``(N, C)`` or values ``(N,)`` for standardised rows ``X`` ``(N, D)``."""
    module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    x = reshape_rows(torch.as_tensor(np.asarray(X), dtype=torch.float32), input_shape)
    outs = []
    for i in range(0, x.shape[0], chunk):
        out = stacked_outputs(module(x[i:i + chunk].to(device)).unsqueeze(0), task)[0]
        outs.append(out.softmax(-1) if task == "classification" else out)
    return torch.cat(outs).cpu().numpy()


def evaluate_module(module: nn.Module, X: np.ndarray, y: np.ndarray,
                    input_shape: Sequence[int] | None, task: str) -> float:
    """Accuracy, or R^2, of a trained module on standardised rows (the test score)."""
    out = module_outputs(module, X, input_shape, task)
    y = np.asarray(y)
    if task == "classification":
        return float((out.argmax(1) == y).mean())
    sst = float(((y - y.mean()) ** 2).sum())
    sse = float(((out - y) ** 2).sum())
    return 1.0 - sse / sst if sst > 0 else float(sse == 0)
