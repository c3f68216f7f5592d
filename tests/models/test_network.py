"""PopulationNet, the specs and the batched optimizer (CPU, fast)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from core.errors import InvalidInput
from models.activations import REGISTRY, get_activation
from models.engine import build_network, count_flops, count_params
from models.network import PopulationNet
from models.optim import BatchedOptimizer, schedule_multiplier
from models.spec import ArchSpec, Candidate, TrainConfig

# Families exercised when registered (others are being added concurrently).
FAMILIES = ["relu", "leaky_relu", "prelu", "selu", "maxout", "crelu"]


def registered(name: str) -> str:
    assert name in REGISTRY, f"activation family {name!r} is not registered"
    return name


def cnn_arch(**kw: object) -> ArchSpec:
    return ArchSpec.parse("cnn:4,4/6", input_shape=(2, 6, 6), **kw)


# ----- specs --------------------------------------------------------------------------
def test_parse_mlp_and_cnn() -> None:
    a = ArchSpec.parse("mlp:64,32")
    assert (a.kind, a.hidden, a.conv_channels) == ("mlp", [64, 32], [])
    c = ArchSpec.parse("cnn:16,32/64", input_shape=(1, 8, 8))
    assert (c.kind, c.conv_channels, c.hidden, c.input_shape) == ("cnn", [16, 32], [64], (1, 8, 8))
    assert ArchSpec.parse("cnn:8").hidden == []
    c.validate(n_inputs=64)


def test_spec_round_trips_through_json() -> None:
    a = ArchSpec.parse("cnn:4/8", input_shape=(1, 8, 8), norm="batch", dropout=0.2, residual=True)
    b = ArchSpec.from_dict(json.loads(json.dumps(a.to_dict())))
    assert b == a
    t = TrainConfig(epochs=3, deadline_s=5.0)
    assert TrainConfig.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    c = Candidate(seed=1, lr=0.01, act_params=[{"a_init": 0.1}, {}])
    assert Candidate.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (ArchSpec(hidden=[]), "at least one hidden layer"),
        (ArchSpec(hidden=[64, 0]), "positive integer"),
        (ArchSpec(dropout=1.0), "dropout must be in [0, 1)"),
        (ArchSpec(dropout=-0.1), "dropout"),
        (ArchSpec(norm="group"), "unknown norm"),  # type: ignore[arg-type]
        (ArchSpec(kind="cnn", conv_channels=[8]), "input_shape"),
        (ArchSpec(kind="cnn", conv_channels=[]), "at least one conv layer"),
        (ArchSpec(kind="cnn", conv_channels=[4, 4, 4], input_shape=(1, 4, 4)), "shrinks"),
        (ArchSpec(activation_scope="unit"), "activation_scope"),  # type: ignore[arg-type]
    ],
)
def test_validate_explains(spec: ArchSpec, fragment: str) -> None:
    with pytest.raises(InvalidInput, match=None) as err:
        spec.validate()
    assert fragment in str(err.value)


def test_validate_limits_and_inputs() -> None:
    with pytest.raises(InvalidInput, match="limit"):
        ArchSpec(hidden=[512]).validate(max_width=256)
    with pytest.raises(InvalidInput, match="holds 64 values"):
        ArchSpec.parse("cnn:4", input_shape=(1, 8, 8)).validate(n_inputs=10)
    with pytest.raises(InvalidInput, match="unknown key"):
        ArchSpec.from_dict({"hiden": [3]})
    for bad in ("mlp", "rnn:4", "mlp:4,x", "mlp:4/3"):
        with pytest.raises(InvalidInput):
            ArchSpec.parse(bad)
    with pytest.raises(InvalidInput, match="lr"):
        Candidate(seed=0, lr=-1.0).validate()
    with pytest.raises(InvalidInput, match="optimizer"):
        TrainConfig(optimizer="rmsprop").validate()  # type: ignore[arg-type]


# ----- shapes, sizes --------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("n_out", [4, 1])
def test_output_shapes(family: str, kind: str, n_out: int) -> None:
    registered(family)
    arch = ArchSpec.parse("mlp:6,6", residual=True) if kind == "mlp" else cnn_arch(residual=True)
    net = build_network(arch, family, [{}] * 3, 72, n_out, seeds=[1, 2, 3])
    x = torch.randn(5, 72)
    pre: list[torch.Tensor] = []
    out = net(x, preacts=pre)
    assert out.shape == (3, 5, n_out)
    assert len(pre) == len(net.layers) == arch.n_hidden_layers()
    for z, info in zip(pre, net.layers, strict=True):
        positions = info.spatial[0] * info.spatial[1] if info.spatial else 1
        assert z.shape == (3, 5 * positions, info.pre)
    assert net.count_params() == sum(p[0].numel() for p in net.parameters())


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_norms_run_and_count(norm: str, kind: str) -> None:
    arch = ArchSpec.parse("mlp:6,6", norm=norm) if kind == "mlp" else cnn_arch(norm=norm)
    net = build_network(arch, "relu", [{}] * 2, 72, 3)
    net(torch.randn(4, 72)).sum().backward()
    net.eval()
    assert torch.isfinite(net(torch.randn(4, 72))).all()
    k1 = build_network(arch, "relu", [{}], 72, 3)
    assert k1.count_params() == sum(p.numel() for p in k1.parameters())


def test_param_count_by_hand() -> None:
    mlp = ArchSpec.parse("mlp:5")
    assert count_params(mlp, "relu", {}, 3, 2) == (3 * 5 + 5) + (5 * 2 + 2)
    assert count_params(mlp, "prelu", {"sharing": "layer"}, 3, 2) == 32 + 1
    assert count_params(mlp, "prelu", {"sharing": "unit"}, 3, 2) == 32 + 5
    # batch norm: gamma and beta per unit replace the hidden bias; running statistics
    # are buffers, not parameters
    assert count_params(ArchSpec.parse("mlp:5", norm="batch"), "relu", {}, 3, 2) == 32 - 5 + 10
    assert count_flops(ArchSpec.parse("mlp:5", norm="batch"), "relu", {}, 3, 2) == (
        5 * (2 * 3 + 1) + 2 * (2 * 5 + 1)  # + 1 FLOP per relu element
    )


def test_flops_by_hand() -> None:
    # 2 per multiply-add + 1 per bias add + the activation's cost per element
    # (relu: 1) (+ 1 per residual add)
    assert count_flops(ArchSpec.parse("mlp:4,6"), "relu", {}, 3, 2) == (
        4 * (2 * 3 + 2) + 6 * (2 * 4 + 2) + 2 * (2 * 6 + 1)
    )
    assert count_flops(ArchSpec.parse("mlp:4,4", residual=True), "relu", {}, 3, 2) == (
        4 * 8 + (4 * 10 + 4) + 2 * 9
    )
    cnn = ArchSpec.parse("cnn:2/3", input_shape=(1, 4, 4), kernel=3, pool=2)
    conv = 16 * 2 * (2 * 1 * 9 + 2)  # 16 positions x 2 channels x (9 MACs + bias + relu)
    assert count_flops(cnn, "relu", {}, 16, 2) == conv + 3 * (2 * 8 + 2) + 2 * (2 * 3 + 1)
    # a rational unit (m=5 over 4) costs 2*5 + 2*4 + 3 = 21 FLOPs per element
    rational = count_flops(ArchSpec.parse("mlp:4"), "rational", {"m": 5}, 3, 2)
    assert rational == 4 * (2 * 3 + 1 + 21) + 2 * (2 * 4 + 1)


def test_width_bookkeeping_follows_the_family() -> None:
    fam = get_activation("maxout")
    st = {s.name: s.default for s in fam.space() if s.structural}
    net = build_network(ArchSpec.parse("mlp:6"), "maxout", [{}], 4, 2)
    assert net.layers[0].pre == fam.pre_units(6, st)
    assert net.layers[0].post == fam.post_units(net.layers[0].pre, st)


# ----- per-candidate independence ----------------------------------------------------------
@pytest.mark.parametrize("family", sorted(set(FAMILIES) | set(REGISTRY)))
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_candidate_state_reproduces_candidate(family: str, kind: str) -> None:
    registered(family)
    arch = ArchSpec.parse("mlp:6,6", norm="batch") if kind == "mlp" else cnn_arch(norm="batch")
    net = build_network(arch, family, [{}] * 3, 72, 4, seeds=[7, 8, 9])
    with torch.no_grad():  # move every tensor off its init so the load is really tested
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    net(torch.randn(16, 72))  # training-mode forward updates batch-norm running statistics
    net.eval()
    x = torch.randn(5, 72)
    full = net(x)
    single = build_network(arch, family, [{}], 72, 4, seeds=[0])
    single.load_candidate_state(net.candidate_state(1))
    single.eval()
    torch.testing.assert_close(single(x)[0], full[1], atol=1e-5, rtol=1e-5)
    net.keep(torch.tensor([0, 2]))  # compaction keeps the survivors' outputs
    # 1e-4 relative: a batched GEMM (or convolution) over another K may round its last
    # bits differently, each layer carries that on, and squared units (squared_relu,
    # star_relu) double it; float32 differences up to 3.6e-5 were seen on a CNN
    torch.testing.assert_close(net(x), full[[0, 2]], atol=1e-5, rtol=1e-4)


def test_init_depends_only_on_the_candidate_seed() -> None:
    arch = cnn_arch()
    pop = build_network(arch, "prelu", [{}] * 3, 72, 4, seeds=[5, 6, 7])
    one = build_network(arch, "prelu", [{}], 72, 4, seeds=[6])
    for (name, a), (_, b) in zip(pop.state_dict().items(), one.state_dict().items(), strict=True):
        torch.testing.assert_close(a[1:2], b, msg=name)


def test_keep_compacts_every_tensor() -> None:
    arch = ArchSpec.parse("mlp:6,6", norm="batch", residual=True)
    net = build_network(arch, "prelu", [{"a_init": v} for v in (0.1, 0.2, 0.3, 0.4)], 8, 3)
    net.eval()
    x = torch.randn(5, 8)
    before = net(x)
    net.keep(torch.tensor([0, 2, 3]))
    assert net.k == 3 and all(t.shape[0] == 3 for t in net.state_dict().values())
    torch.testing.assert_close(net(x), before[[0, 2, 3]])


def test_layer_scope_families_and_params() -> None:
    arch = ArchSpec.parse("mlp:6,6", activation_scope="layer")
    net = build_network(arch, ["relu", "prelu"], [[{}, {"a_init": 0.1}], [{}, {"a_init": 0.3}]], 4, 2)
    assert net.families == ["relu", "prelu"]
    assert net.acts[1].a[:, 0].tolist() == pytest.approx([0.1, 0.3])
    with pytest.raises(InvalidInput, match="one dict per hidden layer"):
        build_network(arch, "relu", [[{}]], 4, 2)
    with pytest.raises(InvalidInput, match="activation_scope='layer'"):
        build_network(ArchSpec.parse("mlp:6,6"), ["relu", "prelu"], [{}], 4, 2)


def test_dropout_masks_follow_candidate_seed() -> None:
    arch = ArchSpec.parse("mlp:16,16", dropout=0.5)
    pop = build_network(arch, "relu", [{}] * 3, 8, 2, seeds=[3, 4, 5])
    one = build_network(arch, "relu", [{}], 8, 2, seeds=[4])
    x = torch.randn(6, 8)
    torch.testing.assert_close(one(x)[0], pop(x)[1])


# ----- optimizer ----------------------------------------------------------------------
def _loss(net: PopulationNet, x: torch.Tensor) -> torch.Tensor:
    return net(x).square().mean(dim=(1, 2)).sum()


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_per_candidate_lr(kind: str) -> None:
    net = build_network(ArchSpec.parse("mlp:6"), "prelu", [{}] * 3, 4, 2, seeds=[1, 2, 3])
    start = {n: t.clone() for n, t in net.state_dict().items()}
    opt = BatchedOptimizer(net, [0.0, 1e-2, 1e-1], [0.1, 0.1, 0.1], kind)
    x = torch.randn(8, 4)
    for _ in range(3):
        opt.zero_grad()
        _loss(net, x).backward()
        opt.step()
    moved = [sum(float((t[i] - start[n][i]).abs().sum()) for n, t in net.state_dict().items())
             for i in range(3)]
    assert moved[0] == 0.0
    assert 0 < moved[1] < moved[2]


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_weight_decay_spares_activation_and_bias(kind: str) -> None:
    net = build_network(ArchSpec.parse("mlp:6", norm="layer"), "prelu", [{}] * 2, 4, 2)
    start = {n: t.clone() for n, t in net.named_parameters()}
    opt = BatchedOptimizer(net, [0.1, 0.1], [0.5, 0.0], kind)
    for _ in range(3):
        for p in net.parameters():
            p.grad = torch.zeros_like(p)  # only decay can move anything
        opt.step()
    decay, no_decay = net.parameter_groups()
    assert {n for n, _ in decay} == {"dense.0.weight", "out.weight"}
    for name, p in no_decay:
        torch.testing.assert_close(p, start[name], msg=name)
    for name, p in decay:
        assert not torch.allclose(p[0], start[name][0]), name  # candidate 0 decays
        torch.testing.assert_close(p[1], start[name][1])  # candidate 1 has wd = 0


def test_optimizer_compaction_matches() -> None:
    arch = ArchSpec.parse("mlp:6")
    x = torch.randn(8, 4)

    def run(compact: bool) -> dict[str, torch.Tensor]:
        net = build_network(arch, "prelu", [{}] * 3, 4, 2, seeds=[1, 2, 3])
        opt = BatchedOptimizer(net, [1e-2, 2e-2, 3e-2], [0.0, 0.1, 0.2], "adamw")
        for step in range(4):
            if compact and step == 2:
                net.keep([0, 2])
                opt.keep([0, 2])
            opt.zero_grad()
            _loss(net, x).backward()
            opt.step()
        return {n: t[-1] for n, t in net.state_dict().items()}

    a, b = run(False), run(True)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)


def test_schedules() -> None:
    kw = {"total_steps": 100, "epochs": 4}
    assert schedule_multiplier("constant", step=50, epoch=2, **kw) == 1.0
    assert schedule_multiplier("cosine", step=0, epoch=0, **kw) == 1.0
    assert schedule_multiplier("cosine", step=50, epoch=2, **kw) == pytest.approx(0.5)
    assert [schedule_multiplier("step", step=0, epoch=e, **kw) for e in range(4)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01]
    )
    with pytest.raises(InvalidInput):
        schedule_multiplier("linear", step=0, epoch=0, **kw)
    assert math.isclose(schedule_multiplier("cosine", step=100, epoch=3, **kw), 0.0, abs_tol=1e-12)


def test_state_dict_is_numpy_with_leading_one() -> None:
    net = build_network(ArchSpec.parse("mlp:3"), "leaky_relu", [{"slope": 0.1}, {"slope": 0.2}], 2, 2)
    state = net.candidate_state(1)
    assert all(isinstance(v, np.ndarray) and v.shape[0] == 1 for v in state.values())
    assert state["acts.0.slope"].ravel().tolist() == pytest.approx([0.2])
    with pytest.raises(InvalidInput, match="does not match"):
        build_network(ArchSpec.parse("mlp:3,3"), "relu", [{}], 2, 2).load_candidate_state(state)
