"""Analysis on transformer and resnet networks: distillation where the activation is
pointwise, a stated refusal for gated units and for merging across residual blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.merge import merge_blocker
from models.network import PopulationNet
from models.spec import ArchSpec
from search.analysis.curves import analyse_curves
from search.analysis.distillation import distil_network, linear_layers

TRANSFORMER = ArchSpec.parse("transformer:d=16,layers=2,heads=2", vocab_size=7)
RESNET = ArchSpec.parse("resnet:4,8", input_shape=(1, 6, 6))


def _inputs(arch: ArchSpec) -> np.ndarray:
    rng = np.random.default_rng(0)
    if arch.kind == "transformer":
        return rng.integers(0, 7, (40, 5)).astype(np.float32)
    return rng.standard_normal((20, 36)).astype(np.float32)


@pytest.mark.parametrize(("arch", "family"), [(TRANSFORMER, "star_relu"), (RESNET, "gaussian"),
                                              (TRANSFORMER, "gelu"), (RESNET, "sine")])
def test_pointwise_families_distil_inside_the_blocks(arch: ArchSpec, family: str) -> None:
    X = _inputs(arch)
    net = PopulationNet(arch, family, [{}], X.shape[1], 3).eval()
    distilled, layers = distil_network(net, X)
    assert len(layers) == arch.n_hidden_layers() and all(row["knots"] >= 2 for row in layers)
    x = torch.from_numpy(X)
    with torch.no_grad():
        out, ref = distilled(x), net(x)
    assert float((out - ref).abs().max()) < 0.1 * max(float(ref.abs().max()), 1.0)
    assert not any(row["mergeable"] for row in linear_layers(net, X))
    assert "residual add" in (merge_blocker(net, 0) or "")


@pytest.mark.parametrize("arch", [TRANSFORMER, RESNET])
def test_gated_units_are_refused_with_the_reason(arch: ArchSpec) -> None:
    X = _inputs(arch)
    net = PopulationNet(arch, "swiglu", [{}], X.shape[1], 3).eval()
    with pytest.raises(ValueError, match="gated unit: its curve is the gate's response"):
        distil_network(net, X)
    curve = {"layer": 0, "epoch": 1, "x": [0.0, 1.0], "y": [[0.5, 0.7]]}
    assert analyse_curves(family="swiglu", family_params={}, curves=[curve]) == []
