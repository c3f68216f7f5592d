"""The evaluation protocol: equal budgets, intervals, finalists, the baseline row."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from scipy import stats

from search.coordinator.planner import FamilyPlanner, auto_population_size
from search.protocol import best_per_family, build_leaderboard, mean_interval


@dataclass
class T:
    family: str
    phase: str
    state: str
    value: float | None
    test_value: float | None = None
    n_params: int | None = 100
    flops: int | None = 200
    family_params: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    source_trial_number: int | None = None
    trial_number: int | None = None


def test_mean_interval_matches_student_t() -> None:
    values = [0.90, 0.92, 0.94]
    mean, half = mean_interval(values)
    sd = stats.tstd(values)
    assert mean == pytest.approx(0.92)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert mean_interval([0.5]) == (0.5, 0.0)


def test_planner_gives_every_family_the_same_budget() -> None:
    planner = FamilyPlanner(["relu", "gelu", "rational"], trials_per_family=7, population_size=3)
    issued: dict[str, list[int]] = {}
    while (nxt := planner.next()) is not None:
        issued.setdefault(nxt[0], []).append(nxt[1])
    assert {f: sum(ks) for f, ks in issued.items()} == {"relu": 7, "gelu": 7, "rational": 7}
    assert all(k <= 3 for ks in issued.values() for k in ks)
    # round-robin: the first three populations are three different families
    planner = FamilyPlanner(["a", "b", "c"], 4, 2)
    assert [planner.next()[0] for _ in range(3)] == ["a", "b", "c"]


def test_auto_population_size_is_bounded() -> None:
    assert auto_population_size(1) == 1
    assert auto_population_size(4) == 4
    assert auto_population_size(30) == 10
    assert auto_population_size(10_000) == 64


def test_best_per_family_ignores_pruned_failed_and_finalists() -> None:
    trials = [
        T("relu", "search", "complete", 0.8, trial_number=0),
        T("relu", "search", "pruned", 0.99, trial_number=1),
        T("relu", "search", "complete", 0.85, trial_number=2),
        T("gelu", "search", "failed", None, trial_number=3),
        T("gelu", "finalist", "complete", 0.99),
    ]
    best = best_per_family(trials)
    assert set(best) == {"relu"}
    assert best["relu"].trial_number == 2


def test_leaderboard_ranks_by_finalist_mean_and_marks_baseline() -> None:
    trials = [
        T("relu", "search", "complete", 0.95), T("relu", "search", "pruned", 0.5),
        T("gelu", "search", "complete", 0.96),
        T("relu", "finalist", "complete", 0.90), T("relu", "finalist", "complete", 0.92),
        T("gelu", "finalist", "complete", 0.93, test_value=0.91),
        T("gelu", "finalist", "complete", 0.95, test_value=0.93),
    ]
    board = build_leaderboard(trials, "accuracy")
    assert [r.family for r in board.rows] == ["gelu", "relu"]
    assert board.winner.family == "gelu"
    assert board.baseline.family == "relu" and board.baseline.baseline
    assert board.winner.delta_vs_baseline == pytest.approx(0.94 - 0.91)
    assert board.baseline.search_trials == 2 and board.baseline.search_pruned == 1
    assert board.winner.test_mean == pytest.approx(0.92)
    assert board.baseline.test_mean is None  # only the final choice is scored on test
