"""The training-memory estimate: a pure function of the spec, close to what networks hold.

The estimate lets the service refuse a spec that cannot fit before anything is built
(``mlp:8192`` x 16 layers, 16 GB of training state per candidate, was accepted and killed the
trainer eight times) and lets the K chooser size a population without building a
network first. Here it is checked against small networks that are built and trained
for one step: their parameters with gradient and Adam's two moments, plus every tensor
autograd saves for the backward pass (twice: the saved tensors and their gradients).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from models.network import PopulationNet
from models.sizing import auto_population_size, estimate_candidate, largest_population_within
from models.spec import ArchSpec

CASES: list[Any] = [
    pytest.param("mlp:64,64", "relu", {}, id="mlp-relu"),
    pytest.param("mlp:256,128", "maxout", {"k": 4}, id="maxout-k4"),
    pytest.param("mlp:64,64", "crelu", {}, id="crelu"),
    pytest.param("mlp:32", "vaf", {"sharing": "unit", "width": 16, "depth": 3}, id="vaf-widest"),
    pytest.param("mlp:64", "spline", {"sharing": "unit", "grid": 16}, id="spline-finest"),
    pytest.param("mlp:64", "rational", {"sharing": "unit", "m": 6}, id="rational"),
    pytest.param({"kind": "cnn", "conv_channels": [8, 16], "hidden": [32],
                  "input_shape": [1, 8, 8]}, "relu", {}, id="cnn"),
    pytest.param({"kind": "mlp", "hidden": [128, 128], "norm": "batch"}, "gelu", {},
                 id="batch-norm"),
]


def _arch(a: str | dict[str, Any]) -> ArchSpec:
    return ArchSpec.parse(a) if isinstance(a, str) else ArchSpec.from_dict(a)


def measured_training_bytes(arch: ArchSpec, family: str, params: dict[str, Any], n_in: int,
                            n_out: int, batch: int) -> int:
    """What one candidate really holds while it trains one step (K=1)."""
    net = PopulationNet(arch, family, [params], n_in, n_out)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = net(torch.randn(batch, n_in)).pow(2).mean()
    loss.backward()
    param_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    return 4 * param_bytes + 2 * sum(saved.values())


@pytest.mark.parametrize(("arch", "family", "params"), CASES)
def test_the_estimate_is_within_a_factor_of_two_of_a_real_network(
        arch: Any, family: str, params: dict[str, Any]) -> None:
    spec = _arch(arch)
    real = measured_training_bytes(spec, family, params, 64, 10, 128)
    est = estimate_candidate(spec, family, 64, 10, 128)
    assert 0.5 < est.training_bytes / real < 2.0, (est, real)
    net = PopulationNet(spec, family, [params], 64, 10)
    assert 0.5 < est.params / net.count_params() < 2.0


def test_a_huge_spec_is_estimated_without_building_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the estimate built a network")

    import models.network

    # sizing never names the network class at run time (it sizes without torch)
    monkeypatch.setattr(models.network, "PopulationNet", no_build)
    arch = ArchSpec(kind="mlp", hidden=[8192] * 16)
    start = time.perf_counter()
    est = estimate_candidate(arch, ["relu", "gelu"], 784, 10, 64)
    assert time.perf_counter() - start < 0.05
    assert est.params > 1.0e9 and est.training_bytes > 16e9  # 1e9 params x 16 bytes
    # the K chooser sizes it the same way: no network built, and K=1 at most
    assert auto_population_size(arch, "relu", {}, 784, 10, 64, "cpu", threads=2,
                                memory_budget_bytes=2**30) == 1


def test_the_k_chooser_stays_within_the_memory_budget() -> None:
    arch = ArchSpec.parse("mlp:512,512")
    per = estimate_candidate(arch, "relu", 784, 10, 128).training_bytes
    budget = 10 * per
    k = auto_population_size(arch, "relu", {}, 784, 10, 128, "cpu", threads=64,
                             memory_budget_bytes=budget, memory_bytes=1 << 40)
    assert k == 8 and k * per <= budget
    # a costlier family (VAF saves its inner network) gets a smaller K within the same budget
    assert largest_population_within(arch, ["relu", "vaf"], 784, 10, 128, budget) < k
