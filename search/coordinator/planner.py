"""Which candidates train together: the search's populations, planned before it runs.

Every family gets exactly the same number of tuning trials (the evaluation protocol's
equal budget, ReLU included), so leaderboard rows stay comparable. How those trials are
*grouped* is a matter of speed only: a population is K candidates that share the
network's shape and batch size, whatever their families (:mod:`models.populations`),
and the engine trains them as one batched pass. So the planner packs the trials of every
family whose widths are fixed (relu, prelu, rational, vaf, spline, ... on any
structure) into mixed populations of the K the device saturates (:mod:`models.sizing`),
not K per family: a default 32-trial search over 8 families is one population of 32.

Families whose widths follow a sampled structural value (maxout's k) cannot share with
the others before that value is drawn; they keep populations of their own, with the
value fixed per population, as before mixing existed.

Within a mixed population the slots take the families in turn (trial 0 of each family,
then trial 1 ...), so when a budget needs several populations each holds a similar mix,
and the later ones ask Optuna after the earlier ones' results are told.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from ..spec import SearchSpec

MAX_AUTO_K = 64  # one-family populations (module searches, sampled widths)
#: A budget of at least two such populations is split in two, so the sampler learns
#: from the first half before it asks the second (one population asks every trial blind).
MIN_SPLIT_K = 32
MIXED = "mixed"


def auto_population_size(trials_per_family: int) -> int:
    """K of a one-family population when the user does not set it.

    Larger K trains faster (one batched pass for K candidates); smaller K gives
    the sampler more rounds to learn from. A third of the family's budget, at
    least 4, balances the two on small budgets.
    """
    return max(1, min(trials_per_family, max(4, math.ceil(trials_per_family / 3)), MAX_AUTO_K))


@dataclass(frozen=True)
class PlannedPopulation:
    """One population to create: the family of each candidate slot."""

    families: tuple[str, ...]
    epochs: int | None = None  # None: the spec's
    rung: int | None = None

    @property
    def k(self) -> int:
        return len(self.families)

    @property
    def family(self) -> str:
        """The row's ``family``: the one family, or ``"mixed"``."""
        return self.families[0] if len(set(self.families)) == 1 else MIXED

    @property
    def slot_families(self) -> list[str] | None:
        """The row's ``families``: None for a one-family population."""
        return None if self.family != MIXED else list(self.families)


@dataclass
class FamilyPlanner:
    """Hands out (family, k) one-family populations until every family's budget is spent.

    What searches of a user's own module use (their executor trains one family at a
    time), and what the mixed planner uses for families whose widths are sampled.
    """

    families: list[str]
    trials_per_family: int
    population_size: int | None = None
    max_k: int | None = None  # what the engine can use at once (models.sizing)
    issued: dict[str, int] = field(default_factory=dict)
    _turn: int = 0

    def __post_init__(self) -> None:
        for f in self.families:
            self.issued.setdefault(f, 0)

    @property
    def k(self) -> int:
        if self.population_size:
            return self.population_size
        k = auto_population_size(self.trials_per_family)
        return min(k, self.max_k) if self.max_k else k

    def remaining(self) -> int:
        return sum(self.trials_per_family - n for n in self.issued.values())

    def next(self) -> tuple[str, int] | None:
        """The next population to train, or None when the budget is spent."""
        for _ in range(len(self.families)):
            family = self.families[self._turn % len(self.families)]
            self._turn += 1
            left = self.trials_per_family - self.issued[family]
            if left > 0:
                k = min(self.k, left)
                self.issued[family] += k
                return family, k
        return None

    def plan(self) -> list[PlannedPopulation]:
        out = []
        while (nxt := self.next()) is not None:
            out.append(PlannedPopulation((nxt[0],) * nxt[1]))
        return out


def interleave(trials: dict[str, int]) -> list[str]:
    """One slot per trial, families taking turns: ``{a: 3, b: 1}`` -> ``[a, b, a, a]``."""
    slots: list[str] = []
    left = dict(trials)
    while any(left.values()):
        for family in trials:
            if left[family] > 0:
                slots.append(family)
                left[family] -= 1
    return slots


def pack(slots: Sequence[str], k: int, *, split_at: int | None = MIN_SPLIT_K,
         epochs: int | None = None, rung: int | None = None) -> list[PlannedPopulation]:
    """Cut ``slots`` (families able to share one population) into populations of at most ``k``.

    The populations come out of near-equal size; ``split_at``: a run of at least twice
    that many slots is never left in one population.
    """
    n = len(slots)
    if n == 0:
        return []
    count = math.ceil(n / max(1, k))
    if count == 1 and split_at is not None and n >= 2 * split_at:
        count = 2
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [PlannedPopulation(tuple(slots[a:b]), epochs, rung)
            for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


@dataclass
class SharingGroups:
    """The families of a search split by what they can share a population with."""

    groups: dict[Hashable, list[str]]  # fixed population key -> families
    solo: list[str]  # widths follow a sampled value


def sharing_groups(spec: SearchSpec, families: Sequence[str]) -> SharingGroups:
    from models.catalogue import fixed_population_key  # memoised: no torch once seen

    arch = spec.arch_spec()
    groups: dict[Hashable, list[str]] = {}
    solo: list[str] = []
    for family in families:
        key = fixed_population_key(arch, family)
        if key is None:
            solo.append(family)
        else:
            groups.setdefault(key, []).append(family)
    return SharingGroups(groups, solo)


def engine_k(spec: SearchSpec, families: Sequence[str], *, n_inputs: int, n_outputs: int) -> int:
    """The K the engine saturates for this mix on this machine, within the memory budget.

    An explicit ``population_size`` in the spec always wins (submission checked that
    it fits the training memory budget).
    """
    if spec.population_size:
        return spec.population_size
    from core.settings import get_settings
    from models.sizing import auto_device, population_size

    settings = get_settings()
    budget = settings.training.memory_budget_mb * 2**20
    device = settings.worker.device
    if device == "auto":
        device = auto_device()  # no torch import on a machine without a GPU
    k = population_size(spec.arch_spec(), n_inputs, n_outputs, spec.batch_size, device,
                        families_mix=list(families), memory_budget_bytes=budget)
    return max(1, k)


def plan_trials(spec: SearchSpec, trials: dict[str, int], *, n_inputs: int, n_outputs: int,
                epochs: int | None = None, rung: int | None = None) -> list[PlannedPopulation]:
    """Populations training ``trials[family]`` trials of each family (mixed where they can)."""
    trials = {f: n for f, n in trials.items() if n > 0}
    split = sharing_groups(spec, list(trials))
    planned: list[PlannedPopulation] = []
    for members in split.groups.values():
        k = engine_k(spec, members, n_inputs=n_inputs, n_outputs=n_outputs)
        planned += pack(interleave({f: trials[f] for f in members}), k,
                        epochs=epochs, rung=rung)
    for family in split.solo:
        cap = engine_k(spec, [family], n_inputs=n_inputs, n_outputs=n_outputs)
        solo = FamilyPlanner([family], trials[family], spec.population_size, cap)
        planned += [PlannedPopulation(p.families, epochs, rung) for p in solo.plan()]
    return planned


def plan_search_populations(spec: SearchSpec, *, n_inputs: int, n_outputs: int
                            ) -> list[PlannedPopulation]:
    """The search-phase populations planned when a search starts: every one with the equal
    budget per family; a race's warm-up (or, without one, its first rung)."""
    per_family = spec.trials_per_family()
    if spec.is_module:  # the user's module trains one family per population
        return FamilyPlanner(spec.families, per_family, spec.population_size).plan()
    if spec.racing:
        from ..protocol import BASELINE
        from ..race import warmup

        first = warmup(len(spec.families), spec.trials, spec.epochs)
        if first is not None:  # the baseline alone picks rung 0's lr and weight decay
            epochs = None if first.epochs == spec.epochs else first.epochs
            return plan_trials(spec, {BASELINE: first.trials_per_family}, n_inputs=n_inputs,
                               n_outputs=n_outputs, epochs=epochs, rung=first.index)
        return plan_rung(spec, 0, spec.families, n_inputs=n_inputs, n_outputs=n_outputs)
    return plan_trials(spec, {f: per_family for f in spec.families},
                       n_inputs=n_inputs, n_outputs=n_outputs)


def plan_rung(spec: SearchSpec, index: int, families: Sequence[str], *, n_inputs: int,
              n_outputs: int) -> list[PlannedPopulation]:
    """The populations of rung ``index`` of the search's race (:mod:`search.race`)."""
    from ..race import schedule

    rung = schedule(len(spec.families), spec.trials, spec.epochs)[index]
    epochs = None if rung.epochs == spec.epochs else rung.epochs
    return plan_trials(spec, {f: rung.trials_per_family for f in families},
                       n_inputs=n_inputs, n_outputs=n_outputs, epochs=epochs, rung=index)
