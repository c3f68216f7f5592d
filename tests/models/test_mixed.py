"""Mixed-family populations: each candidate trains exactly as it would alone.

Every registered family (fixed and trainable, per-layer and per-unit) is put in a
population with partners of other families that have the same widths
(:func:`models.populations.population_key`), trained together, pruned mid-training,
and compared with each candidate trained on its own (K=1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from core.errors import InvalidInput
from models.activations import REGISTRY, get_activation
from models.activations.mixed import MixedActivation
from models.engine import EpochReport, PopulationResult, TensorData, train_population
from models.network import PopulationNet
from models.populations import population_key
from models.spec import ArchSpec, Candidate, TrainConfig

ARCH = ArchSpec.parse("mlp:12,12", dropout=0.1)  # dropout: SELU's AlphaDropout beside others
CNN = ArchSpec.parse("cnn:4,4/6", input_shape=(2, 6, 6), norm="batch")
# partners with their own init / regularisation / random init: the mixed parts that matter
PARTNERS: list[tuple[str, dict[str, Any]]] = [
    ("relu", {}), ("selu", {}), ("snake", {"freq": 2.0}),
    ("vaf", {"width": 3, "depth": 2, "residual": True}), ("prelu", {"sharing": "unit"}),
]


def make_data(n: int = 128, d: int = 8, seed: int = 0) -> TensorData:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + 48, d)).astype(np.float32)
    y = (x @ rng.standard_normal((d, 3))).argmax(1)
    return TensorData(x[:n], y[:n], x[n:], y[n:], "classification", 3)


DATA = make_data()
CONFIG = TrainConfig(epochs=3, batch_size=32, record_epochs=2, curve_points=21, optimizer="adamw")


def variants(family: str) -> list[dict[str, Any]]:
    """A family's test candidates: per layer and per unit where it has sharing, and
    non-default values of its sampled parameters (each candidate has its own)."""
    cls = get_activation(family)
    space = {s.name: s for s in cls.space()}
    base: dict[str, Any] = {}
    tweak: dict[str, Any] = {}
    for s in space.values():
        if s.structural or s.kind == "categorical":
            continue
        assert s.low is not None and s.high is not None
        value = (s.low * s.high) ** 0.5 if s.log else (s.low + s.high) / 2
        tweak[s.name] = int(round(value)) if s.kind == "int" else value
    out = [base, tweak]
    if "sharing" in space:
        out.append({**tweak, "sharing": "unit"})
    return out


def mixed_candidates(family: str) -> list[Candidate]:
    mine = [(family, p) for p in variants(family)]
    key = population_key(ARCH, family, mine[0][1])
    partners = [(f, p) for f, p in PARTNERS if f != family and population_key(ARCH, f, p) == key]
    pairs = [mine[0], *partners[:2], *mine[1:], *partners[2:]]  # interleaved: ordering is the engine's
    lrs = [3e-3, 1e-2, 5e-3, 2e-2, 7e-3]
    return [Candidate(seed=10 + i, lr=lrs[i % 5], weight_decay=1e-3 * (i % 3), act_params=p, family=f)
            for i, (f, p) in enumerate(pairs)]


def assert_same(pop: Any, one: Any, epochs: int | None = None, rel: float = 1e-4) -> None:
    """Same per-epoch losses and metrics (the first ``epochs`` of ``one`` if given)."""
    hist_one = one.history if epochs is None else one.history[:epochs]
    assert len(pop.history) == len(hist_one)
    for ha, hb in zip(pop.history, hist_one, strict=True):
        for key in ("train_loss", "val_loss", "val_metric"):
            assert ha[key] == pytest.approx(hb[key], rel=rel, abs=1e-6), key


def solo(arch: ArchSpec, c: Candidate, cfg: TrainConfig) -> PopulationResult:
    return train_population(arch, c.family, [Candidate(c.seed, c.lr, c.weight_decay, c.act_params)],
                            DATA if arch.kind == "mlp" else CNN_DATA, cfg)


CNN_DATA = make_data(d=72)


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_mixed_population_equals_solo_runs(family: str) -> None:
    cands = mixed_candidates(family)
    pop = train_population(ARCH, None, cands, DATA, CONFIG)
    for i, c in enumerate(cands):
        one = solo(ARCH, c, CONFIG)
        res = pop.candidates[i]
        assert res.family == c.family and res.index == i
        assert_same(res, one.candidates[0])
        assert res.n_params == one.n_params and res.flops == one.flops
        assert res.state_dict is not None and one.candidates[0].state_dict is not None
        assert res.state_dict.keys() == one.candidates[0].state_dict.keys()
        for name, value in res.state_dict.items():
            np.testing.assert_allclose(value, one.candidates[0].state_dict[name], rtol=1e-4,
                                       atol=1e-5, err_msg=name)
        assert [(r["layer"], r["epoch"]) for r in res.curves] == \
               [(r["layer"], r["epoch"]) for r in one.candidates[0].curves]


@pytest.mark.parametrize("family", sorted(REGISTRY))
def test_mixed_population_after_compaction(family: str) -> None:
    """Prune a candidate of the family and a partner after epoch 1 (and one more after 2):
    the survivors still equal their solo runs, the pruned their first epochs."""
    cands = mixed_candidates(family)
    first = [0, len(cands) - 1] if len(cands) > 2 else [0]
    second = [1] if len(cands) > 3 else []
    reports: list[EpochReport] = []

    def on_epoch(report: EpochReport) -> list[int]:
        reports.append(report)
        return {1: first, 2: second}.get(report.epoch, [])

    pop = train_population(ARCH, None, cands, DATA, CONFIG, on_epoch=on_epoch)
    assert sorted(reports[1].candidates) == [i for i in range(len(cands)) if i not in first]
    for i, c in enumerate(cands):
        one = solo(ARCH, c, CONFIG)
        stopped = 1 if i in first else 2 if i in second else None
        assert pop.candidates[i].status == ("pruned" if stopped else "complete")
        assert_same(pop.candidates[i], one.candidates[0], epochs=stopped)


def test_cnn_mixed_population_equals_solo_runs() -> None:
    """The conv layout (candidate axis 1) with batch norm, including compaction.

    Tolerance 3e-3: grouped convolutions (groups=K) already round differently from K=1
    ones in a single-family population (relu K=6 vs solo on this data: up to 9e-4
    relative in validation loss after two epochs), mixing or not.
    """
    pairs = [("relu", {}), ("prelu", {"sharing": "unit"}), ("vaf", {"width": 2}),
             ("selu", {}), ("rational", {"m": 3}), ("relu", {})]
    cands = [Candidate(seed=i, lr=5e-3, act_params=p, family=f) for i, (f, p) in enumerate(pairs)]
    cfg = TrainConfig(epochs=2, batch_size=32, record_epochs=0)
    pop = train_population(CNN, None, cands, CNN_DATA, cfg,
                           on_epoch=lambda r: [1, 5] if r.epoch == 1 else [])
    for i, c in enumerate(cands):
        assert_same(pop.candidates[i], solo(CNN, c, cfg).candidates[0],
                    epochs=1 if i in (1, 5) else None, rel=3e-3)


def test_layer_scope_mixes_per_layer_families_out_of_order() -> None:
    """Per-layer families that differ by candidate: slices are not contiguous runs of K
    at every layer (the gather/scatter path), and still each candidate trains alone."""
    arch = ArchSpec.parse("mlp:12,12", activation_scope="layer")
    fams = [["relu", "prelu"], ["prelu", "relu"], ["relu", "relu"], ["vaf", "prelu"]]
    cands = [Candidate(seed=i, lr=5e-3, act_params=[{}, {}], family=f) for i, f in enumerate(fams)]
    cfg = TrainConfig(epochs=3, batch_size=32, record_epochs=0, optimizer="sgd")
    net = PopulationNet(arch, None, [c.act_params for c in cands], 8, 3,
                        families=[c.family for c in cands])
    assert isinstance(net.acts[0], MixedActivation) and not net.acts[0].contiguous
    pop = train_population(arch, None, cands, DATA, cfg,
                           on_epoch=lambda r: [2] if r.epoch == 1 else [])
    for i, c in enumerate(cands):
        one = train_population(arch, c.family, [Candidate(c.seed, c.lr, 0.0, c.act_params)], DATA, cfg)
        assert_same(pop.candidates[i], one.candidates[0], epochs=1 if i == 2 else None)
        assert pop.candidates[i].family == (c.family if len(set(c.family)) > 1 else c.family[0])


def test_structural_params_become_separate_slices() -> None:
    """Candidates of one family with different structure share a population (no need to
    fix structural parameters across it), each structure its own slice."""
    params = [{"width": 2, "depth": 1}, {"width": 4, "depth": 3, "residual": False},
              {"width": 2, "depth": 1, "sharing": "unit"}, {"width": 2, "depth": 1}]
    net = PopulationNet(ARCH, "vaf", params, 8, 3)
    act = net.acts[0]
    assert isinstance(act, MixedActivation)
    assert sorted(len(p) for p in act.positions.values()) == [1, 1, 2]
    net.keep(torch.tensor([1, 2]))  # the two-candidate slice disappears
    assert isinstance(net.acts[0], MixedActivation) and len(net.acts[0].slices) == 2
    assert net.k == 2 and net(torch.zeros(5, 8)).shape == (2, 5, 3)


def test_widths_must_match() -> None:
    with pytest.raises(InvalidInput, match="population_key"):
        PopulationNet(ARCH, None, [{}, {}], 8, 3, families=["relu", "maxout"])
    assert population_key(ARCH, "relu", {}) == population_key(ARCH, "vaf", {"depth": 3})
    assert population_key(ARCH, "relu", {}) != population_key(ARCH, "maxout", {"k": 2})
    assert population_key(ARCH, "maxout", {"k": 2}) != population_key(ARCH, "maxout", {"k": 3})


def test_single_family_call_is_unchanged() -> None:
    """The old call (one family for the population) builds no mixed layer."""
    cands = [Candidate(seed=i, lr=1e-2) for i in range(3)]
    res = train_population(ARCH, "prelu", cands, DATA, CONFIG)
    assert [c.family for c in res.candidates] == ["prelu"] * 3
    net = PopulationNet(ARCH, "prelu", [{}] * 3, 8, 3)
    assert not any(isinstance(a, MixedActivation) for a in net.acts)


def test_compiled_mixed_population_equals_solo_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the fused kernels compiled, each family's slice runs its compiled kernel."""
    monkeypatch.setenv("ACTSEARCH_COMPILE", "on")
    pairs = [("rational", {}), ("relu", {}), ("vaf", {"width": 3, "depth": 2}),
             ("spline", {"sharing": "unit"}), ("vaf", {})]
    cands = [Candidate(seed=i, lr=5e-3, act_params=p, family=f) for i, (f, p) in enumerate(pairs)]
    cfg = TrainConfig(epochs=2, batch_size=32, record_epochs=0)
    pop = train_population(ARCH, None, cands, DATA, cfg, on_epoch=lambda r: [0] if r.epoch == 1 else [])
    for i, c in enumerate(cands):
        assert_same(pop.candidates[i], solo(ARCH, c, cfg).candidates[0], epochs=1 if i == 0 else None)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_vaf_eager_forms_agree(depth: int, residual: bool) -> None:
    """The per-layer GEMM form, the fusion form and the per-unit matmul form are one function."""
    from models.activations import vaf

    act = get_activation("vaf")([{"width": 5, "depth": depth, "residual": residual, "init_std": 0.3}] * 3,
                                units=7, init_seeds=[1, 2, 3])
    x = torch.randn(3, 11, 7)
    args = (act.w_in, act.b_in, act.w_hidden, act.b_hidden, act.w_out, act.b_out, act.inner, act.residual)
    gemm = vaf._vaf_shared_gemm(x, *args)
    fusion = vaf._vaf_mlp(x, *args)
    act.layout = "conv"  # forces the (K, U, N, W) matmul form
    reference = act(x.unsqueeze(-1).transpose(0, 1)).transpose(0, 1)[..., 0]
    torch.testing.assert_close(gemm, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fusion, reference, rtol=1e-5, atol=1e-5)


def test_plan_populations_groups_by_shape() -> None:
    from models.populations import plan_populations

    entries = [("relu", {}), ("maxout", {"k": 2}), ("vaf", {"depth": 3}), ("gelu", {}),
               ("maxout", {"k": 2}), ("maxout", {"k": 3}), ("selu", {})]
    plan = plan_populations(ARCH, entries, k=2)
    assert plan == [[0, 2], [3, 6], [1, 4], [5]]


def test_apl_unrolled_equals_the_hinge_tensor_form() -> None:
    act = get_activation("apl")([{"hinges": 4, "a_init": 0.3, "sharing": "unit"}] * 2, units=5)
    x = torch.randn(2, 7, 5)
    hinges = torch.relu(act.view(act.b) - x.unsqueeze(-1))  # (K, B, U, S)
    expected = torch.relu(x) + (act.view(act.a) * hinges).sum(-1)
    torch.testing.assert_close(act(x), expected)


def test_candidate_cost_is_measured_once_per_structure() -> None:
    from models.cost import candidate_cost

    first = candidate_cost("prelu", {"a_init": 0.1}, k=2, rows=16, repeats=1, compiled=False)
    assert first > 0
    # only structural parameters change the cost: a new a_init is the cached figure
    assert candidate_cost("prelu", {"a_init": 0.3}, k=2, rows=16, repeats=1, compiled=False) == first


def test_population_size_for_a_mix() -> None:
    from models.sizing import auto_population_size, population_size

    arch = ArchSpec.parse("mlp:64,64")
    relu = auto_population_size(arch, "relu", {}, 64, 10, 128, threads=2)
    assert population_size(arch, 64, 10, 128, "cpu", ["relu"], threads=2) == relu
    heavy = population_size(arch, 64, 10, 128, "cpu", [("vaf", {"width": 16, "depth": 3})],
                            threads=2, memory_bytes=1 << 40)
    assert 1 <= heavy <= relu  # more work per candidate: no more candidates to saturate
