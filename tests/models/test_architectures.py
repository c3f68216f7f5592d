"""Transformer and resnet populations: spec parsing, fused == one by one, sizes, state, export."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import InvalidInput
from models.blocks import hidden_width
from models.engine import TensorData, train_population
from models.export import SingleCandidate, export_program, load_program
from models.network import PopulationNet
from models.resnet import ResNetNet
from models.spec import ArchSpec, Candidate, TrainConfig
from models.transformer import TransformerNet

VOCAB, T = 7, 5


def transformer(**kw: Any) -> ArchSpec:
    return ArchSpec.parse("transformer:d=16,layers=2,heads=2", vocab_size=VOCAB, **kw)


def resnet(**kw: Any) -> ArchSpec:
    return ArchSpec.parse("resnet:4,8", input_shape=(1, 6, 6), **kw)


def token_data(n: int = 96, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, T), generator=g)
    y = (x[:, 0] > x[:, -1]).long()  # order matters
    cut = 3 * n // 4
    return TensorData(x[:cut].float(), y[:cut], x[cut:].float(), y[cut:], "classification", 2)


def image_data(n: int = 64, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 36, generator=g)
    y = (x[:, :18].sum(1) > x[:, 18:].sum(1)).long()
    cut = 3 * n // 4
    return TensorData(x[:cut], y[:cut], x[cut:], y[cut:], "classification", 2)


# ----- spec ---------------------------------------------------------------------------------
def test_short_forms_and_round_trip() -> None:
    a = ArchSpec.parse("transformer:d=64,layers=2,heads=4,ratio=2,dropout=0.1,param_match=false")
    assert (a.kind, a.d_model, a.n_layers, a.heads, a.mlp_ratio, a.dropout, a.param_match) == (
        "transformer", 64, 2, 4, 2.0, 0.1, False)
    assert a.hidden == [] and a.n_hidden_layers() == 2 and a.activation_widths() == [128]
    r = ArchSpec.parse("resnet:16,32,64")
    assert r.conv_channels == [16, 32, 64] and r.hidden == [] and r.n_hidden_layers() == 7
    assert ArchSpec.parse("resnet:8/32").hidden == [32]
    for spec in (a, r):
        assert ArchSpec.from_dict(spec.to_dict()) == spec
    assert ArchSpec.from_dict({"kind": "transformer"}).hidden == []
    assert a.short() == "transformer:d=64,layers=2,heads=4" and r.short() == "resnet:16,32,64"


@pytest.mark.parametrize(("text", "kw", "match"), [
    ("transformer:d=64,heads=5", {"vocab_size": 9}, "heads=5 must divide d=64"),
    ("transformer:d=64,width=3", {}, "cannot read 'width=3'"),
    ("transformer:d=x", {}, "d='x' is not a valid value"),
    ("transformer:d=64", {}, "needs vocab_size"),
    ("resnet:8", {}, "needs input_shape"),
    ("resnet:", {"input_shape": (1, 4, 4)}, "at least one stage"),
    ("transformer:d=8,heads=2", {"vocab_size": 9, "hidden": [4]}, "no hidden head layers"),
])
def test_bad_specs_say_what_to_change(text: str, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        ArchSpec.parse(text, **kw).validate()


def test_data_fields_may_wait_for_the_dataset() -> None:
    ArchSpec.parse("transformer:d=64").validate(require_data=False)
    ArchSpec.parse("resnet:8,16").validate(require_data=False)


def test_activation_scope_layer_gives_each_block_its_family() -> None:
    arch = transformer(activation_scope="layer")
    net = PopulationNet(arch, ["relu", "swiglu"], [[{}, {}]] * 2, T, 2)
    assert net.families == ["relu", "swiglu"]
    assert (net.layers[0].pre, net.layers[1].pre, net.layers[1].post) == (64, 86, 43)
    res = PopulationNet(resnet(activation_scope="layer"), ["relu", "gelu", "sine", "relu", "elu"],
                        [[{}] * 5], 36, 2)
    assert res.families == ["relu", "gelu", "sine", "relu", "elu"]
    with pytest.raises(InvalidInput, match="5 hidden layers"):
        PopulationNet(resnet(activation_scope="layer"), ["relu", "gelu"], [[{}, {}]], 36, 2)


def test_regression_head() -> None:
    net = PopulationNet(transformer(), "gelu", [{}] * 2, T, 1)
    assert net(torch.randint(0, VOCAB, (4, T)).float()).shape == (2, 4, 1)


def test_dispatch_builds_the_registered_class() -> None:
    assert type(PopulationNet(transformer(), "relu", [{}], T, 2)) is TransformerNet
    assert type(PopulationNet(resnet(), "relu", [{}], 36, 2)) is ResNetNet
    assert type(PopulationNet(ArchSpec.parse("mlp:4"), "relu", [{}], 3, 2)) is PopulationNet


# ----- fused population == candidates one by one ----------------------------------------------
CASES = [
    pytest.param(transformer, token_data, "relu", id="transformer-relu"),
    pytest.param(transformer, token_data, "swiglu", id="transformer-swiglu"),
    pytest.param(transformer, token_data, "star_relu", id="transformer-star_relu"),
    pytest.param(lambda: transformer(dropout=0.2), token_data, "gelu", id="transformer-dropout"),
    pytest.param(resnet, image_data, "relu", id="resnet-relu"),
    pytest.param(resnet, image_data, "geglu", id="resnet-geglu"),
    pytest.param(resnet, image_data, "group_rational", id="resnet-group_rational"),
]


@pytest.mark.parametrize(("make_arch", "make_data", "family"), CASES)
def test_fused_population_equals_candidates_trained_one_by_one(make_arch: Any, make_data: Any,
                                                               family: str) -> None:
    arch, data = make_arch(), make_data()
    cands = [Candidate(seed=s, lr=lr, weight_decay=1e-4)
             for s, lr in ((0, 3e-3), (1, 1e-3), (2, 1e-2))]
    config = TrainConfig(epochs=2, batch_size=16, record_epochs=2, curve_points=11)
    fused = train_population(arch, family, cands, data, config)
    for c, res in zip(cands, fused.candidates, strict=True):
        alone = train_population(arch, family, [c], data, config).candidates[0]
        assert res.status == alone.status == "complete"
        for a, b in zip(res.history, alone.history, strict=True):
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-5)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-5)
        assert res.state_dict is not None and alone.state_dict is not None
        for key, value in res.state_dict.items():
            np.testing.assert_allclose(value, alone.state_dict[key], rtol=1e-3, atol=1e-4)
    # every activation layer recorded statistics and (all these families have one) a curve
    n_layers = arch.n_hidden_layers()
    assert {s["layer"] for s in fused.candidates[0].preact_stats} == set(range(n_layers))
    assert {c["layer"] for c in fused.candidates[0].curves} == set(range(n_layers))


@pytest.mark.parametrize(("make_arch", "make_data", "family"), CASES)
def test_candidate_state_reloads_into_a_single_net(make_arch: Any, make_data: Any,
                                                   family: str) -> None:
    arch, data = make_arch(), make_data()
    n_in = data.X_train.shape[1]
    big = PopulationNet(arch, family, [{}] * 3, n_in, 2, seeds=[4, 5, 6])
    with torch.no_grad():
        for p in big.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    big.eval()
    single = PopulationNet(arch, family, [{}], n_in, 2, seeds=[0]).eval()
    single.load_candidate_state(big.candidate_state(1))
    x = data.X_val[:5]
    with torch.no_grad():
        torch.testing.assert_close(single(x)[0], big(x)[1], rtol=1e-4, atol=1e-5)
    with pytest.raises(InvalidInput, match="state does not match"):
        PopulationNet(ArchSpec.parse("mlp:4"), "relu", [{}], n_in, 2).load_candidate_state(
            big.candidate_state(0))


@pytest.mark.parametrize("t", [2, 4, 5, 9])
def test_attention_paths_match_torch_multihead_attention(t: int) -> None:
    from models.attention import BatchedSelfAttention

    torch.manual_seed(t)
    attn = BatchedSelfAttention(2, 16, 4)
    for p in attn.parameters():  # every tensor set: torch.empty leaves memory garbage (NaN)
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, 3, t, 16)
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    for c in range(2):  # candidate c's weights in torch's own module
        with torch.no_grad():
            ref.in_proj_weight.copy_(attn.qkv.weight[c].T)
            ref.in_proj_bias.copy_(attn.qkv.bias[c, 0])
            ref.out_proj.weight.copy_(attn.proj.weight[c].T)
            ref.out_proj.bias.copy_(attn.proj.bias[c, 0])
            expected, _ = ref(x[c], x[c], x[c], need_weights=False)
            torch.testing.assert_close(attn(x)[c], expected, rtol=1e-4, atol=1e-5)


# ----- sizes ---------------------------------------------------------------------------------
def test_transformer_parameter_count_by_hand() -> None:
    d, v, ratio, layers, c = 16, VOCAB, 4, 2, 3
    net = PopulationNet(transformer(), "relu", [{}], T, c)
    h = ratio * d
    block = (2 * 2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)
    expected = v * d + T * d + layers * block + 2 * d + (d * c + c)
    assert net.count_params() == expected
    assert net.count_flops() > 2 * T * layers * (4 * d * d + 2 * d * h)


@pytest.mark.parametrize("gated", ["glu", "reglu", "geglu", "swiglu", "bilinear"])
def test_gated_families_match_parameters_unless_told_not_to(gated: str) -> None:
    base = PopulationNet(transformer(), "gelu", [{}], T, 2).count_params()
    matched = PopulationNet(transformer(), gated, [{}], T, 2)
    assert matched.layers[0].pre == 2 * round(64 * 2 / 3) and matched.layers[0].post == 43
    assert abs(matched.count_params() - base) / base < 0.02  # biases: 1.1% at d=16
    wide = PopulationNet(transformer(param_match=False), gated, [{}], T, 2)
    assert wide.layers[0].post == 64 and wide.count_params() > 1.2 * base
    # the same convention in a resnet, an mlp and a cnn
    assert PopulationNet(resnet(), gated, [{}], 36, 2).layers[1].pre == 2 * hidden_width(
        type(matched.acts[0]), 4, True)
    mlp = PopulationNet(ArchSpec.parse("mlp:30"), gated, [{}], 5, 2)
    assert (mlp.layers[0].pre, mlp.layers[0].post) == (40, 20)


def test_resnet_shapes_projections_and_flops() -> None:
    net = PopulationNet(ArchSpec.parse("resnet:4,8/6", input_shape=(2, 8, 8)), "relu", [{}] * 2,
                        128, 3)
    spatial = [info.spatial for info in net.layers if info.kind == "conv"]
    assert spatial == [(8, 8), (8, 8), (8, 8), (4, 4), (4, 4)]
    assert list(net.shortcuts) == ["4"]  # the width and resolution change at stage 2
    assert [info.residual for info in net.layers] == [False, False, True, False, True, False]
    assert net(torch.randn(3, 128)).shape == (2, 3, 3)
    convs = 8 * 8 * 4 * 2 * 2 * 9 + 2 * (8 * 8 * 4 * 2 * 4 * 9) + 4 * 4 * 8 * 2 * 4 * 9 \
        + 4 * 4 * 8 * 2 * 8 * 9
    assert net.count_flops() > convs


def test_sine_layers_get_the_siren_init() -> None:
    net = PopulationNet(ArchSpec.parse("mlp:256,256"), "sine", [{"omega_0": 30.0}, {"omega_0": 5.0}],
                        100, 2)
    first, second = net.dense[0].weight, net.dense[1].weight  # (K, in, out)
    assert first.abs().max() <= 1 / 100 and first.abs().max() > 0.9 / 100
    for i, omega in enumerate((30.0, 5.0)):
        bound = math.sqrt(6 / 256) / omega
        assert second[i].abs().max() <= bound and second[i].abs().max() > 0.95 * bound


# ----- export ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("make_arch", "n_inputs", "family"), [
    (transformer, T, "swiglu"), (transformer, T, "group_rational"), (resnet, 36, "star_relu"),
    (resnet, 36, "reglu"),
])
def test_export_round_trip(make_arch: Any, n_inputs: int, family: str) -> None:
    net = PopulationNet(make_arch(), family, [{}], n_inputs, 3).eval()
    module = SingleCandidate(net, "classification").eval()
    program = load_program(export_program(module, n_inputs))
    if isinstance(net, TransformerNet):
        x = torch.randint(0, VOCAB, (9, T))
    else:
        x = torch.randn(9, n_inputs)
    with torch.no_grad():
        torch.testing.assert_close(program(x), module(x), rtol=1e-4, atol=1e-5)
        assert program(x[:2]).shape == (2, 3)  # dynamic batch
