"""A real search end to end in embedded mode: child training processes, SQLite, Optuna beside us."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.trial import TrialState

from search.coordinator import EmbeddedCoordinator, Progress
from search.protocol import build_leaderboard
from search.service import create_search
from search.spec import parse_spec
from store import repo
from store.db import init_db, make_engine, session_factory

SPEC = {"dataset": "iris", "architecture": "mlp:8", "families": ["relu", "rational"],
        "trials": 6, "epochs": 4, "batch_size": 16, "population_size": 2, "finalist_seeds": 3,
        "pruner": "median", "seed": 3}


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("embedded")
    url = f"sqlite:///{home / 'actsearch.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    with sessions.begin() as session:
        row = create_search(session=session, spec=parse_spec(SPEC), storage_url=url)
        search_id, study_name = row.id, row.study_name
    events: list[Progress] = []
    board = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                                workers=1, threads=1,
                                progress=lambda p: events.append(Progress(**vars(p)))).run()
    yield {"url": url, "sessions": sessions, "search_id": search_id, "study_name": study_name,
           "board": board, "events": events}


def test_search_completes_with_equal_budgets(finished_search: dict[str, Any]) -> None:
    with finished_search["sessions"]() as session:
        search = repo.get_search(session, search_id=finished_search["search_id"])
        assert search.state == "complete"
        assert search.best["family"] in ("relu", "rational")
        trials = repo.list_trials(session, search_id=search.id, phase="search", limit=None)
    per_family: dict[str, int] = {}
    for t in trials:
        per_family[t.family] = per_family.get(t.family, 0) + 1
    assert per_family == {"relu": 3, "rational": 3}  # 6 trials split evenly


def test_optuna_owns_every_trial_and_none_is_left_running(finished_search: dict[str, Any]) -> None:
    study = optuna.load_study(study_name=finished_search["study_name"],
                              storage=finished_search["url"])
    assert len(study.trials) == 6
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert {t.params["family"] for t in study.trials} == {"relu", "rational"}
    # every completed trial reported its per-epoch values (pruning works per candidate)
    for t in study.trials:
        assert t.intermediate_values, t.number


def test_leaderboard_has_finalists_on_three_seeds_and_one_test_score(
    finished_search: dict[str, Any],
) -> None:
    board = finished_search["board"]
    assert {r.family for r in board.rows} == {"relu", "rational"}
    assert all(r.n_seeds == 3 for r in board.rows)
    assert board.baseline is not None and board.baseline.family == "relu"
    assert board.winner.test_mean is not None
    assert all(r.test_mean is None for r in board.rows[1:])
    with finished_search["sessions"]() as session:
        trials = repo.list_trials(session, search_id=finished_search["search_id"], limit=None)
        again = build_leaderboard(trials, board.metric)
        assert [r.family for r in again.rows] == [r.family for r in board.rows]
        finalists = [t for t in trials if t.phase == "finalist"]
        assert len({t.seed for t in finalists if t.family == "relu"}) == 3
        # finalists keep their weights for export; search-phase trials do not need to
        state_dict, scaler, _ = repo.load_weights(session, trial_id=finalists[0].id)
        assert state_dict and len(scaler["mean"]) == 4


def test_rational_curves_and_preactivation_stats_are_stored(finished_search: dict[str, Any]) -> None:
    with finished_search["sessions"]() as session:
        trial = next(t for t in repo.list_trials(session, search_id=finished_search["search_id"],
                                                 family="rational", phase="search", limit=None)
                     if t.state == "complete")
        curves = repo.trial_curves(session, trial_id=trial.id)
        stats = repo.trial_preact_stats(session, trial_id=trial.id)
        epochs = repo.trial_epochs(session, trial_id=trial.id)
    recorded = sorted({c["epoch"] for c in curves})
    assert recorded[0] == 0 and recorded[-1] == 4 and len(recorded) >= 3
    first = curves[0]
    assert first["x"].dtype.name == "float32" and first["y"].shape[-1] == first["x"].shape[0]
    # the grid spans the observed pre-activation range of that layer and epoch
    stat = next(s for s in stats if s["layer"] == first["layer"] and s["epoch"] == first["epoch"])
    assert first["x"][0] <= stat["quantiles"]["0.01"] and first["x"][-1] >= stat["quantiles"]["0.99"]
    assert len(epochs) == 4 and all(0 <= e["val_metric"] <= 1 for e in epochs)


def test_progress_was_reported_live(finished_search: dict[str, Any]) -> None:
    events = finished_search["events"]
    assert events[0].done == 0 and events[-1].done == 6
    assert any(e.phase == "finalists" for e in events)
    assert [e.done for e in events] == sorted(e.done for e in events)


def _wsgi_get(app: Any, path: str) -> tuple[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = io.StringIO()
    status: list[str] = []
    body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
    return status[0], json.loads(body)


def test_optuna_dashboard_reads_the_study_unchanged(finished_search: dict[str, Any]) -> None:
    import optuna_dashboard  # a dev dependency: its absence is a failure, not a skip
    app = optuna_dashboard.wsgi(finished_search["url"])
    status, studies = _wsgi_get(app, "/api/studies")
    assert status.startswith("200")
    summary = next(s for s in studies["study_summaries"]
                   if s["study_name"] == finished_search["study_name"])
    status, detail = _wsgi_get(app, f"/api/studies/{summary['study_id']}")
    assert status.startswith("200")
    assert len(detail["trials"]) == 6


def _pythonpath() -> dict[str, str]:
    """The caller's PYTHONPATH, so the CLI subprocess runs this checkout's code."""
    import os

    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


def test_cli_search_runs_end_to_end_and_prints_the_leaderboard(tmp_path: Path) -> None:
    import subprocess

    env = {"ACTSEARCH_HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent),
           "OMP_NUM_THREADS": "1", **_pythonpath()}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "actsearch"), "search", "--dataset", "wine",
         "--arch", "mlp:8", "--families", "gelu", "--trials", "4", "--epochs", "3", "--json"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stderr
    board = json.loads(out.stdout)  # stdout is one JSON document (progress is on stderr)
    assert {r["family"] for r in board["rows"]} == {"relu", "gelu"}
    assert (tmp_path / "actsearch.db").exists()
    timings = board["timings"]  # seconds from the command's start
    assert 0 < timings["first_population_s"] <= timings["first_epoch_s"] <= timings["total_s"]


_COORDINATOR_ONLY = """
import json, sys
from search.coordinator import EmbeddedCoordinator
from search.service import create_search
from search.spec import parse_spec
from store.db import init_db, make_engine, session_factory
url = "sqlite:///" + sys.argv[1]
init_db(url)
sessions = session_factory(make_engine(url))
spec = {"dataset": "digits", "architecture": "mlp:8", "families": ["relu", "rational"],
        "trials": 4, "epochs": 2, "batch_size": 64, "finalist_seeds": 2, "control": "relu",
        "seed": 1}
with sessions.begin() as session:
    search_id = create_search(session=session, spec=parse_spec(spec), storage_url=url).id
board = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id,
                            workers=1, threads=1).run()
print(json.dumps({"torch": "torch" in sys.modules, "scipy.stats": "scipy.stats" in sys.modules,
                  "test_mean": board.winner.test_mean,
                  "control_test": board.control.test_mean if board.control else None}))
"""


def test_the_coordinator_never_imports_torch_its_child_scores_the_test_split(
        tmp_path: Path) -> None:
    """The embedded coordinator (a fresh interpreter) runs a whole search, control arm
    included, without importing torch or scipy.stats: results unpickle from torch-free
    records, the final choice's and the control's test metrics come from the warm child,
    intervals from scipy.special. Each import was seconds of a small search's command."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _COORDINATOR_ONLY, str(tmp_path / "a.db")],
                         capture_output=True, text=True, timeout=300, check=False,
                         env={"PATH": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1",
                              "ACTSEARCH_HOME": str(tmp_path), **_pythonpath()})
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["torch"] is False and seen["scipy.stats"] is False, seen
    assert seen["test_mean"] is not None and 0.0 <= seen["test_mean"] <= 1.0
    assert seen["control_test"] is not None and 0.0 <= seen["control_test"] <= 1.0


def test_a_killed_warm_trainer_fails_only_its_population_and_is_replaced(tmp_path: Path) -> None:
    """A warm trainer (a pool that outlives the search, as ``serve``'s runner keeps)
    SIGKILLed mid-population: that population's trials fail, a fresh process replaces
    it (sent the data again), the search completes, and the pool stays usable."""
    import os
    import signal

    from search.coordinator import TrainerPool

    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    spec = dict(SPEC, families=["relu"], trials=4, population_size=2, finalist_seeds=2)
    with sessions.begin() as session:
        row = create_search(session=session, spec=parse_spec(spec), storage_url=url)
    killed: list[int] = []

    def kill_first_population(progress: Progress) -> None:
        child = pool.children[0] if pool.children else None
        if not killed and child is not None and progress.current.endswith("epoch 1"):
            killed.append(child.pid)
            os.kill(child.pid, signal.SIGKILL)

    with TrainerPool(1, threads=1) as pool:
        coordinator = EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=row.id,
                                          pool=pool, progress=kill_first_population)
        board = coordinator.run()
        assert killed
        assert pool.children[0].alive() and pool.pids() != killed  # replaced, kept warm
        assert pool.stats.started == 2 and pool.stats.data_sent == 2  # the new one got the data
        assert coordinator.timings["first_epoch_s"] <= coordinator.timings["total_s"]
    study = optuna.load_study(study_name=row.study_name, storage=url)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    assert states.count(TrialState.FAIL) == 2  # the killed population's two candidates
    assert any(s == TrialState.COMPLETE for s in states)
    assert board.winner is not None  # the surviving population's best still got its finalists
    with sessions() as session:
        search = repo.get_search(session, search_id=row.id)
        assert search.state == "complete"
        failed = [t for t in repo.list_trials(session, search_id=row.id, limit=None)
                  if t.state == "failed"]
    assert len(failed) == 2 and all("training process died" in (t.error or "") for t in failed)


def test_ctrl_c_leaves_a_resumable_search_and_resume_finishes_it_once(tmp_path: Path) -> None:
    """Ctrl-C of `actsearch search` says how to resume; `actsearch resume` trains each trial once."""
    import signal
    import sqlite3
    import subprocess
    import time

    from tests.utils.accounting import accounted_once

    env = {"ACTSEARCH_HOME": str(tmp_path), "PATH": str(Path(sys.executable).parent),
           "OMP_NUM_THREADS": "1", **_pythonpath()}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"finalist_seeds": 2, "pruner": "none", "population_size": 2}))
    cmd = [str(Path(sys.executable).parent / "actsearch"), "search", "--dataset", "digits",
           "--arch", "mlp:8", "--families", "tanh", "--trials", "8", "--epochs", "20",
           "--spec", str(spec)]
    # a shell may start us with SIGINT ignored; a terminal's Ctrl-C needs the default
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def complete_populations() -> int:
        try:
            with sqlite3.connect(tmp_path / "actsearch.db") as db:
                return int(db.execute("select count(*) from actsearch_populations "
                                      "where state = 'complete'").fetchone()[0])
        except sqlite3.Error:
            return 0

    deadline = time.monotonic() + 180
    while complete_populations() < 1 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "actsearch resume 1" in err and "Traceback" not in err
    with sqlite3.connect(tmp_path / "actsearch.db") as db:
        assert db.execute("select state from actsearch_searches").fetchone()[0] == "interrupted"
        assert not db.execute("select count(*) from actsearch_populations "
                              "where state = 'running'").fetchone()[0]

    shown = subprocess.run([cmd[0], "show", "1"], env=env, capture_output=True, text=True,
                           timeout=120)
    assert "state=interrupted" in shown.stdout and "actsearch resume 1" in shown.stdout

    resumed = subprocess.run([cmd[0], "resume", "1", "--json"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["state"] == "complete"
    assert accounted_once(tmp_path, 1) == {"relu": 4, "tanh": 4}
