"""Contract tests for every registered activation family (CPU, fast).

Most tests run over the whole registry through ``CASES``: each family with its
default structure, with ``sharing=unit`` where it has one, and with a few
non-default structures (maxout k=3, a deeper vaf, ...). Closed forms are checked
against torch's own implementations.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from core.errors import InvalidInput, UnknownActivation
from models.activations import (
    BASE_FUNCTIONS,
    REGISTRY,
    SHARING,
    Activation,
    ParamSpec,
    get_activation,
)
from models.activations._rational_fits import FITS
from models.activations.rational import (
    FIT_POINTS,
    FIT_RANGE,
    _safe_pau,
    fit_rational,
    fresh_fit,
    shipped_keys,
)
from models.activations.spline import Spline, bspline_basis, uniform_cubic_basis
from models.activations.trainable import base_choices

K = 3
OUT_UNITS = 8  # divisible by every groupsort group size
UNIT_MIXING = {"maxout", "groupsort", "k_wta"}
GATED = {name for name, cls in REGISTRY.items() if getattr(cls, "gated", False)}

# Non-default structures worth covering beyond the defaults and sharing=unit.
EXTRA_STRUCTURES: dict[str, list[dict[str, Any]]] = {
    "maxout": [{"k": 3}],
    "groupsort": [{"group": 4}],
    "affine": [{"base": "tanh", "sharing": "unit"}],
    "apl": [{"hinges": 3, "sharing": "unit"}],
    "rational": [{"m": 3, "base": "tanh"}],
    "spline": [{"grid": 4, "grid_range": 1.5, "sharing": "unit"}],
    "group_rational": [{"groups": 2}, {"groups": 8, "m": 3, "base": "tanh"}],
    "vaf": [
        {"depth": 3, "residual": True, "width": 3, "inner": "tanh"},
        {"depth": 2, "residual": False, "sharing": "unit", "inner": "sigmoid"},
    ],
}


def _has_sharing(cls: type[Activation]) -> bool:
    return any(s.name == SHARING.name for s in cls.space())


def _cases() -> list[Any]:
    cases = []
    for name, cls in REGISTRY.items():
        structures: list[dict[str, Any]] = [{}]
        if _has_sharing(cls):
            structures.append({"sharing": "unit"})
        structures += EXTRA_STRUCTURES.get(name, [])
        for structure in structures:
            label = ",".join(f"{k}={v}" for k, v in structure.items()) or "default"
            cases.append(pytest.param(name, structure, id=f"{name}[{label}]"))
    return cases


CASES = _cases()


# ----- helpers --------------------------------------------------------------------------
def sample_value(spec: ParamSpec, rng: random.Random) -> Any:
    """A value inside ``spec``'s range, like Optuna would suggest it."""
    if spec.kind == "categorical":
        return rng.choice(list(spec.choices or ()))
    assert spec.low is not None and spec.high is not None
    if spec.kind == "int":
        return rng.randint(int(spec.low), int(spec.high))
    if spec.log:
        value = math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
    else:
        value = rng.uniform(spec.low, spec.high)
    if spec.step:
        value = spec.low + round((value - spec.low) / spec.step) * spec.step
    return value


def population_params(
    cls: type[Activation], structure: Mapping[str, Any], k: int = K, seed: int = 0
) -> list[dict[str, Any]]:
    """K candidates with different sampled values and the same structural ones."""
    rng = random.Random(seed)
    out = []
    for _ in range(k):
        params = {s.name: sample_value(s, rng) for s in cls.space() if not s.structural}
        params.update(structure)
        out.append(params)
    return out


def widths(cls: type[Activation], structure: Mapping[str, Any]) -> tuple[int, int]:
    """(pre, post) unit counts for a layer with ``OUT_UNITS`` outputs."""
    resolved = cls.resolve_params(dict(structure))
    pre = cls.pre_units(OUT_UNITS, resolved)
    return pre, cls.post_units(pre, resolved)


@torch.no_grad()
def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Seeded noise on every learned tensor, so candidates and units really differ."""
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=gen))


def build(
    name: str, structure: Mapping[str, Any], layout: str = "mlp", k: int = K
) -> tuple[Activation, list[dict[str, Any]], int, int]:
    cls = REGISTRY[name]
    params = population_params(cls, structure, k)
    pre, post = widths(cls, structure)
    torch.manual_seed(0)
    module = cls(params, pre, layout)  # type: ignore[arg-type]
    perturb(module)
    return module, params, pre, post


def mlp_input(pre: int, k: int = K, batch: int = 5, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(k, batch, pre, generator=gen)  # (K, B, U)


def conv_input(pre: int, k: int = K, batch: int = 2, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, k, pre, 3, 4, generator=gen)  # (B, K, U, H, W)


def conv_to_mlp(x: torch.Tensor) -> torch.Tensor:
    """(B, K, U, H, W) -> (K, B*H*W, U): every pixel becomes a sample."""
    return x.permute(1, 0, 3, 4, 2).reshape(x.shape[1], -1, x.shape[2])


# ----- contract over the whole registry ------------------------------------------------------
@pytest.mark.parametrize(("name", "structure"), CASES)
def test_shapes_and_gradients(name: str, structure: dict[str, Any]) -> None:
    for layout in ("mlp", "conv"):
        module, _, pre, post = build(name, structure, layout)
        x = (mlp_input(pre) if layout == "mlp" else conv_input(pre)).requires_grad_(True)
        y = module(x)
        expected = list(x.shape)
        expected[2] = post
        assert list(y.shape) == expected, layout
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
        (y * weights).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert x.grad.abs().sum() > 0
        for pname, p in module.named_parameters():
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().sum() > 0, pname
        assert REGISTRY[name].trainable == any(True for _ in module.parameters())


@pytest.mark.parametrize(("name", "structure"), CASES)
def test_batched_equals_separate_copies(name: str, structure: dict[str, Any]) -> None:
    cls = REGISTRY[name]
    big, params, pre, _ = build(name, structure, "mlp")
    big_conv = cls(params, pre, "conv")
    big_conv.load_state_dict(big.state_dict())
    x_mlp, x_conv = mlp_input(pre), conv_input(pre)
    with torch.no_grad():
        y_mlp, y_conv = big(x_mlp), big_conv(x_conv)
        # the two layouts agree once pixels are read as samples
        torch.testing.assert_close(big(conv_to_mlp(x_conv)), conv_to_mlp(y_conv))
        for i in range(K):
            state = {key: t[i : i + 1].clone() for key, t in big.state_dict().items()}
            for layout, x, y in (("mlp", x_mlp, y_mlp), ("conv", x_conv, y_conv)):
                single = cls([params[i]], pre, layout)  # type: ignore[arg-type]
                single.load_state_dict(state)
                if layout == "mlp":
                    torch.testing.assert_close(single(x[i : i + 1]), y[i : i + 1])
                else:
                    torch.testing.assert_close(single(x[:, i : i + 1]), y[:, i : i + 1])


@pytest.mark.parametrize(("name", "structure"), CASES)
def test_keep_leaves_kept_candidates_unchanged(name: str, structure: dict[str, Any]) -> None:
    module, params, pre, _ = build(name, structure, "mlp")
    x = mlp_input(pre)
    index = torch.tensor([2, 0])
    with torch.no_grad():
        before = module(x)[index]
        module.keep(index)
        after = module(x[index])
    resolved = [module.resolve_params(params[2]), module.resolve_params(params[0])]
    assert module.k == 2 and module.params_list == resolved
    for p in list(module.parameters()) + list(module.buffers()):
        assert p.shape[0] == 2
    torch.testing.assert_close(after, before)


@pytest.mark.parametrize(("name", "structure"), CASES)
def test_curve_matches_forward(name: str, structure: dict[str, Any]) -> None:
    module, _, pre, _ = build(name, structure, "mlp")
    grid = torch.linspace(-4, 4, 33)
    curve = module.curve(grid)
    if name in UNIT_MIXING:
        assert curve is None and not module.pointwise
        return
    assert curve is not None
    if name in GATED:
        # the curve is the gate response: the output per unit of value (v = 1) as a
        # function of the gate pre-activation u
        assert not module.pointwise and pre == 2 * OUT_UNITS
        g = grid.numel()
        value = torch.ones(K, g, pre // 2)
        gate = grid.reshape(1, -1, 1).expand(K, -1, pre // 2)
        with torch.no_grad():
            y = module(torch.cat([value, gate], dim=2)).transpose(1, 2)  # (K, post, G)
        torch.testing.assert_close(y, y[:, :1].expand_as(y))
        assert curve.shape == (K, 1, g)
        torch.testing.assert_close(curve, y[:, :1])
        return
    units_shared = module.param_units()
    assert curve.shape == (K, units_shared, grid.numel())
    with torch.no_grad():
        y = module(grid.reshape(1, -1, 1).expand(K, -1, pre).contiguous())  # (K, G, post)
    if name == "crelu":  # the documented curve is the relu(z) half
        y = y[..., :pre]
    expected = y.transpose(1, 2)  # (K, U, G)
    if units_shared == 1:
        expected = expected[:, :1].expand_as(y.transpose(1, 2))
        torch.testing.assert_close(y.transpose(1, 2), expected)  # every unit alike
        expected = expected[:, :1]
    elif units_shared < expected.shape[1]:  # one curve per group of units (group_rational)
        grouped = expected.reshape(K, units_shared, -1, grid.numel())  # (K, groups, U/groups, G)
        torch.testing.assert_close(grouped, grouped[:, :, :1].expand_as(grouped))
        expected = grouped[:, :, 0]
    torch.testing.assert_close(curve, expected)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_describe_is_json_and_defaults_are_in_range(name: str) -> None:
    cls = REGISTRY[name]
    entry = json.loads(json.dumps(cls.describe()))
    assert entry["name"] == name and entry["formula"] and entry["reference"]
    names = [s.name for s in cls.space()]
    assert len(names) == len(set(names))
    for spec in cls.space():
        if spec.kind == "categorical":
            assert spec.choices and spec.default in spec.choices, spec
            continue
        assert spec.low is not None and spec.high is not None and spec.low < spec.high, spec
        assert spec.low <= spec.default <= spec.high, spec
        if spec.log:
            assert spec.low > 0, spec
        if spec.kind == "int":
            assert isinstance(spec.default, int) and not spec.step, spec
        if spec.step:
            assert math.isclose(((spec.default - spec.low) / spec.step) % 1, 0, abs_tol=1e-9)
    if cls.trainable:  # learned tensors per layer or unit, or (group_rational) per group
        assert SHARING in cls.space() or "groups" in names


# ----- closed forms -----------------------------------------------------------------------------
def _snake(z: torch.Tensor, f: float) -> torch.Tensor:
    return z + torch.sin(f * z) ** 2 / f


CLOSED_FORMS: list[Any] = [
    ("relu", {}, torch.relu),
    ("leaky_relu", {"slope": 0.1}, lambda z: F.leaky_relu(z, 0.1)),
    ("elu", {"alpha": 0.7}, lambda z: F.elu(z, 0.7)),
    ("selu", {}, torch.selu),
    ("gelu", {}, F.gelu),
    ("silu", {"beta": 1.0}, F.silu),
    ("silu", {"beta": 2.0}, lambda z: z * torch.sigmoid(2 * z)),
    ("mish", {}, F.mish),
    ("softplus", {"beta": 2.0}, lambda z: F.softplus(z, beta=2.0)),
    ("tanh", {}, torch.tanh),
    ("sigmoid", {}, torch.sigmoid),
    ("hardswish", {}, F.hardswish),
    ("snake", {"freq": 2.0}, lambda z: _snake(z, 2.0)),
    ("prelu", {"a_init": 0.2}, lambda z: F.prelu(z, torch.tensor([0.2]))),
    ("frelu", {"d_init": 0.3, "e_init": -0.2}, lambda z: torch.relu(z + 0.3) - 0.2),
    ("agsig", {"a_init": 2.0, "b_init": 0.5}, lambda z: 2.0 / (1 + torch.exp(-0.5 * z))),
    ("affine", {"base": "relu"}, torch.relu),
    ("affine", {"base": "tanh", "a_init": 1.5, "b_init": 0.7, "c_init": 0.1, "d_init": -0.2},
     lambda z: 1.5 * torch.tanh(0.7 * z + 0.1) - 0.2),
    ("apl", {"a_init": 0.0}, torch.relu),
    ("crelu", {}, lambda z: torch.cat([torch.relu(z), torch.relu(-z)], dim=2)),
    ("squared_relu", {}, lambda z: torch.relu(z) ** 2),
    ("star_relu", {}, lambda z: 0.8944 * torch.relu(z) ** 2 - 0.4472),
    ("star_relu", {"s_init": 1.5, "b_init": 0.2}, lambda z: 1.5 * torch.relu(z) ** 2 + 0.2),
    ("sine", {"omega_0": 3.0}, lambda z: torch.sin(3.0 * z)),
    ("gaussian", {"sigma_init": 0.5}, lambda z: torch.exp(-z**2 / (2 * 0.5**2))),
    ("glu", {}, lambda z: z[..., :4] * torch.sigmoid(z[..., 4:])),
    ("reglu", {}, lambda z: z[..., :4] * torch.relu(z[..., 4:])),
    ("geglu", {}, lambda z: z[..., :4] * F.gelu(z[..., 4:])),
    ("swiglu", {}, lambda z: z[..., :4] * F.silu(z[..., 4:])),
    ("bilinear", {}, lambda z: z[..., :4] * z[..., 4:]),
    ("maxout", {"k": 2}, lambda z: torch.maximum(z[..., 0::2], z[..., 1::2])),
    ("groupsort", {"group": 2},
     lambda z: torch.stack([torch.minimum(z[..., 0::2], z[..., 1::2]),
                            torch.maximum(z[..., 0::2], z[..., 1::2])], -1).flatten(-2)),
]


@pytest.mark.parametrize(("name", "params", "reference"), CLOSED_FORMS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CLOSED_FORMS)])
def test_closed_form(name: str, params: dict[str, Any], reference: Any) -> None:
    x = torch.linspace(-6, 6, 2 * 3 * 8 * 10).reshape(2, 3 * 10, 8)  # (K=2, B, U)
    module = get_activation(name)([params, params], 8)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), rtol=1e-5, atol=1e-5)


def test_group_rational_shares_coefficients_within_groups() -> None:
    module = get_activation("group_rational")([{"groups": 2, "m": 3}], 6)
    with torch.no_grad():
        module.get_parameter("a")[0, 1].copy_(torch.tensor([0.0, 2.0, 0.0, 0.0]))  # group 1: 2z
    x = torch.linspace(-2, 2, 30).reshape(1, 5, 6)
    y = module(x)
    rational = get_activation("rational")([{"m": 3}], 3)
    torch.testing.assert_close(y[..., :3], rational(x[..., :3]))  # group 0: still the fit
    b = module.get_parameter("b")[0, 1]
    torch.testing.assert_close(y[..., 3:], 2 * x[..., 3:] / (1 + (b[0] * x[..., 3:]
                                                                 + b[1] * x[..., 3:] ** 2).abs()))
    curve = module.curve(torch.linspace(-1, 1, 5))
    assert curve is not None and curve.shape == (1, 2, 5)
    with pytest.raises(InvalidInput, match="groups=4 must divide"):
        get_activation("group_rational")([{"groups": 4}], 6)


def test_gated_width_bookkeeping() -> None:
    for name in GATED:
        cls = get_activation(name)
        assert cls.pre_units(5, {}) == 10 and cls.post_units(10, {}) == 5
        assert cls([{}], 10, "conv")(torch.randn(2, 1, 10, 3, 3)).shape == (2, 1, 5, 3, 3)
        with pytest.raises(InvalidInput, match="even"):
            cls([{}], 7)
    assert GATED == {"glu", "reglu", "geglu", "swiglu", "bilinear"}


def test_per_candidate_values_differ() -> None:
    x = torch.linspace(-3, 3, 40).reshape(1, 5, 8).expand(2, 5, 8)
    module = get_activation("elu")([{"alpha": 0.3}, {"alpha": 1.7}], 8)
    torch.testing.assert_close(module(x)[0], F.elu(x[0], 0.3))
    torch.testing.assert_close(module(x)[1], F.elu(x[1], 1.7))


def test_prelu_per_unit_matches_torch_per_channel_in_conv_layout() -> None:
    module = get_activation("prelu")([{"sharing": "unit"}], 4, "conv")
    with torch.no_grad():
        module.get_parameter("a").copy_(torch.tensor([[0.0, 0.1, 0.2, 0.3]]))
    x = torch.randn(2, 1, 4, 3, 3)  # (B, K=1, U, H, W)
    expected = F.prelu(x[:, 0], torch.tensor([0.0, 0.1, 0.2, 0.3])).unsqueeze(1)
    torch.testing.assert_close(module(x), expected)


def test_k_wta_keeps_exactly_the_top_fraction() -> None:
    module = get_activation("k_wta")([{"ratio": 0.25}, {"ratio": 0.5}], 16)
    x = torch.randn(2, 7, 16)
    y = module(x)
    assert ((y != 0).sum(-1) == torch.tensor([[4], [8]])).all()
    top4 = x[0].topk(4, dim=-1).values.sort(-1).values
    torch.testing.assert_close(y[0].topk(4, dim=-1).values.sort(-1).values, top4)


def test_rational_initialised_as_leaky_relu_approximates_it() -> None:
    """PAU's default (m, n) = (5, 4) fit of leaky_relu.

    A rational cannot match the kink at 0 exactly: the best safe-PAU fit on [-3, 3]
    has a max error of about 0.034 (at the kink), so 0.05 leaves margin for float32
    and for LBFGS landing in a slightly different minimum on another BLAS.
    """
    module = get_activation("pade")([{}], 1)
    x = torch.linspace(-3, 3, 1201)
    curve = module.curve(x)
    assert curve is not None
    error = (curve[0, 0] - F.leaky_relu(x, 0.01)).abs().max()
    assert error < 0.05
    # a smooth base is fitted far more closely
    tanh_fit = get_activation("rational")([{"base": "tanh"}], 1).curve(x)
    assert tanh_fit is not None and (tanh_fit[0, 0] - torch.tanh(x)).abs().max() < 1e-3
    assert fit_rational("leaky_relu", 5, 4) is fit_rational("leaky_relu", 5, 4)  # cached


def _fit_error(base: str, coefficients: tuple[tuple[float, ...], tuple[float, ...]]) -> float:
    x = torch.linspace(-FIT_RANGE, FIT_RANGE, FIT_POINTS, dtype=torch.float64)
    a, b = (torch.tensor(c, dtype=torch.float64) for c in coefficients)
    return float((_safe_pau(a, b, x) - BASE_FUNCTIONS[base].fn(x)).square().mean())


@pytest.mark.parametrize("m", [3, 6])
def test_shipped_rational_fits_cover_the_space_and_match_fresh_fits(m: int) -> None:
    """The shipped table (what every population starts from) holds every (base, m, m-1) the
    spaces offer, and each entry fits its base as well as a fit made now; a changed fit or
    space needs ``write_shipped_fits()``. Checked by fit error, not digits: L-BFGS may land
    a hair apart on another BLAS."""
    assert set(shipped_keys()) <= set(FITS)
    for base in base_choices():
        shipped = fit_rational(base, m, m - 1)
        assert shipped == FITS[(base, m, m - 1)]
        fresh = fresh_fit(base, m, m - 1)
        assert _fit_error(base, shipped) <= _fit_error(base, fresh) * 1.01 + 1e-12
    assert fit_rational("tanh", 7, 6) == fresh_fit("tanh", 7, 6)  # beyond the table: fitted


@pytest.mark.parametrize("inner", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("depth", [1, 3])
def test_vaf_with_residual_links_starts_at_its_inner_activation(inner: str, depth: int) -> None:
    params = {"inner": inner, "depth": depth, "residual": True, "init_std": 1e-3, "width": 4}
    module = get_activation("meta_neuron")([params], 3)
    x = torch.linspace(-3, 3, 101)
    curve = module.curve(x)
    assert curve is not None
    assert (curve[0, 0] - BASE_FUNCTIONS[inner].fn(x)).abs().max() < 0.05


def test_spline_starts_near_silu() -> None:
    module = get_activation("bspline")([{"coef_std": 1e-3}], 1)
    x = torch.linspace(-5, 5, 101)
    curve = module.curve(x)
    assert curve is not None and (curve[0, 0] - F.silu(x)).abs().max() < 0.01


@pytest.mark.parametrize(("grid", "grid_range"), [(3, 1.0), (5, 2.0), (16, 4.0)])
def test_spline_closed_form_basis_equals_cox_de_boor(grid: int, grid_range: float) -> None:
    module = Spline([{"grid": grid, "grid_range": grid_range}], 1)
    x = torch.linspace(-8, 8, 2001, dtype=torch.float64)
    reference = bspline_basis(x, module.knots(x))  # (N, G+3)
    torch.testing.assert_close(uniform_cubic_basis(x, grid, grid_range), reference)
    inside = x.abs() < grid_range  # a partition of unity over the grid itself
    torch.testing.assert_close(reference[inside].sum(-1), torch.ones_like(x[inside]))


@pytest.mark.parametrize("sharing", ["layer", "unit"])
@pytest.mark.parametrize("layout", ["mlp", "conv"])
@pytest.mark.parametrize(("grid", "grid_range"), [(5, 2.0), (14, 4.0)])
def test_spline_training_form_equals_the_basis_tensor(sharing: str, layout: str, grid: int,
                                                      grid_range: float) -> None:
    """The per-interval cubic that trains (and validates) equals the (..., G+3) basis
    tensor, values and every gradient, inside the grid, on its extension and beyond it
    (where only SiLU is left)."""
    p = {"grid": grid, "grid_range": grid_range, "sharing": sharing, "coef_std": 0.3}
    units = 6
    module = Spline([p, {**p, "coef_std": 0.2}], units, layout).double()
    shape = (2, 40, units) if layout == "mlp" else (40, 2, units, 3, 3)
    x = (torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
         * 4).requires_grad_()  # spans the grid, its extension and beyond
    y = module(x)
    y.square().sum().backward()
    got = [y.detach(), x.grad, module.c.grad, module.w_b.grad, module.w_s.grad]
    x.grad = None
    module.zero_grad()
    c, w_b, w_s = module.view(module.c), module.view(module.w_b), module.view(module.w_s)
    basis = uniform_cubic_basis(x, module.grid, module.grid_range)
    ref = w_b * F.silu(x) + w_s * (basis * c).sum(-1)
    ref.square().sum().backward()
    want = [ref.detach(), x.grad, module.c.grad, module.w_b.grad, module.w_s.grad]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():  # validation and curves take the same form
        torch.testing.assert_close(module(x), want[0])


# ----- width bookkeeping ---------------------------------------------------------------------
def test_maxout_width_bookkeeping() -> None:
    cls = get_activation("maxout")
    assert cls.pre_units(4, {"k": 3}) == 12 and cls.post_units(12, {"k": 3}) == 4
    y = cls([{"k": 3}], 12)(torch.randn(1, 2, 12))
    assert y.shape == (1, 2, 4)
    with pytest.raises(InvalidInput, match="divide"):
        cls([{"k": 3}], 8)


def test_crelu_width_bookkeeping() -> None:
    cls = get_activation("crelu")
    assert cls.pre_units(5, {}) == 5 and cls.post_units(5, {}) == 10
    assert cls([{}], 5, "conv")(torch.randn(2, 1, 5, 3, 3)).shape == (2, 1, 10, 3, 3)


def test_groupsort_width_bookkeeping() -> None:
    cls = get_activation("groupsort")
    assert cls.pre_units(8, {"group": 4}) == 8 and cls.post_units(8, {"group": 4}) == 8
    assert cls([{"group": 4}], 8)(torch.randn(1, 2, 8)).shape == (1, 2, 8)
    with pytest.raises(InvalidInput, match="group=4 must divide"):
        cls([{"group": 4}], 6)


# ----- registry and parameter checks -----------------------------------------------------------
def test_resolve_params_rejects_unknown_keys() -> None:
    with pytest.raises(InvalidInput, match="unknown parameter"):
        get_activation("elu").resolve_params({"alpha": 1.0, "beta": 2.0})
    with pytest.raises(InvalidInput, match="unknown parameter"):
        get_activation("relu")([{"slope": 0.1}], 4)


def test_structural_parameters_must_agree() -> None:
    with pytest.raises(InvalidInput, match="structural"):
        get_activation("maxout")([{"k": 2}, {"k": 4}], 8)


def test_unknown_activation_lists_the_names() -> None:
    with pytest.raises(UnknownActivation) as info:
        get_activation("nope")
    assert "relu" in str(info.value) and "vaf" in str(info.value)


@pytest.mark.parametrize(
    ("alias", "name"),
    [("swish", "silu"), ("kwta", "k_wta"), ("k-wta", "k_wta"), ("K_WTA", "k_wta"), ("pade", "rational"),
     ("meta_neuron", "vaf"), ("Leaky-ReLU", "leaky_relu")],
)
def test_aliases(alias: str, name: str) -> None:
    assert get_activation(alias) is REGISTRY[name]


def test_every_base_function_is_usable() -> None:
    x = torch.linspace(-3, 3, 7)
    for base in BASE_FUNCTIONS.values():
        assert base.fn(x).shape == x.shape and base.formula
    assert {"relu", "leaky_relu", "elu", "selu", "gelu", "silu", "mish", "softplus", "tanh",
            "sigmoid", "hardswish", "snake", "identity"} <= set(BASE_FUNCTIONS)


def test_is_trainable_answers_for_families_and_raises_on_an_unknown_one() -> None:
    from models.activations import is_trainable

    assert is_trainable("prelu") and not is_trainable("relu")
    with pytest.raises(UnknownActivation):
        is_trainable("no-such-family")
