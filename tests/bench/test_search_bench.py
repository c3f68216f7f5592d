"""bench/search.py's own arithmetic and plumbing, without running a real search.

The ``--quick --workloads small`` smoke run takes ~1 minute on a quiet 2-core machine
and several on a shared one (two ``actsearch search`` processes, 16 populations in the
default one), too long for the unit tier. So: the breakdown is checked on synthetic
databases of the current shape, of the shape before migration 0006 and with analysis
timestamps; ``run_actsearch`` against a stand-in CLI process; the loop on a tiny set;
and that the loop is given the very rows actsearch trains on.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bench import search as bench_search
from bench.optuna_loop import ACTIVATIONS, run_loop
from bench.search import breakdown, compact, population_label, read_db, union_length
from bench.workloads import WORKLOADS, generate, load_splits, teacher_set
from store.tables import (
    Artifact,
    Base,
    DatasetRow,
    EpochMetricRow,
    PopulationRow,
    SearchRow,
    TrialRow,
)

T0 = 1_800_000_000.0  # the command's start, POSIX seconds


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, timezone.utc)


# Populations: (phase, family, families, started, finished,
#               trials: [(value, state, epoch elapsed_s...)])
POPULATIONS: list[tuple[str, str, list[str] | None, float, float, list[tuple[Any, ...]]]] = [
    ("search", "relu", None, 2.0, 10.0, [(0.80, "complete", 1.0, 2.0, 3.0),
                                         (0.97, "pruned", 1.2, 2.0)]),
    ("search", "mixed", ["relu", "elu", "elu", "gelu"], 10.5, 20.0,
     [(0.85, "complete", 2.0, 4.0), (0.95, "complete", 2.1, 4.0),
      (0.60, "pruned", 2.0), (0.70, "complete", 2.2, 3.9)]),
    ("finalist", "elu", None, 21.0, 25.0, [(0.91, "complete", 1.0, 3.0),
                                           (0.92, "complete", 1.0, 3.0),
                                           (0.93, "complete", 1.1, 2.9)]),
]


def _fill(session: Session, *, analysis: bool = True) -> None:
    art = Artifact(kind="dataset", sha256="0" * 64, size=0, data=b"")
    session.add(art)
    session.flush()
    ds = DatasetRow(name="d", version=1, content_hash="0" * 64, source="upload",
                    task="classification", n_rows=10, n_features=2, n_classes=2,
                    artifact_id=art.id)
    session.add(ds)
    session.flush()
    search = SearchRow(name="s", study_name="st", dataset_id=ds.id, spec={}, state="complete",
                       started_at=at(1.0), finished_at=at(26.0),
                       analysis_state="done" if analysis else None)
    session.add(search)
    session.flush()
    number = 0
    for phase, family, families, start, end, trials in POPULATIONS:
        pop = PopulationRow(search_id=search.id, family=family, structural={},
                            k=len(families) if families else len(trials), phase=phase,
                            state="complete", started_at=at(start), finished_at=at(end),
                            families=families)
        session.add(pop)
        session.flush()
        for value, state, *elapsed in trials:
            trial = TrialRow(search_id=search.id, population_id=pop.id, study_name="st",
                             trial_number=number, phase=phase, family=family, family_params={},
                             hparams={}, seed=number, state=state, value=value,
                             started_at=at(start), finished_at=at(end), device="cpu")
            number += 1
            session.add(trial)
            session.flush()
            for epoch, e in enumerate(elapsed, start=1):
                session.add(EpochMetricRow(trial_id=trial.id, epoch=epoch, val_metric=value,
                                           elapsed_s=e))


@pytest.fixture
def synthetic_db(tmp_path: Path) -> Path:
    path = tmp_path / "actsearch.db"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        _fill(session)
    engine.dispose()
    return path


def test_breakdown_of_a_synthetic_search(synthetic_db: Path) -> None:
    snap = read_db(synthetic_db)
    b = breakdown(snap, t0=T0, end=T0 + 27.0, target=0.92, exit_at=T0 + 28.0)
    assert b["wall_s"] == pytest.approx(27.0)
    assert b["exit_s"] == pytest.approx(28.0)
    assert b["startup_s"] == pytest.approx(2.0)
    # first population: first epoch at elapsed 1.0, last at 3.0, recorded at 10: 10 - 2 = 8
    assert b["first_epoch_s"] == pytest.approx(8.0)
    assert b["first_epoch_lo_s"] == pytest.approx(3.0)  # its claim (2) + 1.0
    assert b["first_training_s"] == pytest.approx(7.0)
    assert b["populations_s"] == pytest.approx(8.0 + 9.5 + 4.0)
    assert b["training_s"] == pytest.approx(3.0 + 4.0 + 3.0)
    assert b["analysis_state"] == "done"
    assert b["analysis_s"] is None  # a state, no timestamps
    assert b["coordination_s"] == pytest.approx(27.0 - 2.0 - 10.0)
    assert b["tail_s"] == pytest.approx(2.0)
    assert b["k_search"] == [2, 4] and b["k_finalist"] == [3] and b["k_max"] == 4
    assert b["mixed_populations"] == 1
    assert b["populations"][1]["label"] == "mixed(relu 1, elu 2, gelu 1)"
    assert b["best_value"] == pytest.approx(0.95)
    assert b["best_search_value"] == pytest.approx(0.95)
    assert b["time_to_own_best_s"] == pytest.approx(20.0)
    # 0.95 (search, recorded at 20) is the first trial at least 0.92
    assert b["time_to_quality_s"] == pytest.approx(20.0)
    assert breakdown(snap, t0=T0, end=T0 + 27.0, target=0.99)["time_to_quality_s"] is None
    # a pruned trial's value (0.97, recorded at 10) never counts as held
    assert breakdown(snap, t0=T0, end=T0 + 27.0, target=0.96)["time_to_quality_s"] is None
    assert breakdown(snap, t0=T0, end=T0 + 27.0, target=0.75)["time_to_quality_s"] \
        == pytest.approx(10.0)
    assert b["trials"] == {"complete": 7, "pruned": 2, "failed": 0, "running": 0}
    assert b["devices"] == ["cpu"]


def test_breakdown_counts_analysis_timestamps_where_the_database_has_them(
        synthetic_db: Path) -> None:
    con = sqlite3.connect(synthetic_db)
    for col in ("analysis_started_at", "analysis_finished_at"):
        con.execute(f"ALTER TABLE actsearch_searches ADD COLUMN {col} DATETIME")
    con.execute("UPDATE actsearch_searches SET analysis_started_at = ?, analysis_finished_at = ?",
                (at(25.5).strftime("%Y-%m-%d %H:%M:%S.%f"),
                 at(29.5).strftime("%Y-%m-%d %H:%M:%S.%f")))
    con.commit()
    con.close()
    b = breakdown(read_db(synthetic_db), t0=T0, end=T0 + 27.0)
    assert b["analysis_s"] == pytest.approx(4.0)
    assert b["analysis_in_wall_s"] == pytest.approx(1.5)  # the rest ran after the leaderboard
    assert b["coordination_s"] == pytest.approx(27.0 - 2.0 - 10.0 - 1.5)


OLD_SCHEMA = """
CREATE TABLE actsearch_searches (id INTEGER PRIMARY KEY, name TEXT, study_name TEXT,
    dataset_id INTEGER, spec JSON, state TEXT, started_at DATETIME, finished_at DATETIME);
CREATE TABLE actsearch_populations (id INTEGER PRIMARY KEY, search_id INTEGER, family TEXT,
    structural JSON, k INTEGER, phase TEXT, state TEXT, started_at DATETIME,
    finished_at DATETIME);
CREATE TABLE actsearch_trials (id INTEGER PRIMARY KEY, search_id INTEGER, population_id INTEGER,
    trial_number INTEGER, phase TEXT, family TEXT, state TEXT, value FLOAT,
    finished_at DATETIME, device TEXT);
CREATE TABLE actsearch_epoch_metrics (id INTEGER PRIMARY KEY, trial_id INTEGER, epoch INTEGER,
    val_metric FLOAT, elapsed_s FLOAT);
"""


def test_breakdown_of_a_database_from_before_mixed_populations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(OLD_SCHEMA)
    stamp = at(4.0).strftime("%Y-%m-%d %H:%M:%S.%f")
    done = at(9.0).strftime("%Y-%m-%d %H:%M:%S.%f")
    con.execute("INSERT INTO actsearch_searches VALUES (1, 's', 'st', 1, '{}', 'complete', ?, ?)",
                (stamp, done))
    con.execute("INSERT INTO actsearch_populations VALUES (1, 1, 'relu', '{}', 2, 'search', "
                "'complete', ?, ?)", (stamp, done))
    for i, value in enumerate((0.5, 0.6), start=1):
        con.execute("INSERT INTO actsearch_trials VALUES (?, 1, 1, ?, 'search', 'relu', "
                    "'complete', ?, ?, 'cpu')", (i, i - 1, value, done))
        con.execute("INSERT INTO actsearch_epoch_metrics VALUES (?, ?, 1, ?, 0.5)",
                    (2 * i, i, value))
        con.execute("INSERT INTO actsearch_epoch_metrics VALUES (?, ?, 2, ?, 1.5)",
                    (2 * i + 1, i, value))
    con.commit()
    con.close()
    b = breakdown(read_db(path), t0=T0, end=T0 + 10.0, target=0.55)
    assert b["analysis_state"] is None and b["analysis_s"] is None
    assert b["populations"][0]["label"] == "relu" and b["mixed_populations"] == 0
    assert b["k_search"] == [2] and b["k_finalist"] == []
    assert b["startup_s"] == pytest.approx(4.0)
    assert b["first_epoch_s"] == pytest.approx(9.0 - 1.0)
    assert b["training_s"] == pytest.approx(1.5)
    assert b["time_to_quality_s"] == pytest.approx(9.0)


def test_small_helpers() -> None:
    assert union_length([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == pytest.approx(4.0)
    assert union_length([]) == 0.0
    assert compact([32, 32, 32, 16]) == "32x3,16"
    assert compact([]) == "-"
    assert population_label({"family": "relu", "k": 3, "families": None}) == "relu"
    assert population_label({"family": "mixed", "k": 2, "families": ["relu", "relu"]}) \
        == "mixed(relu 2)"


# --------------------------------------------------------------------------- the subprocess
FAKE_CLI = """
import json, os, shutil, sys, time
home = os.environ["ACTSEARCH_HOME"]
if os.environ.get("FAKE_FAIL"):
    print("something broke", file=sys.stderr)
    sys.exit(3)
shutil.copy(os.environ["FAKE_DB"], os.path.join(home, "actsearch.db"))
print("not json", flush=True)
time.sleep(0.3)
print(json.dumps({"search_id": 1, "state": "complete", "metric": "accuracy",
                  "rows": [{"family": "elu", "mean": 0.92, "ci95": 0.01, "n_seeds": 3}]}),
      flush=True)
time.sleep(0.5)  # the process outlives the leaderboard: wall time stops at the board
"""


def test_run_actsearch_times_the_process_to_its_leaderboard(
        synthetic_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "fake_actsearch.py"
    script.write_text(FAKE_CLI)
    monkeypatch.setattr(bench_search, "actsearch_command", lambda: [sys.executable, str(script)])
    monkeypatch.setenv("FAKE_DB", str(synthetic_db))
    npz = tmp_path / "d.npz"
    np.savez(npz, X=np.zeros((4, 2), np.float32), y=np.zeros(4, np.int64))
    r = bench_search.run_actsearch(npz, arch="mlp:8", trials=4, epochs=2, batch_size=16,
                                   families=["relu"], workdir=tmp_path / "work", target=0.9)
    assert 0.3 <= r["wall_s"] < r["exit_s"]
    assert r["exit_s"] - r["wall_s"] >= 0.4
    assert r["winner"]["family"] == "elu" and r["winner"]["mean"] == 0.92
    assert r["spec"]["finalist_seeds"] == 3 and r["spec"]["families"] == ["relu"]
    assert r["breakdown"]["k_search"] == [2, 4]
    assert not list((tmp_path / "work").iterdir())  # the fresh home is removed

    monkeypatch.setenv("FAKE_FAIL", "1")
    with pytest.raises(RuntimeError, match="exited 3") as failed:
        bench_search.run_actsearch(npz, arch="mlp:8", trials=4, epochs=2, batch_size=16,
                                   families=None, workdir=tmp_path / "work")
    assert "something broke" in str(failed.value)


# --------------------------------------------------------------------------- data and loop
def test_workload_data_is_deterministic_and_as_described() -> None:
    w = WORKLOADS["small"]
    X, y = generate(w)
    X2, y2 = generate(w)
    assert X.shape == (3000, 12) and X.dtype == np.float32
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    counts = np.bincount(y, minlength=4)
    assert len(counts) == 4 and counts.min() > 0.15 * len(y)  # near-balanced classes


def test_the_loop_sees_the_rows_actsearch_trains_on(tmp_path: Path) -> None:
    from search.service import create_search, prepare_data
    from search.spec import parse_spec
    from store.db import init_db, make_engine, session_factory

    X, y = teacher_set(300, 6, 8, 3, seed=5)
    npz = tmp_path / "t.npz"
    np.savez(npz, X=X, y=y)
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    init_db(url)
    sessions = session_factory(make_engine(url))
    spec = parse_spec({"dataset": str(npz), "label": "y", "architecture": "mlp:8"})
    with sessions.begin() as session:
        row = create_search(session=session, spec=spec, storage_url=url)
        prepared = prepare_data(session, dataset_id=row.dataset_id, spec=spec)
    mine = load_splits(npz, seed=spec.seed, val_fraction=spec.val_fraction,
                       test_fraction=spec.test_fraction)
    theirs = prepared.splits
    for name in ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test", "idx_val"):
        np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), err_msg=name)


@pytest.fixture
def one_thread() -> Any:
    """One torch thread: two contending threads on a shared 2-core machine run tiny steps
    ~10x slower (OpenMP barriers), which this test does not measure."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_run_loop_on_a_tiny_set(one_thread: None) -> None:
    X, y = teacher_set(400, 6, 8, 3, seed=1)
    tr, va, te = slice(0, 280), slice(280, 340), slice(340, 400)
    r = run_loop(X[tr], y[tr], X[va], y[va], hidden=[16], trials=5, epochs=3, batch_size=64,
                 task="classification", seed=0, X_test=X[te], y_test=y[te])
    assert len(r.trials) == 5 and r.metric == "accuracy"
    complete = [t.value for t in r.trials if t.state == "complete"]
    assert complete and r.best_value == max(complete)
    assert r.time_to_best_s is not None and 0 < r.time_to_best_s <= r.wall_s
    assert r.time_to_best_epoch_s is not None and r.time_to_best_epoch_s <= r.time_to_best_s
    assert r.best_params["activation"] in ACTIVATIONS
    assert r.test_value is not None and 0.0 <= r.test_value <= 1.0
    assert r.candidate_epochs == sum(t.epochs for t in r.trials)
    json.dumps(r.as_dict())

    target = (X[:, 0] - 0.5 * X[:, 1]).astype(np.float32)
    reg = run_loop(X[tr], target[tr], X[va], target[va], hidden=[16], trials=2, epochs=2,
                   batch_size=64, task="regression", activations=["relu", "tanh"])
    assert reg.metric == "r2" and reg.best_value is not None and math.isfinite(reg.best_value)
    with pytest.raises(ValueError, match="unknown activations"):
        run_loop(X[tr], y[tr], X[va], y[va], hidden=[4], trials=1, epochs=1, batch_size=64,
                 task="classification", activations=["prelu"])


def test_ceiling_is_the_inverse_of_the_loops_share_of_peak(one_thread: None) -> None:
    X, y = teacher_set(300, 12, 8, 4)
    c = bench_search.measure_ceiling(X, y, hidden=[64, 64], n_out=4, task="classification",
                                     batch=128, device="cpu", peak=1e11, steps=10)
    assert c["layers"] == [12, 64, 64, 4]
    assert c["step_flops"] == 3 * 2 * 128 * (12 * 64 + 64 * 64 + 64 * 4)
    assert c["peak_fraction"] == pytest.approx(c["step_flops"] / c["step_s"] / 1e11)
    assert c["max_speedup"] == pytest.approx(1 / c["peak_fraction"])
