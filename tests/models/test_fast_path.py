"""The engine's fast path: compiled kernels, fused optimizer, outputs-first layer, sizing.

Every fast piece must be the same math as the reference: a population equals K single
runs through it, compaction keeps the survivors' results, compiled kernels equal the
eager ones in values and gradients. CUDA-only checks skip without a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from models import kernels
from models.activations import get_activation
from models.engine import EpochReport, TensorData, train_population
from models.layers import BatchedLinear
from models.network import PopulationNet
from models.optim import BatchedOptimizer
from models.sizing import CPU_MAX_K, auto_population_size, tune_cpu
from models.spec import ArchSpec, Candidate, TrainConfig

MLP = ArchSpec.parse("mlp:12,12")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def make_data(n: int = 96, d: int = 6, seed: int = 0) -> TensorData:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 32, d)).astype(np.float32)
    y = (x @ rng.standard_normal((d, 3))).argmax(1)
    return TensorData(x[:n], y[:n], x[n:], y[n:], "classification", 3)


DATA = make_data()


def cands(k: int, act_params: dict[str, Any] | None = None) -> list[Candidate]:
    lrs = [3e-3, 1e-2, 5e-3, 2e-2]
    return [Candidate(seed=20 + i, lr=lrs[i % 4], weight_decay=1e-3 * (i % 2),
                      act_params=dict(act_params or {})) for i in range(k)]


def assert_same(a: Any, b: Any, atol: float = 2e-4) -> None:
    assert a.status == b.status
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history, strict=True):
        for key in ("train_loss", "val_loss", "val_metric"):
            assert ha[key] == pytest.approx(hb[key], abs=atol), key
    for name in a.state_dict:
        np.testing.assert_allclose(a.state_dict[name], b.state_dict[name], atol=atol, err_msg=name)


def require_compiler() -> None:
    if not kernels.compile_available():
        pytest.skip("torch.compile is not usable here; the eager kernels were used")


@pytest.fixture
def compile_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTSEARCH_COMPILE", "on")


# ----- population == K single runs, through the fast path ---------------------------------
@pytest.mark.parametrize("family", ["relu", "rational", "vaf"])
def test_population_equals_single_runs(family: str, compile_on: None) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, record_epochs=0, optimizer="adam")
    population = cands(3)
    pop = train_population(MLP, family, population, DATA, cfg)
    require_compiler()
    for i, c in enumerate(population):
        one = train_population(MLP, family, [c], DATA, cfg)
        assert_same(pop.candidates[i], one.candidates[0])


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_compaction_keeps_survivors(optimizer: str, compile_on: None) -> None:
    cfg = TrainConfig(epochs=3, batch_size=32, record_epochs=0, optimizer=optimizer)
    population = cands(4)

    def prune_odd(report: EpochReport) -> list[int]:
        return [i for i in report.candidates if i % 2 == 1] if report.epoch == 1 else []

    full = train_population(MLP, "rational", population, DATA, cfg)
    pruned = train_population(MLP, "rational", population, DATA, cfg, on_epoch=prune_odd)
    require_compiler()
    assert [c.status for c in pruned.candidates] == ["complete", "pruned", "complete", "pruned"]
    assert pruned.candidate_epochs == 4 + 2 * 2
    for i in (0, 2):
        assert_same(pruned.candidates[i], full.candidates[i], atol=1e-5)
    for i in (1, 3):  # pruned after epoch 1: that epoch equals the full run's
        assert pruned.candidates[i].history[0]["val_loss"] == pytest.approx(
            full.candidates[i].history[0]["val_loss"], abs=1e-6)


def test_engine_without_compiling_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, record_epochs=0)
    monkeypatch.setenv("ACTSEARCH_COMPILE", "on")
    fast = train_population(MLP, "rational", cands(2), DATA, cfg)
    monkeypatch.setenv("ACTSEARCH_COMPILE", "off")
    monkeypatch.setenv("ACTSEARCH_FUSED_OPTIM", "0")
    slow = train_population(MLP, "rational", cands(2), DATA, cfg)
    for a, b in zip(fast.candidates, slow.candidates, strict=True):
        assert_same(a, b)


# ----- compiled kernels == the eager reference ------------------------------------------
KERNEL_CASES = [
    ("rational", {}),
    ("rational", {"sharing": "unit", "m": 4}),
    ("vaf", {}),
    ("vaf", {"sharing": "unit", "inner": "silu", "width": 3}),
    ("vaf", {"depth": 2, "residual": True}),
    ("vaf", {"depth": 2, "residual": False, "inner": "tanh"}),
    ("spline", {}),
]


@pytest.mark.parametrize(("family", "params"), KERNEL_CASES)
def test_compiled_kernel_matches_reference(family: str, params: dict[str, Any]) -> None:
    torch.manual_seed(0)
    act = get_activation(family)([params, params], units=5)
    with torch.no_grad():  # move the parameters off their init so every term matters
        for p in act.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = (2 * torch.randn(2, 7, 5)).requires_grad_(True)

    def run(compiled: bool) -> list[torch.Tensor]:
        x.grad = None
        for p in act.parameters():
            p.grad = None
        with kernels.compiling(compiled):
            y = act(x)
        weights = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
        (y * weights).sum().backward()
        assert x.grad is not None
        return [y.detach(), x.grad.clone()] + [
            p.grad.clone() for p in act.parameters() if p.grad is not None]

    ref = run(False)
    got = run(True)
    require_compiler()
    assert len(got) == len(ref)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-4)


@pytest.mark.parametrize(("family", "params"), [c for c in KERNEL_CASES if c[0] != "rational"])
def test_no_grad_forward_equals_the_autograd_form(family: str, params: dict[str, Any]) -> None:
    """Validation and curve sampling run the unrolled (fusion) form eagerly under no_grad;
    it must give what the generic autograd form gives."""
    torch.manual_seed(1)
    act = get_activation(family)([params, params], units=5)
    with torch.no_grad():
        for p in act.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = 2 * torch.randn(2, 9, 5)
    with kernels.compiling(False):
        reference = act(x).detach()  # grad enabled: the generic form
        with torch.no_grad():
            fast = act(x)
    torch.testing.assert_close(fast, reference, atol=2e-5, rtol=2e-4)


def test_no_grad_inside_compiling_runs_compiled_and_equals_the_reference() -> None:
    act = get_activation("rational")([{}], units=3)
    x = torch.randn(1, 4, 3)
    with kernels.compiling(True), torch.no_grad():
        assert kernels.active() or not kernels.compile_available()
        y = act(x)
    torch.testing.assert_close(y, act(x))


# ----- optimizer and layers -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_fused_adam_matches_foreach(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def run(fused: str) -> dict[str, torch.Tensor]:
        monkeypatch.setenv("ACTSEARCH_FUSED_OPTIM", fused)
        net = PopulationNet(ArchSpec.parse("mlp:6"), "prelu", [{}] * 3, 4, 2, seeds=[1, 2, 3])
        opt = BatchedOptimizer(net, [1e-2, 2e-2, 0.0], [0.1, 0.0, 0.1], kind)
        assert opt._fused == (fused == "1")
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
        for step in range(5):
            opt.zero_grad()
            net(x).square().mean(dim=(1, 2)).sum().backward()
            opt.step(1.0 - 0.1 * step)
        return {n: t.clone() for n, t in net.state_dict().items()}

    fused, plain = run("1"), run("0")
    for name in fused:
        torch.testing.assert_close(fused[name], plain[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shared", [False, True])
def test_outputs_first_matches_plain_layer(shared: bool) -> None:
    torch.manual_seed(0)
    layer = BatchedLinear(3, 5, 4, shared_input=shared).double()
    with torch.no_grad():
        layer.weight.normal_()
        layer.bias.normal_()
    shape = (6, 5) if shared else (3, 6, 5)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer.forward_outputs_first(x).transpose(1, 2), layer(x))
    assert layer.forward_outputs_first(x).is_contiguous()
    torch.autograd.gradcheck(lambda a, w, b: _outputs_first(layer, a, w, b),
                             (x, layer.weight, layer.bias))


def _outputs_first(layer: BatchedLinear, x: torch.Tensor, w: torch.Tensor,
                   b: torch.Tensor) -> torch.Tensor:
    from models.layers import _OutputsFirst

    if layer.shared_input:
        x = x.unsqueeze(0).expand(w.shape[0], -1, -1)
    return _OutputsFirst.apply(x, w, b)


# ----- sizing and settings ----------------------------------------------------------------
def test_auto_population_size_cpu() -> None:
    small = auto_population_size(ArchSpec.parse("mlp:64,64"), "relu", {}, 64, 10, 128, "cpu",
                                 threads=2)
    wide = auto_population_size(ArchSpec.parse("mlp:1024,1024"), "relu", {}, 64, 10, 128, "cpu",
                                threads=2)
    assert 1 <= wide <= small <= CPU_MAX_K
    assert small & (small - 1) == 0  # a power of two
    tight = auto_population_size(ArchSpec.parse("mlp:64,64"), "relu", {}, 64, 10, 128, "cpu",
                                 memory_bytes=1)
    assert tight == 1


def test_tune_cpu_reports_settings() -> None:
    before = torch.get_num_threads()
    try:
        settings = tune_cpu(1)
        assert settings["threads"] == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_compile_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setenv("ACTSEARCH_COMPILE", "off")
    assert not kernels.should_compile(cpu, 1e12)
    monkeypatch.setenv("ACTSEARCH_COMPILE", "auto")
    if kernels.compile_available():
        assert kernels.should_compile(cpu, 1e12)
        assert not kernels.should_compile(cpu, 1.0, ["not-a-family"])


# ----- CUDA -----------------------------------------------------------------------------------
@CUDA
@pytest.mark.parametrize("family", ["relu", "rational"])
def test_cuda_population_equals_cpu(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTSEARCH_TF32", "0")
    population = cands(3)
    cpu = train_population(MLP, family, population, DATA,
                           TrainConfig(epochs=2, batch_size=32, record_epochs=0))
    gpu = train_population(MLP, family, population, DATA,
                           TrainConfig(epochs=2, batch_size=32, record_epochs=0, device="cuda"))
    for a, b in zip(gpu.candidates, cpu.candidates, strict=True):
        assert_same(a, b, atol=1e-3)


@CUDA
def test_cuda_auto_population_size_fits_memory() -> None:
    k = auto_population_size(ArchSpec.parse("mlp:256,256"), "relu", {}, 784, 10, 128, "cuda")
    assert k >= 1
    assert auto_population_size(ArchSpec.parse("mlp:256,256"), "relu", {}, 784, 10, 128, "cuda",
                                memory_bytes=1) == 1


def test_compiled_kernels_do_not_recompile_per_population_size() -> None:
    """Dynamo would specialise on a Parameter's shape; the kernels get plain views, so
    ten population sizes (more than dynamo's recompile limit of 8) share one graph."""
    for k in range(2, 12):
        act = get_activation("vaf")([{}] * k, units=4)
        x = torch.randn(k, 5, 4, requires_grad=True)
        with kernels.compiling(True):
            act(x).sum().backward()
    require_compiler()


def test_optimizer_takes_a_device_lr_multiplier_and_keeps_its_step_through_compaction() -> None:
    """What CUDA-graph replay relies on: a tensor multiplier is the same as a float one,
    and Adam's step count (a tensor advanced in place) survives compaction."""
    results = []
    for as_tensor in (False, True):
        net = PopulationNet(MLP, "relu", [{}] * 3, 6, 3, seeds=[1, 2, 3])
        opt = BatchedOptimizer(net, [1e-2, 3e-3, 5e-3], [0.0, 1e-3, 0.0], "adam")
        x = torch.as_tensor(DATA.X_train)
        for step in range(3):
            if step == 2:
                net.keep(torch.tensor([0, 2]))
                opt.keep(torch.tensor([0, 2]))
            opt.zero_grad()
            net(x).square().mean(dim=(1, 2)).sum().backward()
            mult = 0.5 + 0.25 * step
            opt.step(torch.tensor(mult) if as_tensor else mult)
        assert float(opt._step_t) == 3.0
        results.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)


@CUDA
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_cuda_graph_replay_equals_eager_steps(optimizer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replayed steps (graphs on) equal eager ones, across a cosine schedule and compaction."""
    monkeypatch.setenv("ACTSEARCH_TF32", "0")
    data = make_data(n=320)

    def prune_odd(report: EpochReport) -> list[int]:
        return [i for i in report.candidates if i % 2] if report.epoch == 2 else []

    runs = []
    for flag in ("0", "1"):
        monkeypatch.setenv("ACTSEARCH_CUDA_GRAPHS", flag)
        cfg = TrainConfig(epochs=4, batch_size=32, record_epochs=0, device="cuda",
                          optimizer=optimizer, schedule="cosine")
        runs.append(train_population(MLP, "relu", cands(4), data, cfg, on_epoch=prune_odd))
    for a, b in zip(*[r.candidates for r in runs], strict=True):
        assert_same(a, b, atol=1e-4)
    assert [c.status for c in runs[1].candidates] == ["complete", "pruned"] * 2


@CUDA
@pytest.mark.parametrize("family", ["relu", "rational"])
def test_cuda_bf16_autocast_trains(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTSEARCH_AMP", "bf16")
    data = make_data(n=640)
    res = train_population(MLP, family, cands(2), data,
                           TrainConfig(epochs=8, batch_size=32, record_epochs=0, device="cuda"))
    assert all(c.status == "complete" for c in res.candidates)
    assert max(c.best_val_metric for c in res.candidates) > 0.6  # 3 classes: chance is ~0.33


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_compiled_optimizer_equals_fused(optimizer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled one-pass Adam (``ACTSEARCH_COMPILED_OPTIM=on``) is the fused kernel's math,
    across a schedule and compaction."""
    if not kernels.compile_available():
        pytest.skip("torch.compile is not usable here")

    def prune_odd(report: EpochReport) -> list[int]:
        return [i for i in report.candidates if i % 2] if report.epoch == 1 else []

    runs = []
    for flag in ("off", "on"):
        monkeypatch.setenv("ACTSEARCH_COMPILED_OPTIM", flag)
        cfg = TrainConfig(epochs=3, batch_size=32, record_epochs=0, optimizer=optimizer,
                          schedule="cosine")
        runs.append(train_population(MLP, "relu", cands(4), DATA, cfg, on_epoch=prune_odd))
    for a, b in zip(*[r.candidates for r in runs], strict=True):
        assert_same(a, b, atol=2e-5)


def test_compile_pays_back_over_the_horizon_and_per_slice_size(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Any) -> None:
    """The payback rule with bench/README's figures: a population too small to pay for a
    cold compile pays within a long enough horizon (a warm trainer's remaining work), a
    cached compile pays sooner, and a shape-specialised family (spline) counts each new
    slice size as a compile of its own, a shape-generic one (vaf) does not."""
    cpu = torch.device("cpu")
    monkeypatch.setenv("ACTSEARCH_COMPILE", "auto")
    if not kernels.compile_available():
        pytest.skip("torch.compile unavailable")
    monkeypatch.setattr(kernels, "_warm", set())
    monkeypatch.setattr(kernels, "_cache_dir", tmp_path)
    cold = kernels.CPU_COMPILE_S_START + kernels.CPU_COMPILE_S_COLD
    work = 0.5 * cold / kernels.CPU_SAVED_S_PER_ELEMENT  # pays half the cold compile
    assert kernels.compile_seconds({"vaf"}) == cold
    assert not kernels.should_compile(cpu, work, ["vaf"], slices=[("vaf", 8)])
    assert kernels.should_compile(cpu, work, ["vaf"], slices=[("vaf", 8)], horizon=2.0)
    kernels.mark_warm(kernels.slice_keys(["vaf", "spline"], [("vaf", 8), ("spline", 8)]))
    assert kernels.should_compile(cpu, 0.0, ["vaf"], slices=[("vaf", 16)])  # shape-generic
    assert kernels.compile_seconds(kernels.slice_keys(["spline"], [("spline", 16)])) == \
        kernels.CPU_COMPILE_S_COLD  # a new k: compiled again (Inductor has started)
    assert not kernels.should_compile(cpu, 0.0, ["spline"], slices=[("spline", 16)])
    monkeypatch.setattr(kernels, "_warm", set())  # a new process with the same cache dir
    assert kernels.compile_seconds({"vaf"}) == \
        kernels.CPU_COMPILE_S_START + kernels.CPU_COMPILE_S_DISK
