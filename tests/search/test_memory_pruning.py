"""Pruning on the in-memory view decides exactly as Optuna's pruner on the storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.samplers import PartialFixedSampler
from optuna.trial import TrialState, create_trial

from search.coordinator.pruning import FamilyMemoryView, decide, memory_safe
from search.factories import make_pruner
from search.space import FAMILY_KEY

FAMILIES = ["relu", "tanh"]
EPOCHS = 10


def _study(tmp_path: Path, pruner: str) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize",
                                pruner=make_pruner(pruner, EPOCHS))
    rng = np.random.default_rng(0)
    dist = {FAMILY_KEY: CategoricalDistribution(FAMILIES), "lr": FloatDistribution(1e-4, 1.0, log=True)}
    for i in range(24):  # finished trials of both families, some pruned early
        family = FAMILIES[i % 2]
        steps = EPOCHS if i % 3 else 4
        curve = np.cumsum(rng.uniform(0, 0.1, steps)) + (0.2 if family == "tanh" else 0.0)
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if steps == EPOCHS else TrialState.PRUNED,
            value=float(curve[-1]) if steps == EPOCHS else None,
            params={FAMILY_KEY: family, "lr": 0.01}, distributions=dist,
            intermediate_values={s + 1: float(v) for s, v in enumerate(curve)}))
    return study


@pytest.mark.parametrize("pruner", ["median", "percentile", "none"])
def test_memory_view_decisions_equal_should_prune(tmp_path: Path, pruner: str) -> None:
    study = _study(tmp_path, pruner)
    assert memory_safe(study.pruner)
    base = study.sampler
    asked = []
    for _ in range(4):
        study.sampler = PartialFixedSampler({FAMILY_KEY: "relu"}, base)
        trial = study.ask()
        trial.suggest_categorical(FAMILY_KEY, FAMILIES)
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
        asked.append(trial)
    study.sampler = base
    view = FamilyMemoryView(study, "relu", refresh_s=0.0)
    view.track(asked)
    rng = np.random.default_rng(1)
    compared = pruned = 0
    for epoch in range(1, EPOCHS + 1):
        for i, trial in enumerate(asked):
            value = float(rng.uniform(0, 0.05 if i < 2 else 1.2))  # two poor candidates
            trial.report(value, epoch)
            mine = decide(view, study.pruner, view.report(trial.number, epoch, value))
            assert mine == trial.should_prune(), (pruner, epoch, trial.number)
            compared += 1
            pruned += mine
    assert compared == 4 * EPOCHS
    if pruner != "none":
        assert pruned > 0  # the comparison covered decisions of both kinds


def test_storage_keeping_pruners_use_optunas_own_path() -> None:
    assert not memory_safe(make_pruner("successive_halving", EPOCHS))
    assert not memory_safe(make_pruner("hyperband", EPOCHS))
