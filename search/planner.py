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
    issued: dict[str, int] = field(default_factory=dict)
    _turn: int = 0

    def __post_init__(self) -> None:
        for f in self.families:
            self.issued.setdefault(f, 0)

    @property
    def k(self) -> int:
        return self.population_size or auto_population_size(self.trials_per_family)

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
