"""models.merge and the per-unit PiecewiseLinear: pure tensor algebra with known answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from models.activations.piecewise import PiecewiseLinear, pad_knots
from models.engine import build_network
from models.merge import fold_affine, merge_blocker, merge_layer
from models.network import PopulationNet
from models.spec import ArchSpec


def _identity_affine(net: PopulationNet, layer: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random per-unit a, b, c, d of an affine-over-identity layer: its slope and intercept."""
    act = net.acts[layer]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ("a", "b", "c", "d"):
            p = getattr(act, name)
            p.copy_(torch.rand(p.shape, generator=g) + (0.5 if name in "ab" else -0.5))
    return ((act.a * act.b)[0].detach().double().numpy(),
            (act.a * act.c + act.d)[0].detach().double().numpy())


def test_fold_affine_is_the_composition() -> None:
    g = torch.Generator().manual_seed(0)
    w1, b1 = torch.randn(4, 3, generator=g), torch.randn(3, generator=g)
    alpha, beta = torch.randn(3, generator=g), torch.randn(3, generator=g)
    w2, b2 = torch.randn(3, 2, generator=g), torch.randn(2, generator=g)
    x = torch.randn(7, 4, generator=g)
    w, b = fold_affine(w1, b1, alpha, beta, w2, b2)
    expected = ((x @ w1 + b1) * alpha + beta) @ w2 + b2
    torch.testing.assert_close((x.double() @ w + b).float(), expected, rtol=1e-5, atol=1e-5)
    sq, sqb = torch.randn(4, 4, generator=g), torch.randn(4, generator=g)
    a4, c4 = torch.randn(4, generator=g), torch.randn(4, generator=g)
    w, b = fold_affine(sq, sqb, a4, c4, torch.randn(4, 2, generator=g), b2, skip=True)
    assert w.shape == (4, 2) and b.shape == (2,)


@pytest.mark.parametrize(("overrides", "layer", "reason"), [
    ({"norm": "layer"}, 0, "layer norm"),
    ({"residual": True}, 0, "skip connection reads this layer"),
])
def test_merge_refused_where_not_exact(overrides: dict[str, Any], layer: int, reason: str) -> None:
    arch = ArchSpec.parse("mlp:8,8", **overrides)
    net = build_network(arch, "affine", [{"base": "identity"}], 4, 2)
    assert reason in (merge_blocker(net, layer) or "")
    with pytest.raises(ValueError, match="not mergeable"):
        merge_layer(net, layer, 1.0, 0.0)


def test_residual_last_layer_merges_with_its_skip() -> None:
    arch = ArchSpec.parse("mlp:8,8", residual=True)
    net = build_network(arch, "affine", [{"base": "identity", "sharing": "unit"}], 4, 2, seeds=[9])
    assert net.layers[1].residual
    slope, intercept = _identity_affine(net, 1, seed=7)
    merged = merge_layer(net.eval(), 1, slope, intercept)
    x = torch.randn(50, 4)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), net(x), rtol=1e-5, atol=1e-5)
    assert "only hidden layer" in (merge_blocker(merged, 0) or "")


def test_cnn_conv_layer_is_not_merged() -> None:
    arch = ArchSpec.parse("cnn:4/6", input_shape=(1, 4, 4))
    net = build_network(arch, "affine", [{"base": "identity"}], 16, 2)
    assert "convolution" in (merge_blocker(net, 0) or "")
    assert merge_blocker(net, 1) is None  # the dense head layer merges into the output
    slope, intercept = _identity_affine(net, 1, seed=3)
    merged = merge_layer(net.eval(), 1, slope, intercept)
    assert merged.arch.hidden == [] and len(merged.layers) == 1
    x = torch.randn(6, 16)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), net(x), rtol=1e-5, atol=1e-5)



def test_piecewise_linear_per_unit_in_both_layouts() -> None:
    kx, ky = pad_knots([([-1.0, 0.0, 1.0], [0.0, 0.0, 1.0]),  # relu on [-1, 1]
                        ([-1.0, 1.0], [-2.0, 2.0]),  # 2x: padded with a knot on the line
                        ([-2.0, -1.0, 0.0, 2.0], [1.0, 0.0, 1.0, 0.0])])
    assert kx.shape == ky.shape == (3, 4)
    assert np.allclose(np.interp(0.3, kx[1], ky[1]), 0.6)
    module = PiecewiseLinear(kx, ky)
    z = torch.linspace(-0.99, 0.99, 25)
    mlp = z.reshape(1, -1, 1).expand(1, 25, 3).contiguous()  # (K, B, U)
    out = module(mlp)
    for u in range(3):
        np.testing.assert_allclose(out[0, :, u].numpy(), np.interp(z.numpy(), kx[u], ky[u]),
                                   atol=1e-6)
    conv = mlp.permute(1, 0, 2).reshape(25, 1, 3, 1, 1)  # (B, K, U, H, W)
    torch.testing.assert_close(module(conv).reshape(25, 3), out[0])
    shared = PiecewiseLinear([-1.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    torch.testing.assert_close(shared(mlp)[0, :, 1], torch.relu(z))
    assert module(torch.tensor([[[3.0, 3.0, 3.0]]])).tolist() == [[[3.0, 6.0, -0.5]]]  # extends
    with pytest.raises(ValueError, match="strictly increasing"):
        PiecewiseLinear([0.0, 0.0], [1.0, 2.0])


@pytest.mark.parametrize("n", [2, 3, 8, 40])
def test_piecewise_hinge_and_lookup_forms_agree(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Few knots run as ReLU hinges, many as a bucketize lookup: the same curve either way."""
    import models.activations.piecewise as pw

    rng = np.random.default_rng(n)
    kx = np.linspace(-2.0, 2.0, n)
    kx_u = np.stack([kx + rng.uniform(-0.01, 0.01) for _ in range(5)])
    ky_u = rng.standard_normal((5, n))
    x = torch.from_numpy(rng.standard_normal((1, 64, 5)).astype(np.float32) * 2)
    for module in (PiecewiseLinear(kx, ky_u[0]), PiecewiseLinear(kx_u, ky_u)):
        first = module(x)
        monkeypatch.setattr(pw, "MAX_HINGES", -1 if n - 2 <= pw.MAX_HINGES else 10**6)
        # float32 sums of up to 38 hinges of a rough random curve: rounding near 1e-5
        torch.testing.assert_close(module(x), first, rtol=1e-4, atol=1e-4)
        monkeypatch.undo()
