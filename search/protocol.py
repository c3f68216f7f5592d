"""The evaluation protocol: fair budgets, finalists on several seeds, intervals, one test score.

* Every family, ReLU included, gets the same number of tuning trials (``allocation:
  equal``), or races for them (``allocation: race``, :mod:`search.race`): families
  that lose an early rung stop there and are listed as stopped with the budget they
  received, ReLU runs every rung, so it has at least the budget of any family ranked.
* The best trial of each family (its *finalist*) is re-trained on several fresh
  seeds; the leaderboard ranks families by the mean validation metric of those
  re-runs with a 95% Student-t interval, so one lucky seed cannot win.
* Only the final choice (the top family) is scored on the test split, once:
  reporting every family's test score would invite choosing on the test set.
* On request (``control: relu``), an equal-compute ReLU-only control arm is scored on
  test too, and :attr:`Leaderboard.control` compares the two (:mod:`search.control`);
  its trials never enter the ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .control import ControlRow

BASELINE = "relu"


class TrialLike(Protocol):
    family: str
    phase: str
    state: str
    value: float | None
    test_value: float | None
    n_params: int | None
    flops: int | None
    family_params: dict[str, Any]
    hparams: dict[str, Any]
    source_trial_number: int | None
    trial_number: int | None


def task_metric(task: str) -> str:
    """The validation/test metric of a task: accuracy for classification, R² for regression."""
    return "accuracy" if task == "classification" else "r2"


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    # scipy.special's Student-t quantile: the same value as scipy.stats.t.ppf, without
    # importing scipy.stats (~1.4 s, on the path from the last finalist to the leaderboard)
    from scipy.special import stdtrit

    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * math.sqrt(var / n)
    return mean, half


@dataclass
class LeaderboardRow:
    """One family's finalist, summarised over its seeds."""

    family: str
    mean: float
    ci95: float
    n_seeds: int
    values: list[float]
    n_params: int | None
    flops: int | None
    family_params: dict[str, Any]
    hparams: dict[str, Any]
    source_trial_number: int | None
    search_trials: int = 0
    search_pruned: int = 0
    best_search_value: float | None = None
    baseline: bool = False
    delta_vs_baseline: float | None = None
    test_mean: float | None = None
    test_ci95: float | None = None
    # the budget the family received in the search phase (what was spent, from the rows)
    budget_epochs: int | None = None  # its trials' fidelity (epochs each)
    candidate_epochs: int | None = None  # epochs trained, summed over its trials
    rung: int | None = None  # the last race rung it ran in (None: not raced)


@dataclass
class StoppedFamily:
    """A family the race stopped at ``rung``: its budget there and its best value then."""

    family: str
    rung: int
    trials: int
    epochs: int
    candidate_epochs: int
    best_value: float | None


@dataclass
class Leaderboard:
    """The ranked families, the baseline row and the final choice's test score.

    ``control``: the equal-compute ReLU control and its verdict, when the search asked
    for one and its finalists finished (not a ranked row).
    """

    metric: str
    rows: list[LeaderboardRow] = field(default_factory=list)
    stopped: list[StoppedFamily] = field(default_factory=list)  # raced out, best first
    control: ControlRow | None = None

    @property
    def winner(self) -> LeaderboardRow | None:
        return self.rows[0] if self.rows else None

    @property
    def baseline(self) -> LeaderboardRow | None:
        return next((r for r in self.rows if r.baseline), None)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "rows": [asdict(r) for r in self.rows],
                "stopped": [asdict(s) for s in self.stopped],
                "control": self.control.as_dict() if self.control is not None else None}

    def set_compute(self, compute: dict[str, int]) -> None:
        """Candidate-epochs per phase (``repo.search_candidate_epochs``) for the control row."""
        if self.control is not None:
            self.control.set_compute(compute)


def best_per_family(trials: Iterable[TrialLike], phase: str = "search") -> dict[str, TrialLike]:
    """The best completed trial of ``phase`` of each family (the finalists to re-run)."""
    best: dict[str, TrialLike] = {}
    for t in trials:
        if t.phase != phase or t.state != "complete" or t.value is None:
            continue
        if not math.isfinite(t.value):
            continue
        current = best.get(t.family)
        if current is None or (current.value is not None and t.value > current.value):
            best[t.family] = t
    return best


def build_leaderboard(trials: Sequence[TrialLike], metric: str,
                      budgets: dict[str, dict[str, Any]] | None = None) -> Leaderboard:
    """Rank families by the mean of their finalist re-runs (highest first).

    ``budgets`` (``store.repo.family_budgets``): what each family's search phase spent;
    a family with a budget and no finalist was stopped by the race at its last rung
    (listed in :attr:`Leaderboard.stopped`, never ranked).
    """
    budgets = budgets or {}
    search_counts: dict[str, list[int]] = {}
    best_search: dict[str, float] = {}
    finalists: dict[str, list[TrialLike]] = {}
    for t in trials:
        if t.phase == "search":
            done, pruned = search_counts.setdefault(t.family, [0, 0])
            search_counts[t.family] = [done + 1, pruned + (t.state == "pruned")]
            if t.state == "complete" and t.value is not None and math.isfinite(t.value):
                best_search[t.family] = max(best_search.get(t.family, -math.inf), t.value)
        elif t.phase == "finalist" and t.state == "complete" and t.value is not None:
            finalists.setdefault(t.family, []).append(t)

    rows = []
    for family, runs in finalists.items():
        values = [float(r.value) for r in runs if r.value is not None]
        mean, half = mean_interval(values)
        first = runs[0]
        tests = [float(r.test_value) for r in runs if r.test_value is not None]
        test_mean, test_half = mean_interval(tests) if tests else (None, None)
        counts = search_counts.get(family, [0, 0])
        rows.append(LeaderboardRow(
            family=family, mean=mean, ci95=half, n_seeds=len(values), values=values,
            n_params=first.n_params, flops=first.flops, family_params=dict(first.family_params),
            hparams=dict(first.hparams), source_trial_number=first.source_trial_number,
            search_trials=counts[0], search_pruned=counts[1],
            best_search_value=best_search.get(family), baseline=family == BASELINE,
            test_mean=test_mean, test_ci95=test_half,
            budget_epochs=budgets.get(family, {}).get("epochs"),
            candidate_epochs=budgets.get(family, {}).get("candidate_epochs"),
            rung=budgets.get(family, {}).get("rung"),
        ))
    rows.sort(key=lambda r: r.mean, reverse=True)
    stopped = [
        StoppedFamily(family=f, rung=int(b["rung"]), trials=int(b["trials"]),
                      epochs=int(b["epochs"]), candidate_epochs=int(b["candidate_epochs"]),
                      best_value=best_search.get(f))
        for f, b in budgets.items()
        # raced out at an earlier rung, or in the last one with no trial completed there
        if f not in finalists and b.get("rung") is not None
    ]
    stopped.sort(key=lambda s: (-s.rung, -(s.best_value if s.best_value is not None
                                            else -math.inf)))
    base = next((r for r in rows if r.baseline), None)
    for r in rows:
        r.delta_vs_baseline = None if base is None else r.mean - base.mean
    from .control import control_row

    return Leaderboard(metric=metric, rows=rows, stopped=stopped,
                       control=control_row(trials, rows[0] if rows else None, metric))
