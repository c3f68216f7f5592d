"""store.repo: datasets, searches, populations, trials and their per-epoch data, weights."""

from __future__ import annotations

import io
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidInput, NotFound
from store import repo
from store.artifacts import put_artifact
from store.tables import (
    Artifact,
    CurveRow,
    DatasetRow,
    EpochMetricRow,
    SearchRow,
    TrialRow,
    WeightsRow,
)

META: dict[str, Any] = {
    "task": "classification",
    "n_rows": 10,
    "n_features": 3,
    "n_classes": 2,
    "schema": {"features": ["a", "b", "c"], "label": "y", "classes": ["no", "yes"]},
}


def _search(session: Session, study: str = "study-1") -> SearchRow:
    ds = repo.add_dataset(session, name="iris", data_bytes=b"a,b,c,y\n", meta=META)
    return repo.create_search(
        session, name="s", study_name=study, dataset_id=ds.id, spec={"budget": {"trials": 4}}
    )


def _trial(session: Session, search: SearchRow, number: int, **kw: Any) -> TrialRow:
    return repo.add_trial(
        session,
        search_id=search.id,
        family=kw.pop("family", "relu"),
        family_params={},
        hparams={"lr": np.float64(1e-3)},
        seed=kw.pop("seed", 0),
        trial_number=number,
        **kw,
    )


# ---------------------------------------------------------------- datasets


def test_dataset_versions(session: Session) -> None:
    v1 = repo.add_dataset(session, name="iris", data_bytes=b"one", meta=META, owner="ann")
    same = repo.add_dataset(session, name="iris", data_bytes=b"one", meta=META, owner="ann")
    v2 = repo.add_dataset(session, name="iris", data_bytes=b"two", meta=META, owner="ann")
    other = repo.add_dataset(session, name="wine", data_bytes=b"one", meta=META)
    session.commit()
    assert same.id == v1.id and (v1.version, v2.version, other.version) == (1, 2, 1)
    assert other.artifact_id == v1.artifact_id  # one blob for identical content
    assert repo.latest_dataset(session, name="iris").id == v2.id
    assert repo.get_dataset(session, dataset_id=v1.id).content_hash == v1.content_hash
    assert repo.dataset_bytes(session, dataset_id=v1.id) == b"one"  # old version kept
    assert [d.version for d in repo.list_datasets(session, name="iris")] == [2, 1]
    latest = repo.list_datasets(session, latest_only=True)
    assert [(d.name, d.version) for d in latest] == [("iris", 2), ("wine", 1)]
    assert [d.id for d in repo.list_datasets(session, owner="ann")] == [v2.id, v1.id]
    assert v1.schema == META["schema"] and v1.source == "upload"


def test_same_content_after_a_newer_version_is_a_new_version(session: Session) -> None:
    repo.add_dataset(session, name="d", data_bytes=b"one", meta=META)
    repo.add_dataset(session, name="d", data_bytes=b"two", meta=META)
    v3 = repo.add_dataset(session, name="d", data_bytes=b"one", meta=META)
    assert v3.version == 3


def test_same_content_with_other_meta_is_a_new_version(session: Session) -> None:
    v1 = repo.add_dataset(session, name="d", data_bytes=b"one", meta=META)
    meta = {**META, "schema": {**META["schema"], "label": "b"}}
    v2 = repo.add_dataset(session, name="d", data_bytes=b"one", meta=meta)
    assert v2.version == 2 and v2.artifact_id == v1.artifact_id


def test_caller_content_hash_and_explicit_versions(session: Session) -> None:
    """npz bytes carry timestamps; the caller's hash of the arrays decides identity."""
    meta = {**META, "content_hash": "f" * 64}
    v1 = repo.add_dataset(session, name="d", data_bytes=b"zip-at-10:00", meta=meta)
    same = repo.add_dataset(session, name="d", data_bytes=b"zip-at-10:01", meta=meta)
    assert same.id == v1.id and v1.content_hash == "f" * 64
    repo.add_dataset(session, name="d", data_bytes=b"other", meta=META)
    assert repo.get_dataset_version(session, name="d", version=1).id == v1.id
    with pytest.raises(NotFound, match="dataset 'd' has no version 3"):
        repo.get_dataset_version(session, name="d", version=3)


def test_dataset_meta_is_validated(session: Session) -> None:
    with pytest.raises(InvalidInput, match="unknown dataset meta keys"):
        repo.add_dataset(session, name="d", data_bytes=b"x", meta={**META, "labels": 1})
    with pytest.raises(InvalidInput, match="missing"):
        repo.add_dataset(session, name="d", data_bytes=b"x", meta={"task": "regression"})
    with pytest.raises(InvalidInput, match="dataset source"):
        repo.add_dataset(session, name="d", data_bytes=b"x", meta={**META, "source": "web"})


def test_dataset_in_artifact_dir(session: Session, tmp_path: Path) -> None:
    row = repo.add_dataset(
        session, name="d", data_bytes=b"csv", meta=META, artifact_dir=tmp_path / "art"
    )
    assert repo.dataset_bytes(session, dataset_id=row.id) == b"csv"
    assert any((tmp_path / "art").rglob(row.content_hash))


# ---------------------------------------------------------------- not found


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: repo.get_dataset(s, dataset_id=7), "dataset 7 not found"),
        (lambda s: repo.latest_dataset(s, name="nope"), "no dataset named 'nope'"),
        (lambda s: repo.get_search(s, search_id=7), "search 7 not found"),
        (lambda s: repo.get_search_by_study(s, study_name="x"), "no search for study 'x'"),
        (lambda s: repo.get_trial(s, trial_id=7), "trial 7 not found"),
        (lambda s: repo.get_population(s, population_id=7), "population 7 not found"),
        (lambda s: repo.trial_curves(s, trial_id=7), "trial 7 not found"),
        (lambda s: repo.trial_epochs(s, trial_id=7), "trial 7 not found"),
        (lambda s: repo.load_weights(s, trial_id=7), "trial 7 not found"),
        (lambda s: repo.set_search_state(s, search_id=7, state="running"), "search 7 not found"),
        (lambda s: repo.finish_trial(s, trial_id=7, state="complete"), "trial 7 not found"),
        (
            lambda s: repo.create_search(s, name="n", study_name="x", dataset_id=7, spec={}),
            "dataset 7 not found",
        ),
        (
            lambda s: repo.find_trial(s, study_name="x", trial_number=3),
            "no search trial 3 in study 'x'",
        ),
    ],
)
def test_not_found_messages(session: Session, call: Any, message: str) -> None:
    with pytest.raises(NotFound) as info:
        call(session)
    assert info.value.detail == message and info.value.status_code == 404


def test_weights_not_saved_yet(session: Session) -> None:
    trial = _trial(session, _search(session), 0)
    with pytest.raises(NotFound, match=f"trial {trial.id} has no saved weights"):
        repo.load_weights(session, trial_id=trial.id)


# ---------------------------------------------------------------- searches


def test_search_lifecycle(session: Session) -> None:
    search = _search(session)
    assert search.state == "pending" and search.started_at is None
    with pytest.raises(Conflict, match="already used"):
        repo.create_search(
            session, name="t", study_name="study-1", dataset_id=search.dataset_id, spec={}
        )
    repo.set_search_state(session, search_id=search.id, state="running")
    assert search.started_at is not None
    repo.set_search_state(session, search_id=search.id, state="finalizing")
    with pytest.raises(Conflict, match="cannot become running"):
        repo.set_search_state(session, search_id=search.id, state="running")
    best = {"trial_id": 1, "value": np.float32(0.5), "nan": float("nan")}
    repo.set_search_state(session, search_id=search.id, state="complete", best=best)
    assert search.finished_at is not None and search.best == {
        "trial_id": 1,
        "value": 0.5,
        "nan": None,
    }
    with pytest.raises(Conflict, match="is complete"):
        repo.set_search_state(session, search_id=search.id, state="cancelled")
    with pytest.raises(InvalidInput, match="unknown search state"):
        repo.set_search_state(session, search_id=search.id, state="done")
    session.commit()
    assert repo.get_search_by_study(session, study_name="study-1").id == search.id


def test_list_and_count_searches(session: Session) -> None:
    a = _search(session, "a")
    b = repo.create_search(session, name="b", study_name="b", dataset_id=a.dataset_id, spec={})
    repo.set_search_state(session, search_id=b.id, state="cancelled")
    session.commit()
    assert [s.id for s in repo.list_searches(session)] == [b.id, a.id]
    assert [s.id for s in repo.list_searches(session, state="pending")] == [a.id]
    assert repo.count_searches(session, dataset_id=a.dataset_id) == 2
    assert repo.list_searches(session, dataset_id=a.dataset_id + 1) == []
    assert [s.id for s in repo.list_searches(session, limit=1, offset=1)] == [a.id]


# ---------------------------------------------------------------- populations


def test_population_attempts_heartbeat_and_stale(session: Session) -> None:
    search = _search(session)
    pop = repo.add_population(
        session, search_id=search.id, family="snake", structural={"hidden": [8]}, k=4
    )
    assert (pop.state, pop.attempts, pop.phase) == ("pending", 0, "search")
    repo.set_population_state(session, population_id=pop.id, state="running", worker="w1")
    assert pop.attempts == 1 and pop.heartbeat_at is not None and pop.worker == "w1"
    beat = repo.heartbeat_population(session, population_id=pop.id)
    assert repo.stale_populations(session, older_than_s=60) == []
    later = beat + timedelta(seconds=61)
    assert [p.id for p in repo.stale_populations(session, older_than_s=60, now=later)] == [pop.id]
    repo.set_population_state(session, population_id=pop.id, state="pending")  # re-enqueued
    repo.set_population_state(session, population_id=pop.id, state="running")
    repo.set_population_state(session, population_id=pop.id, state="complete")
    assert pop.attempts == 2 and pop.finished_at is not None
    with pytest.raises(Conflict):
        repo.set_population_state(session, population_id=pop.id, state="running")
    assert [p.id for p in repo.list_populations(session, search_id=search.id)] == [pop.id]
    with pytest.raises(InvalidInput):
        repo.add_population(session, search_id=search.id, family="relu", structural={}, k=0)


# ---------------------------------------------------------------- trials


def test_trial_add_finish_find(session: Session) -> None:
    search = _search(session)
    pop = repo.add_population(session, search_id=search.id, family="relu", structural={}, k=2)
    trial = _trial(session, search, 3, population_id=pop.id)
    assert (
        trial.study_name == "study-1" and trial.state == "running" and trial.hparams == {"lr": 1e-3}
    )
    repo.finish_trial(
        session,
        trial_id=trial.id,
        state="complete",
        value=0.9,
        best_value=0.91,
        n_params=1234,
        flops=10**12,
        device="cpu",
        duration_s=1.5,
    )
    assert (trial.value, trial.flops, trial.finished_at is not None) == (0.9, 10**12, True)
    repo.set_trial_test_value(session, trial_id=trial.id, test_value=0.88)
    session.commit()
    assert repo.find_trial(session, study_name="study-1", trial_number=3).id == trial.id
    with pytest.raises(InvalidInput, match="final state"):
        repo.finish_trial(session, trial_id=trial.id, state="running")
    rerun = _trial(session, search, 3, phase="finalist", seed=1, source_trial_number=3)
    assert (
        repo.find_trial(session, study_name="study-1", trial_number=3, phase="finalist").id
        == rerun.id
    )


def test_add_trial_can_record_a_finished_trial(session: Session) -> None:
    search = _search(session)
    row = repo.add_trial(
        session,
        search_id=search.id,
        family="gelu",
        family_params={},
        hparams={},
        seed=2,
        trial_number=5,
        state="pruned",
        value=float("nan"),
        best_value=np.float32(0.5),
        flops=np.int64(7),
        device="cuda:0",
        duration_s=1.0,
    )
    assert (row.state, row.value, row.best_value, row.flops) == ("pruned", None, 0.5, 7)
    assert row.finished_at is not None and row.started_at is not None
    with pytest.raises(InvalidInput, match="unknown fields"):
        repo.add_trial(
            session,
            search_id=search.id,
            family="gelu",
            family_params={},
            hparams={},
            seed=2,
            valu=1.0,
        )


def test_list_trials_filters_sorting_and_nulls_last(session: Session) -> None:
    search = _search(session)
    values = {"relu": 0.5, "gelu": 0.9, "snake": None, "elu": 0.7}
    ids = {}
    for n, (family, value) in enumerate(values.items()):
        t = _trial(session, search, n, family=family)
        state = "pruned" if value is None else "complete"
        repo.finish_trial(session, trial_id=t.id, state=state, value=value, n_params=100 - n)
        ids[family] = t.id
    session.commit()
    fam = lambda rows: [r.family for r in rows]  # noqa: E731
    assert fam(repo.list_trials(session, search_id=search.id)) == ["gelu", "elu", "relu", "snake"]
    assert fam(repo.list_trials(session, descending=False)) == ["relu", "elu", "gelu", "snake"]
    assert fam(repo.list_trials(session, order_by="n_params", descending=False))[0] == "elu"
    assert fam(repo.list_trials(session, state="pruned")) == ["snake"]
    assert fam(repo.list_trials(session, family="relu")) == ["relu"]
    assert fam(repo.list_trials(session, min_value=0.6, max_value=0.8)) == ["elu"]
    assert fam(repo.list_trials(session, dataset_id=search.dataset_id, limit=2, offset=1)) == [
        "elu",
        "relu",
    ]
    assert repo.list_trials(session, dataset_id=search.dataset_id + 1) == []
    assert repo.count_trials(session, search_id=search.id, state="complete") == 3
    assert repo.count_trials(session, phase="finalist") == 0
    with pytest.raises(InvalidInput, match="cannot sort trials"):
        repo.list_trials(session, order_by="value; DROP TABLE x")


def test_deleting_a_search_cascades(session: Session) -> None:
    search = _search(session)
    trial = _trial(session, search, 0)
    repo.add_epoch_metrics(session, trial_id=trial.id, rows=[{"epoch": 1, "val_metric": 0.1}])
    repo.save_weights(
        session, trial_id=trial.id, state_dict={"w": np.ones(2)}, scaler=None, label_map=None
    )
    session.commit()
    session.delete(search)
    session.commit()
    for table in (TrialRow, EpochMetricRow, WeightsRow):
        assert session.scalars(select(table)).first() is None
    assert session.scalars(select(DatasetRow)).first() is not None


# ---------------------------------------------------------------- per-epoch data


def test_epoch_metrics_round_trip_and_replace(session: Session) -> None:
    trial = _trial(session, _search(session), 0)
    history = [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "val_loss": 1.1 / e,
            "val_metric": 0.1 * e,
            "elapsed_s": e,
        }
        for e in (1, 2, 3)
    ]
    history[2]["train_loss"] = float("nan")  # diverged
    assert repo.add_epoch_metrics(session, trial_id=trial.id, rows=history) == 3
    session.commit()
    out = repo.trial_epochs(session, trial_id=trial.id)
    assert [r["epoch"] for r in out] == [1, 2, 3] and out[2]["train_loss"] is None
    assert out[1]["val_metric"] == pytest.approx(0.2)
    # a retried task writes epoch 3 again: replaced, not duplicated
    repo.add_epoch_metrics(session, trial_id=trial.id, rows=[{"epoch": 3, "val_metric": 0.5}])
    session.commit()
    out = repo.trial_epochs(session, trial_id=trial.id)
    assert len(out) == 3 and out[2]["val_metric"] == 0.5
    with pytest.raises(InvalidInput, match="lacks 'epoch'"):
        repo.add_epoch_metrics(session, trial_id=trial.id, rows=[{"val_metric": 1.0}])
    with pytest.raises(InvalidInput, match="duplicate"):
        repo.add_epoch_metrics(session, trial_id=trial.id, rows=[{"epoch": 1}, {"epoch": 1}])


def test_curves_round_trip_float32(session: Session) -> None:
    trial = _trial(session, _search(session), 0, family="prelu")
    rng = np.random.default_rng(1)
    x = np.linspace(-3, 3, 201, dtype=np.float32)
    rows = [
        {
            "layer": layer,
            "epoch": epoch,
            "x": x,
            "y": rng.standard_normal((units, 201)).astype(np.float32),
            "params": {"a": rng.standard_normal(units).astype(np.float32)},
        }
        for layer, units in ((0, 16), (1, 1))
        for epoch in (0, 5)
    ]
    repo.add_curves(session, trial_id=trial.id, rows=rows)
    session.commit()
    session.expire_all()
    out = repo.trial_curves(session, trial_id=trial.id)
    assert [(c["layer"], c["epoch"]) for c in out] == [(0, 0), (0, 5), (1, 0), (1, 5)]
    for got, want in zip(out, rows, strict=True):
        assert got["x"].dtype == np.float32 and got["y"].dtype == np.float32
        np.testing.assert_array_equal(got["x"], want["x"])
        np.testing.assert_array_equal(got["y"], want["y"])
        assert got["params"] == {"a": want["params"]["a"].tolist()}
    assert len(repo.trial_curves(session, trial_id=trial.id, layer=1, epoch=5)) == 1
    stored = session.scalars(select(CurveRow)).first()
    assert stored is not None and len(stored.y) == 16 * 201 * 4  # float32 bytes
    with pytest.raises(InvalidInput, match="does not match x"):
        repo.add_curves(
            session,
            trial_id=trial.id,
            rows=[{"layer": 9, "epoch": 0, "x": x, "y": np.zeros((2, 7))}],
        )


def test_preact_stats_round_trip(session: Session) -> None:
    trial = _trial(session, _search(session), 0)
    hist = np.arange(64, dtype=np.float32) / 64
    edges = np.linspace(-4, 4, 65, dtype=np.float32)
    row = {
        "layer": 0,
        "epoch": 1,
        "min": np.float32(-4.0),
        "max": 4.0,
        "mean": 0.01,
        "std": 1.0,
        "quantiles": {"0.01": np.float32(-2.3), "0.5": 0.0, "0.99": float("inf")},
        "hist": hist,
        "edges": edges,
        "dead_fraction": 0.25,
    }
    repo.add_preact_stats(session, trial_id=trial.id, rows=[row])
    session.commit()
    session.expire_all()
    (out,) = repo.trial_preact_stats(session, trial_id=trial.id)
    np.testing.assert_array_equal(out["hist"], hist)
    np.testing.assert_array_equal(out["edges"], edges)
    assert out["hist"].dtype == np.float32 and out["min"] == -4.0
    assert out["quantiles"]["0.99"] is None and math.isclose(
        out["quantiles"]["0.01"], -2.3, rel_tol=1e-6
    )
    with pytest.raises(InvalidInput, match="edges"):
        repo.add_preact_stats(session, trial_id=trial.id, rows=[{**row, "layer": 1, "edges": hist}])


# ---------------------------------------------------------------- weights


def test_weights_round_trip_without_pickle(session: Session, tmp_path: Path) -> None:
    search = _search(session)
    t1, t2 = _trial(session, search, 0), _trial(session, search, 1)
    state = {
        "net.0.weight": np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32),
        "net.0.bias": np.zeros(8, dtype=np.float32),
        "act.alpha": np.float64(0.25),
        "steps": np.array(7, dtype=np.int64),
        "file": np.ones(1),  # a key np.savez(**kw) could not take
    }
    scaler = {"mean": np.zeros(3), "std": np.ones(3)}
    w1 = repo.save_weights(
        session, trial_id=t1.id, state_dict=state, scaler=scaler, label_map=["no", "yes"]
    )
    w2 = repo.save_weights(
        session,
        trial_id=t2.id,
        state_dict={**state, "steps": np.array(8, dtype=np.int64)},
        scaler=None,
        label_map={0: "no"},
        artifact_dir=tmp_path / "art",
    )
    assert session.get(Artifact, w1.artifact_id).data is not None
    assert session.get(Artifact, w2.artifact_id).path is not None  # in the shared directory
    session.commit()
    loaded, got_scaler, labels = repo.load_weights(session, trial_id=t1.id)
    assert list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].dtype == np.asarray(value).dtype
        np.testing.assert_array_equal(loaded[key], value)
    assert got_scaler == {"mean": [0.0] * 3, "std": [1.0] * 3} and labels == ["no", "yes"]
    loaded2, _, labels2 = repo.load_weights(session, trial_id=t2.id)
    assert int(loaded2["steps"]) == 8 and labels2 == {"0": "no"}  # JSON keys are strings
    # saving again replaces the trial's weights
    repo.save_weights(
        session, trial_id=t1.id, state_dict={"w": np.ones(1)}, scaler=None, label_map=None
    )
    assert list(repo.load_weights(session, trial_id=t1.id)[0]) == ["w"]
    assert session.scalars(select(WeightsRow).where(WeightsRow.trial_id == t1.id)).all() == [w1]


def test_identical_weights_share_one_artifact(session: Session) -> None:
    search = _search(session)
    t1, t2 = _trial(session, search, 0), _trial(session, search, 1)
    state = {"w": np.arange(4, dtype=np.float32)}
    w1 = repo.save_weights(session, trial_id=t1.id, state_dict=state, scaler=None, label_map=None)
    w2 = repo.save_weights(session, trial_id=t2.id, state_dict=state, scaler=None, label_map=None)
    assert w1.artifact_id == w2.artifact_id


def test_weights_refuse_object_arrays_and_pickled_archives(session: Session) -> None:
    trial = _trial(session, _search(session), 0)
    with pytest.raises(InvalidInput, match="dtype object"):
        repo.save_weights(
            session,
            trial_id=trial.id,
            state_dict={"w": np.array([{}], dtype=object)},
            scaler=None,
            label_map=None,
        )
    # an archive that needs unpickling (e.g. planted in the artifact table) is never loaded
    buf = io.BytesIO()
    np.savez(buf, w=np.array([{"evil": 1}], dtype=object))
    artifact = put_artifact(session, kind="weights", data=buf.getvalue())
    session.add(WeightsRow(trial_id=trial.id, artifact_id=artifact.id))
    session.flush()
    with pytest.raises(ValueError, match="pickle"):
        repo.load_weights(session, trial_id=trial.id)
