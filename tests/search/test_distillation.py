"""search.analysis.distillation on constructed networks with known answers (models.merge: tests/models).

* a layer whose learned activation is exactly linear (``affine`` over ``identity``,
  per-unit slopes) is found near-linear, merges into its neighbour with the
  network's outputs unchanged to 1e-5, and leaves one hidden layer fewer;
* a learned activation that is exactly a shifted ReLU ``relu(z - 0.3) + 0.1`` is
  fitted as ``affine:relu`` with those parameters and distils to two linear pieces
  (three knots), error near zero, accuracy unchanged;
* a per-unit family distils one curve per unit; the metric matches the engine's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.engine import build_network, evaluate
from models.merge import merge_layer
from models.network import PopulationNet
from models.spec import ArchSpec
from search.analysis import curves as analysis
from search.analysis.distillation import (
    EvalData,
    analyse_network,
    distil_network,
    linear_layers,
    network_metric,
)

SHIFTED_RELU = {"sharing": "layer", "d_init": -0.3, "e_init": 0.1}  # relu(z - 0.3) + 0.1


def _identity_affine(net: PopulationNet, layer: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Give layer ``layer`` (affine over identity, per unit) random per-unit slopes/offsets."""
    act = net.acts[layer]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("a", "b", "c", "d"):
            p = getattr(act, name)
            p.copy_(torch.rand(p.shape, generator=g) + 0.5 if name in "ab"
                    else torch.rand(p.shape, generator=g) - 0.5)
    slope = (act.a * act.b)[0].detach().numpy().astype(np.float64)
    intercept = (act.a * act.c + act.d)[0].detach().numpy().astype(np.float64)
    return slope, intercept


def _linear_middle_net(norm: str = "none") -> tuple[PopulationNet, np.ndarray]:
    arch = ArchSpec.parse("mlp:12,10,8", activation_scope="layer", norm=norm)
    params = [SHIFTED_RELU, {"base": "identity", "sharing": "unit"}, SHIFTED_RELU]
    net = build_network(arch, ["frelu", "affine", "frelu"], [params], 5, 3, seeds=[3])
    _identity_affine(net, 1)
    if norm == "batch":  # non-trivial running statistics, so the fold has work to do
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for bn in net.norms:
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.3)
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.2)
    X = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)
    return net.eval(), X


def _labels(net: PopulationNet, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(X))[0].argmax(-1).numpy()


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_exactly_linear_layer_is_found_and_merged_exactly(norm: str) -> None:
    net, X = _linear_middle_net(norm)
    layers = linear_layers(net, X)
    assert [x["near_linear"] for x in layers] == [False, True, False]
    middle = layers[1]
    assert middle["max_rel_error"] < 1e-5 and middle["near_linear_unit_fraction"] == 1.0
    assert middle["mergeable"] and middle["reason"] is None
    act = net.acts[1]
    np.testing.assert_allclose(middle["slope"], (act.a * act.b)[0].detach().numpy(), atol=1e-5)
    assert "not near-linear" in layers[0]["reason"]

    merged = merge_layer(net, 1, middle["slope"], middle["intercept"])
    assert len(merged.layers) == len(net.layers) - 1 == 2
    assert merged.arch.hidden == [12, 8]
    x = torch.from_numpy(X)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), net(x), rtol=1e-5, atol=1e-5)
    assert merged.count_params() < net.count_params()


def test_analyse_network_reports_merge_and_unchanged_accuracy() -> None:
    net, X = _linear_middle_net()
    y = _labels(net, X)
    result = analyse_network(net, EvalData(X, y, "classification"), time_speedup=False)
    assert result["before"]["validation"] == 1.0 and result["before"]["test"] is None
    rows = result["merge"]["layers"]
    assert [r["mergeable"] for r in rows] == [False, True, False]
    assert rows[1]["validation_after"] == 1.0 and rows[1]["validation_change"] == 0.0
    assert rows[1]["size_after"]["hidden_layers"] == 2
    assert result["merge"]["all"]["layers"] == [1]
    assert result["merge"]["all"]["size_after"]["params"] < result["size"]["params"]
    assert result["merge"]["all"]["size_after"]["flops"] < result["size"]["flops"]


def test_shifted_relu_fits_and_distils_to_two_pieces() -> None:
    act = build_network(ArchSpec.parse("mlp:4"), "frelu", [SHIFTED_RELU], 2, 2).acts[0]
    grid = np.linspace(-2.0, 2.0, 201)
    y = act.curve(torch.from_numpy(grid.astype(np.float32)))[0, 0].double().numpy()
    np.testing.assert_allclose(y, np.maximum(grid - 0.3, 0) + 0.1, atol=1e-6)
    best = analysis.fit_closed_forms(grid, y)[0]
    assert best.family == "affine:relu" and best.rmse < 1e-5
    p = best.params
    assert (p["a"], p["b"], p["c"], p["d"]) == pytest.approx((1.0, 1.0, -0.3, 0.1), abs=1e-3)

    arch = ArchSpec.parse("mlp:16,16")
    net = build_network(arch, "frelu", [SHIFTED_RELU], 4, 3, seeds=[5]).eval()
    X = np.random.default_rng(1).standard_normal((400, 4)).astype(np.float32)
    yl = _labels(net, X)
    distilled, layers = distil_network(net, X, rel_error=1e-4)  # near-exact, still 2 pieces
    for info in layers:
        lo, hi = info["range"]
        assert lo < 0.3 < hi  # the kink is inside the data range
        assert info["knots"] == 3 and not info["per_unit"]  # two linear pieces
        assert info["knots_x"][1] == pytest.approx(0.3, abs=1e-3)
        assert info["max_error"] < 1e-5
    x = torch.from_numpy(X)
    with torch.no_grad():
        torch.testing.assert_close(distilled(x), net(x), rtol=1e-5, atol=1e-5)
    result = analyse_network(net, EvalData(X, yl, "classification", X[:100], yl[:100]),
                             time_speedup=True, rel_error=1e-4)
    d = result["distilled"]
    assert d["validation_before"] == d["validation_after"] == 1.0 and d["validation_change"] == 0
    assert d["test_before"] == d["test_after"] == 1.0
    assert d["speedup"] > 0 and d["learned_s"] > 0 and d["batch"] == 1024  # rows repeated
    assert all(not r["near_linear"] for r in result["merge"]["layers"])
    assert result["merge"]["all"] is None


def test_per_unit_curves_distil_one_curve_per_unit() -> None:
    arch = ArchSpec.parse("mlp:6")
    net = build_network(arch, "affine", [{"base": "tanh", "sharing": "unit"}], 3, 2, seeds=[2])
    _identity_affine(net, 0, seed=4)  # distinct per-unit a, b, c, d over tanh
    X = np.random.default_rng(2).standard_normal((200, 3)).astype(np.float32)
    distilled, layers = distil_network(net.eval(), X, rel_error=0.002)
    assert layers[0]["per_unit"] and layers[0]["units"] == 6
    assert np.asarray(layers[0]["knots_x"]).shape[0] == 6
    x = torch.from_numpy(X)
    with torch.no_grad():
        out, ref = distilled(x), net(x)
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) < 0.02 * scale  # within the distillation error


def test_group_curves_distil_one_curve_per_channel_of_each_group() -> None:
    """group_rational has one curve per group of consecutive channels: the distilled
    layer repeats each group's curve for its channels and reproduces the network."""
    arch = ArchSpec.parse("mlp:8")
    net = build_network(arch, "group_rational", [{"groups": 4, "m": 4, "base": "elu"}], 3, 2,
                        seeds=[1])
    with torch.no_grad():  # distinct groups: perturb each group's coefficients
        g = torch.Generator().manual_seed(5)
        act = net.acts[0]
        act.a.add_(0.3 * torch.randn(act.a.shape, generator=g))
    X = np.random.default_rng(6).standard_normal((200, 3)).astype(np.float32)
    distilled, layers = distil_network(net.eval(), X, rel_error=0.002)
    assert layers[0]["per_unit"] and layers[0]["units"] == 8
    knots_y = np.asarray(layers[0]["knots_y"])
    assert np.allclose(knots_y[0], knots_y[1]) and not np.allclose(knots_y[1], knots_y[2])
    x = torch.from_numpy(X)
    with torch.no_grad():
        out, ref = distilled(x), net(x)
    assert float((out - ref).abs().max()) < 0.02 * float(ref.abs().max())
    assert len(linear_layers(net, X)[0]["slope"]) == 8


def test_metric_matches_engine_evaluate() -> None:
    net, X = _linear_middle_net()
    y = np.random.default_rng(3).integers(0, 3, len(X))
    state = net.candidate_state(0)
    params = [SHIFTED_RELU, {"base": "identity", "sharing": "unit"}, SHIFTED_RELU]
    expected = evaluate(net.arch, ["frelu", "affine", "frelu"], params, state, X, y, 3,
                        "classification")
    assert network_metric(net, X, y, "classification") == pytest.approx(expected)


def test_unit_mixing_family_cannot_be_distilled() -> None:
    net = build_network(ArchSpec.parse("mlp:8"), "maxout", [{}], 3, 2).eval()
    X = np.random.default_rng(4).standard_normal((20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="mixes units"):
        distil_network(net, X)
