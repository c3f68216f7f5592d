"""The race (``allocation: race``): its schedule, promotion, and a whole search on a synthetic
objective, driven through the shared coordinator steps (no network is trained)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from models.engine import CandidateResult, PopulationResult
from search import race
from search.coordinator import steps
from search.coordinator.finish import advance_search
from search.service import create_search
from search.spec import SearchSpec
from store import repo
from store.db import init_db, make_engine, session_factory

Sessions = sessionmaker[Session]
BEST = "snake"  # the family the synthetic objective favours
CONFIDENT = "spline"  # the lowest validation loss of all at a middling metric


def test_schedule_spends_at_most_the_budget_and_ends_at_full_epochs() -> None:
    for n, trials, epochs in [(34, 64, 25), (34, 32, 10), (34, 48, 20), (12, 16, 3), (5, 8, 2)]:
        rungs = race.schedule(n, trials, epochs)
        first = race.warmup(n, trials, epochs)
        assert rungs[0].families == n and rungs[-1].epochs == epochs
        warm = first.candidate_epochs if first else 0
        assert sum(r.candidate_epochs for r in rungs) + warm <= trials * epochs
        assert warm <= race.WARMUP_SHARE * trials * epochs
        if first is not None:  # the baseline alone, at the screening rung's epochs
            assert first.families == 1 and first.epochs == rungs[0].epochs
            assert race.WARMUP_MIN <= first.trials <= race.WARMUP_POINTS
        assert all(a.families > b.families for a, b in zip(rungs, rungs[1:], strict=False))
        assert all(a.epochs <= b.epochs for a, b in zip(rungs, rungs[1:], strict=False))
        assert rungs[-1].families <= race.DEFAULT_ETA + 1
        assert all(r.trials_per_family >= 1 for r in rungs)


def test_no_race_with_few_families() -> None:
    assert not race.races(["relu", "gelu", "elu", "silu"], "race")
    assert race.races(["relu", "gelu", "elu", "silu", "tanh"], "race")
    assert not race.races(["relu", "gelu", "elu", "silu", "tanh"], "equal")
    assert race.planned_trials(4, 10, 5, "race") == 12  # ceil(10/4) each, as equal


def test_promotion_keeps_the_best_and_always_the_baseline() -> None:
    families = ["relu", "a", "b", "c", "d"]
    ranked = {"relu": 0.1, "a": 0.9, "b": 0.8, "c": 0.7, "d": 0.95}
    assert race.promote(ranked, families, 3) == ["relu", "a", "d"]  # relu displaces b
    ranked["relu"] = 0.99
    assert race.promote(ranked, families, 3) == ["relu", "a", "d"]
    assert race.promote({}, families, 2) == ["relu", "a"]  # nothing completed: family order


def test_rungs_rank_families_by_validation_loss_and_the_metric_without_one() -> None:
    trials = [("a", "complete", 0.60, 0.90), ("b", "complete", 0.55, 0.80),
              ("b", "complete", 0.50, 1.20), ("c", "pruned", 0.70, 0.10), ("d", "fail", None, None)]
    ranked = race.rung_ranking(trials)
    assert ranked == {"a": -0.90, "b": -0.80}  # b's lower loss beats a's higher accuracy
    assert race.promote(ranked, ["relu", "a", "b"], 2) == ["relu", "b"]
    no_loss = [*trials[:2], ("e", "complete", 0.65, None)]
    assert race.rung_ranking(no_loss) == {"a": 0.60, "b": 0.55, "e": 0.65}


def test_shared_hparams_start_at_the_log_centre_and_stay_in_range() -> None:
    first = race.shared_hparams(0, (1e-4, 1e-2), (1e-6, 1e-2))
    assert first["lr"] == pytest.approx(1e-3) and first["weight_decay"] == pytest.approx(1e-4)
    points = [race.shared_hparams(j, (1e-4, 1e-2), (1e-6, 1e-2)) for j in range(16)]
    assert len({(p["lr"], p["weight_decay"]) for p in points}) == 16
    assert all(1e-4 <= p["lr"] <= 1e-2 and 1e-6 <= p["weight_decay"] <= 1e-2 for p in points)


# --------------------------------------------------------------------------- a whole search


def _quality(family: str) -> float:
    if family == BEST:
        return 0.95
    if family == "relu":
        return 0.70
    return 0.40 + 0.25 * (hash(family) % 97) / 97  # below relu's, differently per family


def _synthetic(job: steps.Prepared, rng: random.Random) -> PopulationResult:
    """Each candidate's value: its family's quality, approached with epochs, plus a penalty
    for a learning rate far from 3e-3 and a little noise; its loss is one minus that,
    except CONFIDENT's, the lowest of all (the race promotes by loss)."""
    epochs = job.config.epochs
    results = []
    for i, ident in enumerate(job.identities):
        family = ident.family or job.claimed.family
        lr_gap = (math.log10(ident.hparams["lr"]) - math.log10(3e-3)) ** 2
        history = []
        for e in range(1, epochs + 1):
            v = _quality(family) * (1 - math.exp(-e / 3)) - 0.02 * lr_gap + rng.gauss(0, 0.005)
            loss = 0.01 if family == CONFIDENT else 1 - v
            history.append({"epoch": e, "train_loss": loss, "val_loss": loss, "val_metric": v,
                            "elapsed_s": 0.01 * e})
        results.append(CandidateResult(index=i, family=family, n_params=10, flops=10,
                                       history=history, val_metric=history[-1]["val_metric"],
                                       best_val_metric=max(h["val_metric"] for h in history)))
    return PopulationResult(candidates=results, n_params=10, flops=10, device="cpu",
                            wall_s=0.0, candidate_epochs=len(results) * epochs)


def _run(tmp_path: Path, **spec: Any) -> tuple[Sessions, int, SearchSpec]:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    base = {"dataset": "iris", "architecture": "mlp:8", "trials": 32, "epochs": 9,
            "pruner": "none", "finalist_seeds": 2, "batch_size": 32}
    search_spec = SearchSpec(**{**base, **spec})
    with sessions.begin() as session:
        search_id = create_search(session=session, spec=search_spec, storage_url=url).id
    with sessions.begin() as session:
        steps.plan_search(session, search_id=search_id)
    rng = random.Random(0)
    no_test = lambda session, sid, data, family: None  # noqa: E731 - nothing to score
    for _ in range(200):
        with sessions() as session:
            pid = steps.next_pending(session, search_id=search_id)
        if pid is None:
            advance_search(sessions, search_id=search_id, storage_url=url, test_scorer=no_test)
            with sessions() as session:
                if repo.get_search(session, search_id=search_id).state == "complete":
                    break
                if steps.next_pending(session, search_id=search_id) is None:
                    raise AssertionError("nothing pending and the search did not complete")
            continue
        claimed, _ = steps.claim(sessions, pid, "test")
        assert claimed is not None
        job = steps.prepare(sessions, claimed, url)
        steps.commit_result(sessions, job, _synthetic(job, rng))
    return sessions, search_id, search_spec


def test_race_finds_the_best_family_and_funds_relu_as_the_best(tmp_path: Path) -> None:
    sessions, search_id, spec = _run(tmp_path)
    assert len(spec.families) > 20 and spec.racing  # every registered family, raced
    rungs = race.schedule(len(spec.families), spec.trials, spec.epochs)
    with sessions() as session:
        pops = repo.list_populations(session, search_id=search_id)
        search = repo.get_search(session, search_id=search_id)
        budgets = repo.family_budgets(session, search_id=search_id, full_epochs=spec.epochs)
        trial_rows = repo.list_trials(session, search_id=search_id, phase="search", limit=None)
        from search.progress import search_leaderboard

        board = search_leaderboard(session, row=search)
    assert search.best["family"] == BEST
    # promoted by its loss to the last rung, then ranked by its metric there
    last = {f for p in pops if p.rung == rungs[-1].index for f in p.slot_families()}
    assert CONFIDENT in last and search.best["family"] != CONFIDENT
    # every rung planned as scheduled: its families, its epochs, its trials per family
    for r in rungs:
        mine = [p for p in pops if p.phase == "search" and p.rung == r.index]
        slots = [f for p in mine for f in p.slot_families()]
        assert len(set(slots)) == r.families and len(slots) == r.trials
        assert {p.epochs or spec.epochs for p in mine} == {r.epochs}
        assert "relu" in slots  # never stopped
    # relu has at least the budget of the best-funded family
    assert budgets["relu"]["trials"] == max(b["trials"] for b in budgets.values())
    assert budgets["relu"]["epochs"] == spec.epochs
    assert budgets["relu"]["candidate_epochs"] == max(b["candidate_epochs"] for b in budgets.values())
    # the budgets are what was spent: trials and epoch rows
    for family, b in budgets.items():
        mine = [t for t in trial_rows if t.family == family]
        assert b["trials"] == len(mine)
    first = race.warmup(len(spec.families), spec.trials, spec.epochs)
    assert first is not None
    assert sum(b["candidate_epochs"] for b in budgets.values()) == sum(
        r.candidate_epochs for r in rungs) + first.candidate_epochs
    # ranked: the last rung's families only; the others listed as stopped at their rung
    ranked = {r.family for r in board.rows}
    assert ranked == {f for p in pops if p.rung == rungs[-1].index for f in p.slot_families()}
    assert {s.family for s in board.stopped} == set(spec.families) - ranked
    assert all(s.rung < rungs[-1].index for s in board.stopped)
    assert all(r.budget_epochs == spec.epochs for r in board.rows)


def test_first_rung_pairs_the_families_on_the_same_hyperparameters(tmp_path: Path) -> None:
    sessions, search_id, spec = _run(tmp_path, trials=64)
    with sessions() as session:
        pops = {p.id: p for p in repo.list_populations(session, search_id=search_id)}
        first = [t for t in repo.list_trials(session, search_id=search_id, phase="search",
                                             limit=None) if pops[t.population_id].rung == 0]
    by_family: dict[str, list[tuple[float, float]]] = {}
    for t in sorted(first, key=lambda t: t.trial_number):
        by_family.setdefault(t.family, []).append((t.hparams["lr"], t.hparams["weight_decay"]))
    configs = {tuple(sorted(v)) for v in by_family.values()}
    assert len(configs) == 1  # every family saw the same (lr, weight decay) set


def test_the_warm_up_trains_relu_first_and_rung_0_trains_its_best_points(tmp_path: Path) -> None:
    """The warm-up is the search's first population (relu alone, the shared points at the
    screening rung's epochs); every family's trial j at rung 0 trains its j-th best point."""
    sessions, search_id, spec = _run(tmp_path, trials=64)
    first = race.warmup(len(spec.families), spec.trials, spec.epochs)
    assert first is not None
    with sessions() as session:
        pops = repo.list_populations(session, search_id=search_id)
        rows = repo.list_trials(session, search_id=search_id, phase="search", limit=None)
    warm_pops = [p for p in pops if p.rung == race.WARMUP_RUNG]
    assert warm_pops and min(pops, key=lambda p: p.id).rung == race.WARMUP_RUNG
    warm_ids = {p.id for p in warm_pops}
    warm = sorted((t for t in rows if t.population_id in warm_ids), key=lambda t: t.trial_number)
    assert {t.family for t in warm} == {"relu"} and len(warm) == first.trials
    assert {p.epochs or spec.epochs for p in warm_pops} == {race.schedule(
        len(spec.families), spec.trials, spec.epochs)[0].epochs}
    points = [(t.hparams["lr"], t.hparams["weight_decay"]) for t in warm]
    assert points == [tuple(race.shared_hparams(j, spec.lr, spec.weight_decay).values())
                      for j in range(first.trials)]
    best_first = sorted(warm, key=lambda t: -t.value)
    rung0 = {p.id for p in pops if p.rung == 0}
    by_family: dict[str, list[tuple[float, float]]] = {}
    for t in sorted((t for t in rows if t.population_id in rung0), key=lambda t: t.trial_number):
        by_family.setdefault(t.family, []).append((t.hparams["lr"], t.hparams["weight_decay"]))
    expected = [(t.hparams["lr"], t.hparams["weight_decay"]) for t in best_first]
    for family, got in by_family.items():
        assert got == expected[: len(got)], family
    # the synthetic objective penalises lr far from 3e-3 (beyond its noise for the three
    # farthest points): none of those leads
    gap = lambda lr: abs(math.log10(lr) - math.log10(3e-3))  # noqa: E731
    assert gap(expected[0][0]) < sorted(gap(lr) for lr, _ in points)[-3]


def test_ranked_points_put_completed_trials_first_and_skip_failed_ones() -> None:
    a, b, c, d = ({"lr": x, "weight_decay": 1e-4} for x in (1e-3, 2e-3, 3e-3, 4e-3))
    ranked = race.ranked_points([("pruned", 0.9, a), ("complete", 0.5, b), ("fail", None, c),
                                 ("complete", 0.7, d)])
    assert ranked == [d, b, a]
    assert race.first_rung_point(0, ranked, (1e-4, 1e-2), (1e-6, 1e-2)) == d
    assert race.first_rung_point(5, ranked, (1e-4, 1e-2), (1e-6, 1e-2)) == race.shared_hparams(
        5, (1e-4, 1e-2), (1e-6, 1e-2))


def test_equal_allocation_is_the_round_one_protocol(tmp_path: Path) -> None:
    sessions, search_id, spec = _run(tmp_path, allocation="equal",
                                     families=["relu", "tanh", "gelu", "elu", "silu", "snake"],
                                     trials=12, epochs=3)
    with sessions() as session:
        pops = repo.list_populations(session, search_id=search_id)
        budgets = repo.family_budgets(session, search_id=search_id, full_epochs=spec.epochs)
    assert all(p.rung is None and p.epochs is None for p in pops)
    assert {f: b["trials"] for f, b in budgets.items()} == {f: 2 for f in spec.families}
    assert all(b["epochs"] == 3 for b in budgets.values())


def _running(*families: list[str]) -> list[Any]:
    from types import SimpleNamespace

    return [SimpleNamespace(families=f) for f in families]


def test_a_population_is_asked_early_only_when_it_would_learn_little_from_the_running_ones() -> None:
    """The embedded coordinator asks the next population while others train only when it
    asks nothing (finalists), trains the race's fixed first-rung hyperparameters, or shares
    no family with them; a batch of the same family waits to learn from the last."""
    busy = _running(["relu", "prelu", "relu"])
    assert steps.may_ask_early("finalist", None, ["relu"], busy)
    assert steps.may_ask_early("search", 0, ["relu", "elu"], busy)
    assert steps.may_ask_early("search", 1, ["maxout"], busy)
    assert not steps.may_ask_early("search", 1, ["maxout", "prelu"], busy)
    assert not steps.may_ask_early("search", None, ["relu"], busy)  # equal budgets, same family
    assert not steps.may_ask_early("control", None, ["relu"], _running(["relu"]))
    assert steps.may_ask_early("search", None, ["relu"], [])
