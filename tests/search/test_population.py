"""Asking a population from Optuna: one family, shared structure, per-candidate pruning."""

from __future__ import annotations

import optuna
import pytest

from core.errors import InvalidInput, UnknownActivation
from models.activations import get_activation
from models.engine import EpochReport
from search.coordinator.population import PruningReporter, ask_population
from search.factories import make_pruner, make_sampler
from search.spec import SearchSpec, parse_spec


def _study(spec: SearchSpec) -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0, False),
                               pruner=make_pruner("median", spec.epochs))


@pytest.mark.parametrize("family", ["rational", "vaf", "prelu", "leaky_relu"])
def test_population_shares_family_and_structure(family: str) -> None:
    spec = SearchSpec(dataset="digits", families=[family], trials=8)
    study = _study(spec)
    asked = ask_population(study, study.sampler, family, 4, spec)
    assert len(asked) == 4
    assert {a.trial.params["family"] for a in asked} == {family}
    from models.activations import get_activation

    structural = [p.name for p in get_activation(family).space() if p.structural]
    for name in structural:
        assert len({repr(a.act_params[name]) for a in asked}) == 1
    assert len({a.seed for a in asked}) == 4
    assert all(spec.lr[0] <= a.hparams["lr"] <= spec.lr[1] for a in asked)


def test_pruning_reporter_prunes_a_laggard_within_its_family() -> None:
    spec = SearchSpec(dataset="digits", families=["relu"], trials=8, epochs=8)
    study = _study(spec)
    # two completed relu trials with good curves
    for _ in range(2):
        t = study.ask({"family": optuna.distributions.CategoricalDistribution(["relu"])})
        for epoch in range(1, 9):
            t.report(0.9, epoch)
        study.tell(t, 0.9)
    asked = ask_population(study, study.sampler, "relu", 2, spec)
    reporter = PruningReporter(asked)
    stops = []
    for epoch in range(1, 5):
        stops = reporter(EpochReport(epoch=epoch, candidates=[0, 1], train_loss=[1.0, 1.0],
                                     val_loss=[1.0, 1.0], val_metric=[0.95, 0.1], elapsed_s=0.1))
        if stops:
            break
    assert stops == [1]


def test_spec_errors_are_readable() -> None:
    with pytest.raises(UnknownActivation, match="unknown activation 'nope'"):
        SearchSpec(dataset="digits", families=["nope"])
    with pytest.raises(InvalidInput, match="trials"):
        parse_spec({"dataset": "digits", "trials": 0})
    with pytest.raises(InvalidInput, match="sampler"):
        parse_spec({"dataset": "digits", "sampler": "grid-of-doom"})
    spec = parse_spec({"dataset": "digits", "families": ["gelu"]})
    assert spec.families == ["relu", "gelu"]  # the baseline is always tuned alongside


def test_multi_objective_reports_nothing_and_prunes_nothing() -> None:
    spec = SearchSpec(dataset="digits", families=["relu"], trials=2, objective="metric+params")
    study = optuna.create_study(directions=["maximize", "minimize"])
    asked = ask_population(study, study.sampler, "relu", 2, spec)
    reporter = PruningReporter(asked, multi_objective=True)
    report = EpochReport(epoch=1, candidates=[0, 1], train_loss=[1.0, 1.0], val_loss=[1.0, 1.0],
                         val_metric=[0.9, 0.1], elapsed_s=0.1)
    assert reporter(report) == []
    assert all(not study.trials[i].intermediate_values for i in range(2))


@pytest.mark.parametrize("pruner", ["median", "percentile", "successive_halving", "hyperband", "none"])
def test_every_pruner_runs_per_candidate_through_the_family_view(pruner: str) -> None:
    spec = SearchSpec(dataset="digits", families=["relu", "gelu"], trials=8, epochs=8, pruner=pruner)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0, False),
                                pruner=make_pruner(pruner, spec.epochs))
    for _ in range(3):
        t = study.ask({"family": optuna.distributions.CategoricalDistribution(["relu", "gelu"])})
        assert t.params["family"] in ("relu", "gelu")
        study.tell(t, state=optuna.trial.TrialState.FAIL)  # keep the sampler's view simple
    asked = ask_population(study, study.sampler, "relu", 3, spec)
    reporter = PruningReporter(asked)
    active = [0, 1, 2]
    for epoch in range(1, 9):
        stopped = reporter(EpochReport(epoch=epoch, candidates=active, train_loss=[1.0] * len(active),
                                       val_loss=[1.0] * len(active),
                                       val_metric=[0.1 * (i + 1) * epoch / 8 for i in active],
                                       elapsed_s=0.1))
        assert set(stopped) <= set(active)
        active = [i for i in active if i not in stopped]
    assert active  # the best candidate always survives
    for a in asked:
        assert len(study.trials[a.number].intermediate_values) >= 1


def test_groupsort_is_offered_only_group_sizes_that_divide_every_width() -> None:
    spec = SearchSpec(dataset="iris", architecture="mlp:100,50", families=["groupsort"], trials=8)
    study = _study(spec)
    asked = ask_population(study, study.sampler, "groupsort", 4, spec)
    assert {a.act_params["group"] for a in asked} == {2}  # 4 and 8 do not divide 50
    dist = study.trials[0].distributions["groupsort.group"]
    assert list(dist.choices) == [2]
    wide = SearchSpec(dataset="iris", architecture="mlp:64,32", families=["groupsort"])
    assert get_activation("groupsort").space()[0].choices_for(wide.activation_widths()) == (2, 4, 8)


def test_groupsort_with_no_dividing_group_is_refused_at_submission() -> None:
    with pytest.raises(InvalidInput, match=r"none of 2, 4, 8 divides all of 15.*drop groupsort"):
        SearchSpec(dataset="iris", architecture="mlp:15", families=["groupsort"])
    with pytest.raises(InvalidInput, match=r"divides all of 8, 7, 16"):  # conv channels count too
        SearchSpec(dataset="digits", families=["groupsort", "relu"],
                   architecture={"kind": "cnn", "conv_channels": [8, 7], "hidden": [16],
                                 "input_shape": [1, 8, 8]})
