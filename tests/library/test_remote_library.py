"""``actsearch.search(..., server=URL)`` against a real ``actsearch serve``: same result, over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import actsearch
from tests.utils.live_server import live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_server(tmp_path_factory.mktemp("serve")) as live:
        yield live.url


def test_search_on_a_server_uploads_arrays(server: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTSEARCH_HOME", str(tmp_path / "local"))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    r = actsearch.search((X, y), arch="mlp:8", families=["relu", "elu"], trials=4, epochs=2,
                         finalist_seeds=2, server=server, progress=False, name="points")
    assert r.state == "complete", r.error
    board = r.leaderboard
    assert set(board["family"]) == {"relu", "elu"}
    assert list(board.columns[:2]) == ["family", "val accuracy"]
    assert len(r.trials) == 8
    assert set(r.predict(X[:10]).astype(int)) <= {0, 1}
    assert r.curves()[0]["x"].shape == (201,)
    assert r.export(tmp_path / "m.zip").stat().st_size > 0
    assert not (tmp_path / "local" / "actsearch.db").exists()  # the service owns the data
