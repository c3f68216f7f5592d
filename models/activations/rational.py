"""Rational (Padé) activations in the safe PAU form.

``R(z) = P(z) / (1 + |Q(z)|)`` with ``P`` of degree m and ``Q(z) = b_1 z + ... + b_n z^n``
(no constant term): the denominator is at least 1, so there are no poles. The
coefficients start as a least-squares fit of a base function on [-3, 3]. The fits of
every (base, m, m-1) the search space offers ship in :mod:`._rational_fits` (made by
:func:`write_shipped_fits`, checked against fresh fits by the tests):
a fit costs ~0.2 s, and the first one ~1.7 s, since L-BFGS imports torch._dynamo, all
on the path to a population's first epoch. Other degrees are fitted once per process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from core.errors import InvalidInput

from ..kernels import fused
from .base import BASE_FUNCTIONS, SHARING, Activation, Layout, ParamSpec, register
from .trainable import base_choices

FIT_RANGE = 3.0
FIT_POINTS = 2001


def _safe_pau(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Evaluate P/(1+|Q|) by Horner's rule; ``a``/``b`` coefficients on the last axis."""
    num = a[..., -1]
    for j in range(a.shape[-1] - 2, -1, -1):
        num = num * x + a[..., j]
    den = b[..., -1]
    for j in range(b.shape[-1] - 2, -1, -1):
        den = den * x + b[..., j]
    return num / (1 + (den * x).abs())


# The same function, compiled (forward and backward fused) inside ``kernels.compiling``.
_safe_pau_fused = fused(_safe_pau)


def fit_rational(base: str, m: int, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients ``(a_0..a_m, b_1..b_n)`` of the safe PAU best fitting ``base`` on [-3, 3]:
    the shipped fit (:data:`._rational_fits.FITS`) where there is one, else :func:`fresh_fit`."""
    from ._rational_fits import FITS

    shipped = FITS.get((base, m, n))
    if shipped is not None:
        return shipped
    return fresh_fit(base, m, n)


@lru_cache(maxsize=64)
def fresh_fit(base: str, m: int, n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Fit the coefficients ``(a_0..a_m, b_1..b_n)`` of ``base`` on [-3, 3] now.

    A linearised least squares (``P - f*Q = f``, exact when ``1+Q > 0``) gives the start;
    L-BFGS on the true ``|Q|`` form refines it in float64. Deterministic, so every
    process and every candidate starts from the same curve.
    """
    f = BASE_FUNCTIONS[base].fn
    x = torch.linspace(-FIT_RANGE, FIT_RANGE, FIT_POINTS, dtype=torch.float64)
    with torch.no_grad():
        y = f(x)
    powers = x[:, None] ** torch.arange(max(m, n) + 1, dtype=torch.float64)  # (N, max+1)
    design = torch.cat([powers[:, : m + 1], -y[:, None] * powers[:, 1 : n + 1]], dim=1)
    sol = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    a = sol[: m + 1].clone().requires_grad_(True)
    b = sol[m + 1 :].clone().requires_grad_(True)

    def loss() -> torch.Tensor:
        return (_safe_pau(a, b, x) - y).square().mean()

    with torch.no_grad():
        start_loss = float(loss())
    start = (a.detach().clone(), b.detach().clone())
    opt = torch.optim.LBFGS([a, b], lr=1.0, max_iter=300, history_size=50,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                            tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        final_loss = float(loss())
    if not (final_loss == final_loss and final_loss <= start_loss):  # NaN or worse: keep start
        a_fit, b_fit = start
    else:
        a_fit, b_fit = a.detach(), b.detach()
    return tuple(a_fit.tolist()), tuple(b_fit.tolist())


@register
class Rational(Activation):
    """Padé activation unit; starts as a fit of ``base`` (default leaky_relu, as in PAU)."""

    name = "rational"
    formula = "(a_0 + a_1 z + ... + a_m z^m) / (1 + |b_1 z + ... + b_{m-1} z^{m-1}|)  (a, b learned)"
    trainable = True
    fused = True  # runs through models.kernels (compiled where it pays)
    weight_init = "kaiming_normal"
    reference = "Molina et al. 2020 (PAU); Boullé et al. 2020"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        m = int(self.structural["m"])
        n = m - 1  # degree m over m-1: grows linearly at infinity, like the ReLU family
        num, den = fit_rational(str(self.structural["base"]), m, n)
        u = self.param_units()
        a = torch.tensor(num, dtype=torch.float32).expand(self.k, u, m + 1)
        b = torch.tensor(den, dtype=torch.float32).expand(self.k, u, n)
        self.a = nn.Parameter(a.clone())  # (K, U', m+1)
        self.b = nn.Parameter(b.clone())  # (K, U', n)

    @classmethod
    def element_flops(cls, structural: Mapping[str, Any]) -> int:
        m = int(structural.get("m", 5))
        return 2 * m + 2 * (m - 1) + 3  # two Horner polynomials, abs, add, divide

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            SHARING,
            ParamSpec("m", "int", default=5, low=3, high=6, structural=True,
                      help="numerator degree; the denominator has degree m-1 (PAU's 5/4, "
                           "rational nets' 3/2): m <= n would decay to 0 for large |z|"),
            ParamSpec("base", "categorical", default="leaky_relu", choices=base_choices(),
                      structural=True, help="function the coefficients are fitted to at init"),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _safe_pau_fused(self.view(self.a), self.view(self.b), x)


@register
class GroupRational(Activation):
    """A rational unit whose coefficients are shared by groups of consecutive channels.

    Between ``sharing=layer`` (one curve) and ``sharing=unit`` (one per unit): ``groups``
    curves per layer, each used by ``units / groups`` channels (Yang & Wang 2024, KAT's
    group-rational KAN layers). ``groups`` is searched among the values dividing every
    width; the coefficients start as a fit of ``base``, as :class:`Rational` does.
    """

    name = "group_rational"
    formula = "P_g(z)/(1 + |Q_g(z)|) with coefficients per channel group g  (learned)"
    trainable = True
    fused = True
    weight_init = "kaiming_normal"
    reference = "Yang & Wang 2024 (Kolmogorov-Arnold Transformer, group-rational)"

    def __init__(self, params: Sequence[Mapping[str, Any]], units: int, layout: Layout = "mlp"):
        super().__init__(params, units, layout)
        groups = int(self.structural["groups"])
        if self.units % groups:
            raise InvalidInput(
                f"group_rational: groups={groups} must divide the pre-activation width "
                f"{self.units}; choose a width that is a multiple of {groups}"
            )
        m = int(self.structural["m"])
        num, den = fit_rational(str(self.structural["base"]), m, m - 1)
        self.a = nn.Parameter(torch.tensor(num).expand(self.k, groups, m + 1).clone())  # (K, G, m+1)
        self.b = nn.Parameter(torch.tensor(den).expand(self.k, groups, m - 1).clone())  # (K, G, m-1)

    @classmethod
    def element_flops(cls, structural: Mapping[str, Any]) -> int:
        return Rational.element_flops(structural)

    @classmethod
    def space(cls) -> list[ParamSpec]:
        return [
            ParamSpec("groups", "categorical", default=2, choices=(1, 2, 4, 8, 16),
                      structural=True, divides_width=True,
                      help="coefficient sets per layer (each shared by units/groups channels)"),
            ParamSpec("m", "int", default=5, low=3, high=6, structural=True,
                      help="numerator degree; the denominator has degree m-1"),
            ParamSpec("base", "categorical", default="leaky_relu", choices=base_choices(),
                      structural=True, help="function the coefficients are fitted to at init"),
        ]

    def param_units(self) -> int:
        return int(self.structural["groups"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rep = self.units // int(self.structural["groups"])
        a = self.a.repeat_interleave(rep, dim=1)  # (K, U, m+1)
        b = self.b.repeat_interleave(rep, dim=1)  # (K, U, m-1)
        return _safe_pau_fused(self.view(a), self.view(b), x)


def shipped_keys() -> list[tuple[str, int, int]]:
    """Every (base, m, n) the rational families' spaces can ask for."""
    ms = {p.name: p for p in Rational.space()}["m"]
    return [(base, m, m - 1) for base in base_choices()
            for m in range(int(ms.low or 3), int(ms.high or 6) + 1)]


def write_shipped_fits() -> str:
    """Regenerate :mod:`._rational_fits` (after changing the fit or the spaces); its path."""
    from pathlib import Path

    lines = ['"""Shipped fits of :func:`models.activations.rational.fresh_fit`, generated by',
             ':func:`~models.activations.rational.write_shipped_fits`; the tests compare them to',
             'fresh fits."""',
             "", "FITS: dict[tuple[str, int, int], tuple[tuple[float, ...], tuple[float, ...]]] = {"]
    for key in shipped_keys():
        a, b = fresh_fit(*key)
        lines.append(f"    {key!r}: ({a!r}, {b!r}),")
    lines.append("}")
    path = Path(__file__).with_name("_rational_fits.py")
    path.write_text("\n".join(lines) + "\n")
    return str(path)
