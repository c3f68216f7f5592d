"""``actsearch.search`` (built-in architectures) and the API view of a ``search_module`` search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from torch import nn

import actsearch
from core.errors import InvalidDataset, InvalidInput, NotFound

TINY: dict[str, Any] = {"trials": 4, "epochs": 2, "finalist_seeds": 2, "progress": False,
                        "batch_size": 64}


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 4)), columns=list("abcd"))
    df["target"] = np.where(df["a"] + df["b"] > 0, "yes", "no")
    return df


def test_search_dataframe_classification(home: Path, tmp_path: Path) -> None:
    r = actsearch.search(frame(), label="target", arch="mlp:8", families=["relu", "elu"], **TINY)
    assert r.state == "complete", r.error
    board = r.leaderboard
    assert list(board.columns[:4]) == ["family", "val accuracy", "±95% CI", "seeds"]
    assert len(r.trials) == 4 + 2 * 2
    assert set(r.predict(frame(seed=1).drop(columns="target").to_numpy())) <= {"yes", "no"}
    assert r.best_model()(__import__("torch").zeros(2, 4)).shape == (2, 2)
    assert r.curves()[0]["x"].shape == (201,)
    assert r.export(tmp_path / "m.zip").stat().st_size > 0
    assert actsearch.load(r.search_id).leaderboard.equals(board)


def test_search_regression_arrays(home: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    y = 3 * X[:, 0] - X[:, 1] + 100
    r = actsearch.search((X, y), arch="mlp:8", families=["relu"], task="regression",
                         **{**TINY, "epochs": 4})
    assert r.state == "complete", r.error
    assert "val r2" in r.leaderboard.columns
    assert abs(float(r.predict(X[:20]).mean()) - float(y[:20].mean())) < 10


def test_search_errors(home: Path) -> None:
    with pytest.raises(InvalidInput, match="invalid search spec: trials"):
        actsearch.search(frame(), label="target", trials=0)
    with pytest.raises(InvalidDataset, match="label column 'nope' is not in 'dataframe'"):
        actsearch.search(frame(), label="nope", **TINY)
    with pytest.raises(NotFound):
        actsearch.load(10_000)


def test_api_shows_a_search_module_search(home: Path) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.settings import HttpSettings, Settings

    def build(act: Any) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), act(), nn.Linear(8, 2))

    df = frame()
    r = actsearch.search_module(build, df, label="target", families=["relu", "gelu"], **TINY)
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'actsearch.db'}",
                        broker_url=None, artifact_dir=None, workers=1,
                        http=HttpSettings(allowed_hosts=["testserver"]))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        detail = client.get(f"/searches/{r.search_id}")
        assert detail.status_code == 200, detail.text
        body = detail.json()
        assert body["state"] == "complete"
        assert body["spec"]["architecture"]["kind"] == "module"
        assert body["spec"]["architecture"]["name"] == "Sequential"
        trials = client.get(f"/searches/{r.search_id}/trials").json()
        assert trials["count"] == 8
        tid = trials["data"][0]["id"]
        acts = client.get(f"/trials/{tid}/activations")
        assert acts.status_code == 200, acts.text
        assert acts.text.count('"layer"') >= 1
        board = client.get(f"/searches/{r.search_id}/leaderboard")
        assert board.status_code == 200 and board.json()["rows"]
        # The service never runs user code: a module search cannot be submitted over HTTP.
        spec = dict(body["spec"], dataset="iris", dataset_version=None)
        refused = client.post("/searches", json=spec)
        assert refused.status_code == 422, refused.text
        assert "never runs user code" in refused.text


def test_builtin_name_and_stored_name(home: Path) -> None:
    """A built-in name resolves as in `actsearch search`; search_module takes it too."""
    r = actsearch.search("iris", arch="mlp:8", families=["relu"], trials=2, epochs=1,
                         finalist_seeds=1, progress=False, population_size=2)
    assert r.state == "complete", r.error

    def build(act: Any) -> nn.Module:
        return nn.Sequential(nn.Linear(4, 8), act(), nn.Linear(8, 3))

    m = actsearch.search_module(build, "iris", families=["relu"], trials=2, epochs=1,
                                finalist_seeds=1, progress=False)
    assert m.state == "complete", m.error
    assert m.spec.dataset == "iris"


def test_result_is_returned_before_the_analysis_and_can_wait_for_it(home: Path) -> None:
    """The leaderboard is there at once; fits and distillation follow in a background thread."""
    r = actsearch.search(frame(), label="target", arch="mlp:8", families=["prelu"], **TINY)
    assert r.state == "complete", r.error
    assert not r.leaderboard.empty  # never waits for the analysis
    assert r.analysis_state in ("pending", "running", "done")
    assert r.wait_analysis(timeout=120) == "done" and r.analysis_error is None
    kinds = {f["kind"] for f in r.fits()}  # the winner's best finalist
    winner = r.best_trial().family
    if winner == "prelu":
        assert {"closed_form", "linear", "distilled", "network"} <= kinds
    else:
        assert kinds == set()  # relu learns nothing: no fits
    # a pending analysis nobody runs (its process stopped) runs in wait_analysis
    from store import repo

    again = actsearch.load(r.search_id)
    with again._sessions.begin() as session:
        repo.set_analysis_state(session, search_id=r.search_id, state="pending")
    assert again.wait_analysis(timeout=120) == "done"
