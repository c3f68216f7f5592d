"""The equal-compute ReLU control arm (``control: relu``): its budget, its verdict, its rows."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from core.errors import InvalidInput
from search.control import (
    CONTROL_FINALIST_PHASE,
    CONTROL_PHASE,
    control_study_name,
    verdict,
    welch_p,
)
from search.coordinator import EmbeddedCoordinator, Progress
from search.coordinator.control import round_candidates
from search.protocol import build_leaderboard
from search.service import create_search
from search.spec import parse_spec
from store import repo
from store.db import init_db, make_engine, session_factory

SPEC = {"dataset": "iris", "architecture": "mlp:8", "families": ["relu", "prelu"],
        "trials": 6, "epochs": 4, "batch_size": 16, "population_size": 2, "finalist_seeds": 2,
        "pruner": "median", "seed": 5, "control": "relu"}


# --------------------------------------------------------------------------- the verdict


def test_welch_p_matches_scipy_and_handles_constant_seeds() -> None:
    from scipy import stats

    a, b = [0.91, 0.93, 0.92], [0.85, 0.88, 0.86]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([0.9, 0.9, 0.9], [0.9, 0.9, 0.9]) == 1.0  # scipy: NaN
    assert welch_p([0.9, 0.9], [0.8, 0.8]) == 0.0
    assert welch_p([0.9], [0.8, 0.7]) is None


def test_verdict_helped_did_not_help_hurt_and_inconclusive() -> None:
    helped = verdict([0.95, 0.96, 0.955], [0.90, 0.91, 0.905], metric="accuracy",
                     choice_family="rational")
    assert helped.code == "helped" and helped.p_value is not None and helped.p_value < 0.05
    assert helped.message.startswith("searching activations helped on this data (+0.050 test "
                                     "accuracy")
    assert "p=" in helped.message and helped.delta == pytest.approx(0.05)

    same = verdict([0.92, 0.95, 0.90], [0.91, 0.93, 0.92], metric="accuracy",
                   choice_family="gelu")
    assert same.code == "did_not_help" and same.p_value > 0.05
    assert same.message.startswith("searching activations did not help on this data")

    hurt = verdict([0.80, 0.81, 0.805], [0.90, 0.91, 0.905], metric="r2", choice_family="elu")
    assert hurt.code == "hurt" and hurt.message.startswith("searching activations hurt")
    assert "-0.100 test r2" in hurt.message

    # the search chose ReLU itself: searching activations did not help, whatever the seeds say
    relu = verdict([0.95, 0.96, 0.955], [0.90, 0.91, 0.905], metric="accuracy",
                   choice_family="relu")
    assert relu.code == "did_not_help" and "final choice is relu itself" in relu.message

    one = verdict([0.9], [0.8], metric="accuracy", choice_family="gelu")
    assert one.code == "inconclusive" and one.p_value is None
    assert verdict([], [0.8, 0.9], metric="accuracy", choice_family="gelu").code == "inconclusive"


def test_round_sizing_never_overshoots_by_a_population() -> None:
    # the first round: enough candidates for the target if none were pruned
    assert round_candidates(target=100, spent=0, epochs=10, k=4, trained=0) == 10
    assert round_candidates(target=100, spent=100, epochs=10, k=4, trained=10) == 0
    # pruning halved the cost: more candidates, but at most k - 1 beyond the unpruned need
    n = round_candidates(target=100, spent=50, epochs=10, k=4, trained=10)
    assert n == 5 + 3
    for target, spent, epochs, k, trained in [(97, 13, 7, 3, 9), (40, 39, 20, 8, 30),
                                              (1000, 1, 5, 64, 1)]:
        n = round_candidates(target=target, spent=spent, epochs=epochs, k=k, trained=trained)
        assert spent + n * epochs - target < k * epochs  # even if none is pruned
        assert spent + n * epochs >= target


def test_control_is_validated_with_clear_messages() -> None:
    base = {"dataset": "iris", "architecture": "mlp:8"}
    assert parse_spec({**base, "control": "ReLU"}).control == "relu"
    assert parse_spec(base).control is None
    with pytest.raises(InvalidInput, match="unknown control 'gelu'.*'relu'"):
        parse_spec({**base, "control": "gelu"})
    with pytest.raises(InvalidInput, match="control"):
        parse_spec({**base, "control": 3})
    module = {"kind": "module", "name": "Net", "slots": [8]}
    with pytest.raises(InvalidInput, match="control.*search_module"):
        parse_spec({**base, "architecture": module, "control": "relu"})


# --------------------------------------------------------------------------- a real search


@pytest.fixture(scope="module")
def control_search(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("control")
    url = f"sqlite:///{home / 'actsearch.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    with sessions.begin() as session:
        row = create_search(session=session, spec=parse_spec(SPEC), storage_url=url)
        search_id, study_name = row.id, row.study_name
    events: list[Progress] = []
    board = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                workers=1, threads=1, home=home,
                                progress=lambda p: events.append(Progress(**vars(p)))).run()
    yield {"url": url, "sessions": sessions, "search_id": search_id, "study_name": study_name,
           "board": board, "events": events}


def _epochs_by_phase(session: Any, search_id: int) -> dict[str, int]:
    """Candidate-epochs per phase counted from the epoch rows of each trial (not the helper)."""
    out: dict[str, int] = {}
    for t in repo.list_trials(session, search_id=search_id, limit=None):
        out[t.phase] = out.get(t.phase, 0) + len(repo.trial_epochs(session, trial_id=t.id))
    return out


def test_control_compute_equals_the_search_within_one_population(
        control_search: dict[str, Any]) -> None:
    with control_search["sessions"]() as session:
        search = repo.get_search(session, search_id=control_search["search_id"])
        assert search.state == "complete", search.error
        epochs = _epochs_by_phase(session, search.id)
        pops = repo.list_populations(session, search_id=search.id)
        assert epochs == repo.search_candidate_epochs(session, search_id=search.id)
    main = epochs["search"] + epochs["finalist"]
    control = epochs[CONTROL_PHASE] + epochs[CONTROL_FINALIST_PHASE]
    k = max(p.k for p in pops if p.phase == CONTROL_PHASE)
    assert k == 2  # the main search's K
    assert abs(control - main) <= k * SPEC["epochs"], (control, main, epochs)
    # its finalist re-trains on the same seeds as the main finalists
    assert all(p.state == "complete" for p in pops)
    assert [p.k for p in pops if p.phase == CONTROL_FINALIST_PHASE] == [SPEC["finalist_seeds"]]


def test_control_rows_stay_out_of_the_main_ranking_and_study(
        control_search: dict[str, Any]) -> None:
    board = control_search["board"]
    assert {r.family for r in board.rows} == {"relu", "prelu"}
    assert all(r.search_trials == 3 for r in board.rows)  # 6 trials, 2 families: no control in
    with control_search["sessions"]() as session:
        trials = repo.list_trials(session, search_id=control_search["search_id"], limit=None)
        finalist_seeds = {t.seed for t in trials if t.phase == "finalist"}
        control_seeds = {t.seed for t in trials if t.phase == CONTROL_FINALIST_PHASE}
        control_trials = [t for t in trials if t.phase == CONTROL_PHASE]
    assert control_seeds == finalist_seeds
    assert {t.family for t in control_trials} == {"relu"}
    assert all(t.study_name == control_study_name(control_search["study_name"])
               for t in control_trials)
    # the main study holds only the main search's trials; the control has its own study
    main = optuna.load_study(study_name=control_search["study_name"],
                             storage=control_search["url"])
    assert len(main.trials) == 6
    ctrl = optuna.load_study(study_name=control_study_name(control_search["study_name"]),
                             storage=control_search["url"])
    assert len(ctrl.trials) == len(control_trials)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ctrl.trials)
    assert {t.params["family"] for t in ctrl.trials} == {"relu"}
    # the ranking ignores the control's rows: the same board without them
    without = [t for t in trials if t.phase in ("search", "finalist")]
    again = build_leaderboard(without, board.metric)
    assert [(r.family, r.mean) for r in again.rows] == [(r.family, r.mean) for r in board.rows]
    assert again.control is None


def test_control_row_and_verdict_are_stored_with_best(control_search: dict[str, Any]) -> None:
    board = control_search["board"]
    c = board.control
    assert c is not None and c.family == "relu"
    assert c.n_seeds == SPEC["finalist_seeds"] and len(c.test_values) == SPEC["finalist_seeds"]
    assert c.test_mean is not None and 0 <= c.test_mean <= 1 and c.test_ci95 is not None
    assert c.verdict in ("helped", "did_not_help", "hurt")
    assert c.message.startswith("searching activations ")
    assert c.candidate_epochs and c.search_candidate_epochs
    with control_search["sessions"]() as session:
        best = repo.get_search(session, search_id=control_search["search_id"]).best
    stored = best["control"]
    for key in ("family", "mean", "ci95", "test_mean", "test_ci95"):
        assert key in stored
    assert stored["family"] == "relu" and stored["verdict"] == c.verdict
    assert stored["candidate_epochs"] == c.candidate_epochs
    assert math.isclose(stored["test_mean"], c.test_mean)
    # the final choice alone has a test score among the ranked rows
    assert board.winner.test_mean is not None
    assert all(r.test_mean is None for r in board.rows[1:])


def test_control_progress_is_reported(control_search: dict[str, Any]) -> None:
    events = control_search["events"]
    control = [e for e in events if e.phase == "control"]
    assert control, [e.phase for e in events]
    assert max(e.control_target for e in control) > 0
    assert control[-1].control_epochs >= control[0].control_epochs


def test_an_interrupted_control_resumes_and_trains_each_trial_once(tmp_path: Any) -> None:
    """Ctrl-C in the middle of the control arm: resumable, and the resumed control finishes once."""
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    spec = dict(SPEC, pruner="none", trials=4, seed=11)
    with sessions.begin() as session:
        row = create_search(session=session, spec=parse_spec(spec), storage_url=url)
        search_id, study_name = row.id, row.study_name

    def stop_mid_control(p: Progress) -> None:
        if p.phase == "control" and p.control_epochs > 0 and p.current.endswith("epoch 2"):
            raise KeyboardInterrupt("test: Ctrl-C in the control")

    with pytest.raises(KeyboardInterrupt):
        EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id, workers=1,
                            threads=1, home=tmp_path, progress=stop_mid_control).run()
    with sessions() as session:
        assert repo.get_search(session, search_id=search_id).state == "interrupted"
        pops = repo.list_populations(session, search_id=search_id)
        assert any(p.phase == CONTROL_PHASE and p.state == "pending" and p.trial_numbers
                   for p in pops)  # the one cut short keeps the trials it asked
    board = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                workers=1, threads=1, home=tmp_path).run()
    assert board.control is not None
    with sessions() as session:
        assert repo.get_search(session, search_id=search_id).state == "complete"
        trials = repo.list_trials(session, search_id=search_id, phase=CONTROL_PHASE, limit=None)
        epochs = _epochs_by_phase(session, search_id)
    numbers = [t.trial_number for t in trials]
    assert len(numbers) == len(set(numbers)), "a control trial was recorded twice"
    assert all(t.state == "complete" for t in trials)  # pruner none: every trial trained fully
    ctrl = optuna.load_study(study_name=control_study_name(study_name), storage=url)
    assert {t.number for t in ctrl.trials} == set(numbers)
    assert all(t.state == TrialState.COMPLETE for t in ctrl.trials)
    main = epochs["search"] + epochs["finalist"]
    control = epochs[CONTROL_PHASE] + epochs[CONTROL_FINALIST_PHASE]
    assert abs(control - main) <= 2 * spec["epochs"], epochs


def test_a_raced_search_of_mixed_populations_gets_an_equal_compute_control(tmp_path: Any) -> None:
    """The race (rungs at fewer epochs, mixed-family populations): the control still matches
    the candidate-epochs the search spent, and trains ReLU alone at the full epochs."""
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    spec = parse_spec({"dataset": "iris", "architecture": "mlp:8", "trials": 10, "epochs": 4,
                       "families": ["relu", "prelu", "gelu", "elu", "tanh"], "batch_size": 32,
                       "finalist_seeds": 2, "seed": 4, "control": "relu"})
    assert spec.racing
    with sessions.begin() as session:
        search_id = create_search(session=session, spec=spec, storage_url=url).id
    board = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                workers=1, threads=1, home=tmp_path).run()
    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        assert search.state == "complete", search.error
        epochs = _epochs_by_phase(session, search_id)
        pops = repo.list_populations(session, search_id=search_id)
    assert any(p.phase == "search" and p.rung == 1 for p in pops)  # it raced
    control_pops = [p for p in pops if p.phase == CONTROL_PHASE]
    assert all(p.family == "relu" and p.rung is None and p.epochs is None for p in control_pops)
    k = max(p.k for p in control_pops)
    main = epochs["search"] + epochs["finalist"]
    control = epochs[CONTROL_PHASE] + epochs[CONTROL_FINALIST_PHASE]
    assert abs(control - main) <= k * spec.epochs, epochs
    assert board.control is not None and board.control.candidate_epochs == control
    assert "control" not in {r.family for r in board.rows}
