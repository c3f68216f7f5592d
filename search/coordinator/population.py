"""One population, seen from Optuna: ask K trials (of one family or several), prune each on
its own against its family's trials, tell each.

These functions hold no process or database plumbing, so the embedded
coordinator and the Celery worker share them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.samplers import BaseSampler, PartialFixedSampler, RandomSampler, TPESampler
from optuna.trial import TrialState

from models.records import CandidateResult, EpochReport
from models.spec import Candidate

from ..space import FAMILY_KEY, FIDELITY_ATTR, structural_params, suggest_candidate
from ..spec import SearchSpec
from .pruning import FamilyMemoryView, StudyReader, decide, memory_safe


@dataclass
class AskedTrial:
    """One candidate of a population: its Optuna trial and what was sampled for it."""

    trial: optuna.Trial
    family: str
    act_params: dict[str, Any]
    hparams: dict[str, float]
    seed: int
    reported: frozenset[int] = frozenset()  # epochs Optuna holds already (a resumed trial)

    @property
    def number(self) -> int:
        return self.trial.number

    def candidate(self) -> Candidate:
        return Candidate(seed=self.seed, lr=self.hparams["lr"],
                         weight_decay=self.hparams["weight_decay"], act_params=dict(self.act_params),
                         family=self.family)


def candidate_seed(search_seed: int, trial_number: int) -> int:
    """A distinct, reproducible seed per trial."""
    return (search_seed * 1_000_003 + trial_number * 7919) % (2**31 - 1)


def own_structural(family: str, structural: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``structural`` (Optuna-named, several families' merged) of ``family``."""
    prefix = f"{family}."
    return {name: value for name, value in structural.items() if name.startswith(prefix)}


def ask_population(
    study: optuna.Study, base_sampler: BaseSampler, families: str | Sequence[str], k: int | None,
    spec: SearchSpec, structural: dict[str, Any] | None = None,
    fixed_per_slot: Sequence[dict[str, Any]] | None = None, fidelity: int | None = None,
) -> list[AskedTrial]:
    """Ask one trial per slot (``families``: one family per slot, or one family for ``k``).

    A population shares one structure per family (maxout's k, rational degrees, VAF
    width...): the first trial of each family samples its structural values with the
    family fixed; the family's later trials are asked with those fixed too
    (``PartialFixedSampler``). ``structural`` (Optuna-named, as
    :func:`search.space.structural_params` gives them, any families merged) fixes them
    from the start (completing a population asked in part). ``fixed_per_slot``: more
    values to fix, one dict per slot (a race's first rung shares lr and weight decay).
    """
    slots = [families] * int(k or 0) if isinstance(families, str) else list(families)
    shared: dict[str, Any] = dict(structural or {})
    if isinstance(base_sampler, IN_MEMORY_SAMPLERS):
        return _ask_in_memory(study, base_sampler, slots, spec, shared, fixed_per_slot, fidelity)
    asked: list[AskedTrial] = []
    try:
        for i, family in enumerate(slots):
            fixed = {FAMILY_KEY: family, **own_structural(family, shared),
                     **(fixed_per_slot[i] if fixed_per_slot else {})}
            study.sampler = PartialFixedSampler(fixed, base_sampler)
            trial = study.ask()
            act_params, hparams = suggest_candidate(trial, family, spec)
            if fidelity is not None:
                trial.set_user_attr(FIDELITY_ATTR, fidelity)
            if not own_structural(family, shared):
                shared.update(structural_params(family, act_params))
            asked.append(AskedTrial(trial, family, act_params, hparams,
                                    candidate_seed(spec.seed, trial.number)))
    finally:
        study.sampler = base_sampler
    return asked


#: Samplers that keep no state of their own in the storage (study or trial system
#: attributes), so they can sample on an in-memory copy of the study.
IN_MEMORY_SAMPLERS: tuple[type[BaseSampler], ...] = (TPESampler, RandomSampler)


def _ask_in_memory(study: optuna.Study, base_sampler: BaseSampler, slots: Sequence[str],
                   spec: SearchSpec, shared: dict[str, Any],
                   fixed_per_slot: Sequence[dict[str, Any]] | None,
                   fidelity: int | None = None) -> list[AskedTrial]:
    """The same asks as :func:`ask_population`, sampled on an in-memory copy of the study.

    Asking on the RDB study costs a read of every trial and a commit per suggested
    parameter (~0.1 s a trial on SQLite: seconds per population, quadratic in the
    budget). Here the study is read once, the sampler (same seed, same RUNNING trials
    for the constant liar) works in memory, and each asked trial is written with all its
    parameters in one transaction; it stays RUNNING in the copy so the next ask sees it.
    """
    memory = optuna.create_study(directions=study.directions, sampler=base_sampler,
                                 pruner=optuna.pruners.NopPruner())
    memory.add_trials(study.get_trials(deepcopy=False))
    asked: list[AskedTrial] = []
    for i, family in enumerate(slots):
        fixed = {FAMILY_KEY: family, **own_structural(family, shared),
                 **(fixed_per_slot[i] if fixed_per_slot else {})}
        memory.sampler = PartialFixedSampler(fixed, base_sampler)
        draft = memory.ask()
        act_params, hparams = suggest_candidate(draft, family, spec)
        if not own_structural(family, shared):
            shared.update(structural_params(family, act_params))
        if fidelity is not None:
            draft.set_user_attr(FIDELITY_ATTR, fidelity)
        frozen = memory._storage.get_trial(draft._trial_id)
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params=frozen.params, distributions=frozen.distributions,
            user_attrs=frozen.user_attrs, system_attrs=frozen.system_attrs)
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        trial = optuna.Trial(study, trial_id)
        asked.append(AskedTrial(trial, family, act_params, hparams,
                                candidate_seed(spec.seed, trial.number)))
    return asked


REPORT_FLUSH_S = 2.0


def write_intermediate_values(study: optuna.Study, values: Sequence[tuple[int, int, float]]
                              ) -> None:
    """``(trial_id, step, value)`` into the study's storage: one transaction on an RDB
    storage (Optuna's own per-value write, unrolled), else value by value."""
    from optuna.storages import RDBStorage
    from optuna.storages._rdb.storage import _create_scoped_session

    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if not isinstance(backend, RDBStorage):
        for trial_id, step, value in values:
            storage.set_trial_intermediate_value(trial_id, step, value)
        return
    with _create_scoped_session(backend.scoped_session, True) as session:
        for trial_id, step, value in values:
            backend._set_trial_intermediate_value_without_commit(session, trial_id, step, value)


@dataclass
class PruningReporter:
    """The engine's ``on_epoch`` callback: report each candidate to Optuna and prune it alone.

    Every value goes to Optuna's storage. With ``view`` (a memory-safe pruner, see
    :mod:`.pruning`) the decision is made on the in-memory view of the family's
    trials; without it, by ``trial.should_prune()``, which reads the study.
    """

    asked: list[AskedTrial]
    multi_objective: bool = False
    views: dict[str, FamilyMemoryView] | None = None  # one per family of the population
    flush_s: float = REPORT_FLUSH_S
    _pending: list[tuple[int, int, float]] = field(default_factory=list)
    _flushed_at: float = field(default_factory=time.monotonic)

    def flush(self) -> None:
        """Write the buffered intermediate values to Optuna's storage, in one transaction.

        With in-memory views the decisions do not read them back, so they are written in
        batches (every ``flush_s`` and before the population's trials are told): one
        commit per candidate and epoch was the coordinator's largest cost on small sets.
        """
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        if pending:
            write_intermediate_values(self.asked[0].trial.study, pending)

    def __call__(self, report: EpochReport) -> list[int]:
        if self.multi_objective:
            return []  # Optuna takes no intermediate values (and prunes nothing) with several objectives
        stop: list[int] = []
        for index, value in zip(report.candidates, report.val_metric, strict=True):
            asked = self.asked[index]
            if not math.isfinite(value):
                continue  # the engine fails non-finite candidates itself
            if report.epoch not in asked.reported:
                if self.views is not None:
                    self._pending.append((asked.trial._trial_id, report.epoch, float(value)))
                else:  # should_prune reads the value back from the storage
                    asked.trial.report(value, report.epoch)
            if self.views is not None:
                view = self.views[asked.family]
                frozen = view.report(asked.number, report.epoch, value)
                prune = decide(view, asked.trial.study.pruner, frozen)
            else:
                prune = asked.trial.should_prune()
            if prune:
                stop.append(index)
        if stop or time.monotonic() - self._flushed_at >= self.flush_s:
            self.flush()  # a pruned trial is told soon: its values go first
        return stop


def pruning_reporter(study: optuna.Study, asked: list[AskedTrial], *,
                     multi_objective: bool, fidelity: int | None = None) -> PruningReporter:
    """The reporter of a population: on in-memory views (one per family, since each
    family is pruned against its own trials) when its pruner allows them."""
    views = None
    if not multi_objective and memory_safe(study.pruner):
        views = {}
        reader = StudyReader(study)
        for family in dict.fromkeys(a.family for a in asked):
            views[family] = FamilyMemoryView(study, family, fidelity=fidelity, reader=reader)
            views[family].track([a.trial for a in asked if a.family == family])
    return PruningReporter(asked, multi_objective=multi_objective, views=views)


def objective_values(spec: SearchSpec, result: CandidateResult, n_params: int,
                     flops: int) -> float | list[float]:
    """What Optuna is told for a finished candidate."""
    assert result.val_metric is not None
    if spec.objective == "metric+params":
        return [result.val_metric, float(n_params)]
    if spec.objective == "metric+flops":
        return [result.val_metric, float(flops)]
    return result.val_metric


def tell_population(study: optuna.Study, spec: SearchSpec, asked: list[AskedTrial],
                    results: list[CandidateResult], n_params: int, flops: int) -> dict[int, str]:
    """Tell Optuna how each candidate ended; returns trial number -> our state name."""
    states: dict[int, str] = {}
    for result in results:
        trial = asked[result.index].trial
        if result.status == "complete" and result.val_metric is not None and math.isfinite(
            result.val_metric
        ):
            study.tell(trial, objective_values(spec, result, n_params, flops))
            states[trial.number] = "complete"
        elif result.status in ("pruned", "deadline") and result.history:
            trial.set_user_attr("stopped_by", result.status)
            study.tell(trial, state=TrialState.PRUNED)
            states[trial.number] = "pruned"
        else:
            if result.error:
                trial.set_user_attr("error", result.error[:500])
            study.tell(trial, state=TrialState.FAIL)
            states[trial.number] = "failed"
    return states


def fail_population(study: optuna.Study, asked: list[AskedTrial], error: str) -> None:
    """Tell FAIL for every trial of a population whose training process broke."""
    for a in asked:
        a.trial.set_user_attr("error", error[:500])
        study.tell(a.trial, state=TrialState.FAIL)
