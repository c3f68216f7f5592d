"""Pruning decisions from an in-memory view of a family's trials, not a study read per epoch.

``trial.should_prune()`` reads the trial and then every trial of the study from the
storage, for every epoch of every candidate: quadratic in the budget, and on SQLite
it was the largest share of the coordinator's time. Here a population reads its
study once (refreshed every few seconds, for other populations' progress), keeps its
own candidates' intermediate values in memory, and asks the same Optuna pruner on
that view. Optuna's storage still receives every reported value (``trial.report``),
so optuna-dashboard shows them and the pruned trials as before.

Pruners that keep their own state in the storage (successive halving and hyperband
write rung values as system attributes) keep Optuna's own path: the view could not
see those writes.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.pruners import BasePruner, NopPruner, PercentilePruner, ThresholdPruner
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ..factories import FamilyPruner
from ..space import FAMILY_KEY, FIDELITY_ATTR

# Pruners that read only trials' states and intermediate values (MedianPruner is a
# PercentilePruner): their decisions on the view equal their decisions on the storage.
MEMORY_SAFE_PRUNERS: tuple[type[BasePruner], ...] = (PercentilePruner, ThresholdPruner, NopPruner)


def memory_safe(pruner: BasePruner) -> bool:
    """Whether ``pruner`` (unwrapped from :class:`FamilyPruner`) may decide on a memory view."""
    base = pruner.base if isinstance(pruner, FamilyPruner) else pruner
    return isinstance(base, MEMORY_SAFE_PRUNERS)


class StudyReader:
    """The study's trials, read at most every ``refresh_s``: one read shared by the views of
    every family of a (mixed) population, instead of one read per family."""

    def __init__(self, study: Study, refresh_s: float = 5.0) -> None:
        self._study = study
        self._refresh_s = refresh_s
        self._loaded_at = float("-inf")
        self._trials: list[FrozenTrial] = []

    def trials(self) -> list[FrozenTrial]:
        now = time.monotonic()
        if now - self._loaded_at >= self._refresh_s:
            self._loaded_at = now
            self._trials = self._study.get_trials(deepcopy=False)
        return self._trials


class FamilyMemoryView(Study):
    """One family's trials of a study, read once and kept current in memory.

    Built without ``Study.__init__`` (which reads the storage); it answers only what
    the memory-safe pruners ask: ``direction(s)`` and ``get_trials``.
    """

    def __init__(self, study: Study, family: str, *, refresh_s: float = 5.0,  # noqa: D107
                 fidelity: int | None = None, reader: StudyReader | None = None) -> None:
        # Deliberately not calling super().__init__: no storage round trip.
        self.study_name = study.study_name
        self._study_id = study._study_id
        self._storage = study._storage
        self._directions = list(study.directions)
        self.sampler = study.sampler
        self.pruner = study.pruner
        self._source = study
        self._family = family
        self._fidelity = fidelity  # a raced rung's epochs (search.space.FIDELITY_ATTR)
        self._reader = reader or StudyReader(study, refresh_s)
        self._refresh_s = refresh_s
        self._loaded_at = float("-inf")
        self._stored: list[FrozenTrial] = []
        self._live: dict[int, FrozenTrial] = {}

    def track(self, trials: Sequence[optuna.Trial]) -> None:
        """The population's own running trials, whose values this view records as reported."""
        for t in trials:
            ft = self._source._storage.get_trial(t._trial_id)
            self._live[ft.number] = copy.deepcopy(ft)

    def report(self, number: int, step: int, value: float) -> FrozenTrial:
        """Record a live trial's value at ``step``; returns its current frozen view."""
        ft = self._live[number]
        ft.intermediate_values[step] = value
        return ft

    def _reload_if_due(self) -> None:
        now = time.monotonic()
        if now - self._loaded_at < self._refresh_s:
            return
        self._loaded_at = now
        self._stored = [t for t in self._reader.trials()
                        if t.params.get(FAMILY_KEY) == self._family
                        and t.user_attrs.get(FIDELITY_ATTR) == self._fidelity
                        and t.number not in self._live]

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        self._reload_if_due()
        trials = sorted([*self._stored, *self._live.values()], key=lambda t: t.number)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


def base_pruner(pruner: BasePruner) -> BasePruner:
    """The pruner a family view is asked with (the view is already one family's)."""
    return pruner.base if isinstance(pruner, FamilyPruner) else pruner


def decide(view: FamilyMemoryView, pruner: BasePruner, trial: FrozenTrial) -> bool:
    """The pruner's decision for ``trial`` on the view (as ``trial.should_prune()`` would)."""
    return bool(base_pruner(pruner).prune(view, trial))


__all__: list[Any] = ["FamilyMemoryView", "decide", "memory_safe"]
