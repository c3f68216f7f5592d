"""Samplers and pruners by name: a dict from name to factory (no if/elif chains)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from core.errors import InvalidInput

from .space import FAMILY_KEY, FIDELITY_ATTR

SAMPLER_FACTORIES: dict[str, Callable[[int, bool], BaseSampler]] = {
    # constant_liar: a population asks K trials before any is told; the liar keeps
    # TPE from proposing K near-identical points.
    "tpe": lambda seed, multi: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, n_startup_trials=8
    ),
    "random": lambda seed, multi: optuna.samplers.RandomSampler(seed=seed),
    "qmc": lambda seed, multi: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    "cmaes": lambda seed, multi: optuna.samplers.CmaEsSampler(
        seed=seed, warn_independent_sampling=False
    ),
    "gp": lambda seed, multi: optuna.samplers.GPSampler(seed=seed),
    "nsga2": lambda seed, multi: optuna.samplers.NSGAIISampler(seed=seed),
}

PRUNER_FACTORIES: dict[str, Callable[[int], BasePruner]] = {
    "median": lambda epochs: optuna.pruners.MedianPruner(
        n_startup_trials=2, n_warmup_steps=max(1, epochs // 4)
    ),
    "percentile": lambda epochs: optuna.pruners.PercentilePruner(
        33.0, n_startup_trials=2, n_warmup_steps=max(1, epochs // 4)
    ),
    "successive_halving": lambda epochs: optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(1, epochs // 8)
    ),
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(
        min_resource=max(1, epochs // 8), max_resource=epochs
    ),
    "none": lambda epochs: optuna.pruners.NopPruner(),
}


def make_sampler(name: str, seed: int, multi_objective: bool) -> BaseSampler:
    """The named sampler, seeded."""
    try:
        return SAMPLER_FACTORIES[name](seed, multi_objective)
    except KeyError:
        raise InvalidInput(f"unknown sampler {name!r}; choose from {sorted(SAMPLER_FACTORIES)}") from None


class _FamilyStudy(Study):
    """A read view of a study restricted to the trials of one family.

    Pruners compare a trial against others at the same epoch; comparing across
    families would prune slow starters (rational, vaf) against ReLU's curve and
    bias the leaderboard. Median, percentile and successive-halving pruners read
    trials only through ``_get_trials``, so filtering there is enough.
    """

    def __init__(self, study: Study, family: str, fidelity: int | None = None) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage,
                         sampler=study.sampler, pruner=study.pruner)
        self._family = family
        self._fidelity = fidelity

    def _get_trials(self, deepcopy: bool = True, states: Any = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = super()._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if t.params.get(FAMILY_KEY) == self._family
                and t.user_attrs.get(FIDELITY_ATTR) == self._fidelity]


class FamilyPruner(BasePruner):
    """Wraps an Optuna pruner so each family is pruned against its own trials only.

    Hyperband's brackets re-open the study by name, so with ``hyperband`` the
    bracket bookkeeping stays study-wide; its rung comparisons are still made
    through this filtered view.
    """

    def __init__(self, base: BasePruner) -> None:
        self.base = base

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        family = trial.params.get(FAMILY_KEY)
        if family is None:
            return self.base.prune(study, trial)
        return self.base.prune(_FamilyStudy(study, family, trial.user_attrs.get(FIDELITY_ATTR)),
                               trial)


def make_pruner(name: str, epochs: int) -> BasePruner:
    """The named pruner, wrapped to compare within a family."""
    try:
        base = PRUNER_FACTORIES[name](epochs)
    except KeyError:
        raise InvalidInput(f"unknown pruner {name!r}; choose from {sorted(PRUNER_FACTORIES)}") from None
    return FamilyPruner(base)


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
