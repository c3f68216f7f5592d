"""Which family trains next, and how many candidates at once.

Families take turns (round-robin) and each gets exactly the same number of
tuning trials: the evaluation protocol's equal budget, ReLU included. A bandit
would spend more on families that look good early, which finds a good model
faster but starves the others, so their leaderboard rows would no longer be
comparable; actsearch's question is "which activation", so it keeps budgets equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..spec import SearchSpec

MAX_AUTO_K = 64


def auto_population_size(trials_per_family: int) -> int:
    """K when the user does not set it.

    Larger K trains faster (one batched pass for K candidates); smaller K gives
    the sampler more rounds to learn from. A third of the family's budget, at
    least 4, balances the two on small budgets.
    """
    return max(1, min(trials_per_family, max(4, math.ceil(trials_per_family / 3)), MAX_AUTO_K))


@dataclass
class FamilyPlanner:
    """Hands out (family, k) for the next population until every family's budget is spent."""

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


def planner_for(spec: SearchSpec, *, n_inputs: int, n_outputs: int) -> FamilyPlanner:
    """The planner of a search, with K capped by what the engine saturates on this device.

    An explicit ``population_size`` in the spec always wins (submission checked that it
    fits the training memory budget); the automatic K stays within that budget.
    """
    from core.settings import get_settings
    from models.sizing import auto_population_size as engine_k
    from models.sizing import largest_population_within

    cap = None
    if spec.population_size is None:
        arch = spec.arch_spec()
        budget = get_settings().training.memory_budget_mb * 2**20
        # K for speed from ReLU's cost (what the engine was tuned on), then for memory
        # from the costliest family searched: every family's population must fit.
        cap = min(engine_k(arch, "relu", {}, n_inputs, n_outputs, spec.batch_size,
                           memory_budget_bytes=budget),
                  largest_population_within(arch, spec.families, n_inputs, n_outputs,
                                            spec.batch_size, budget))
    return FamilyPlanner(spec.families, spec.trials_per_family(), spec.population_size, cap)
