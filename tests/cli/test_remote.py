"""``actsearch --server URL ...``: the same commands against a real running ``actsearch serve``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.utils.live_server import live_server

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_server(tmp_path_factory.mktemp("serve")) as live:
        yield live.url


def cli(server: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(BIN), "ACTSEARCH_HOME": str(tmp), "COLUMNS": "200"}
    return subprocess.run([str(BIN / "actsearch"), "--server", server, *args], env=env,
                          capture_output=True, text=True, timeout=240)


def test_search_over_http_uploads_a_csv_and_follows_progress(server: str, tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    rows = [f"{a:.3f},{b:.3f},{c:.3f},{'yes' if a + b > 0 else 'no'}" for a, b, c in X]
    csv = tmp_path / "points.csv"
    csv.write_text("a,b,c,kind\n" + "\n".join(rows))
    out = cli(server, "search", "--dataset", str(csv), "--label", "kind", "--arch", "mlp:8",
              "--families", "prelu", "--trials", "4", "--epochs", "3", tmp=tmp_path)
    assert out.returncode == 0, out.stderr
    # progress on stderr, the result on stdout; the board names its search
    assert "uploaded" in out.stderr and "uploaded" not in out.stdout
    assert "search 1 on" in out.stdout and "leaderboard" in out.stdout and "baseline" in out.stdout
    # nothing was written locally: the service owns the database
    assert not (tmp_path / "actsearch.db").exists()
    show = cli(server, "show", "1", tmp=tmp_path)
    assert show.returncode == 0 and "state=complete" in show.stdout
    trials = httpx.get(f"{server}/searches/1/trials", params={"family": "prelu"}).json()["data"]
    png = tmp_path / "c.png"
    curves = cli(server, "curves", str(trials[0]["id"]), "--out", str(png), tmp=tmp_path)
    assert curves.returncode == 0, curves.stderr
    assert png.exists()


def test_errors_from_the_service_are_one_line(server: str, tmp_path: Path) -> None:
    out = cli(server, "show", "4242", tmp=tmp_path)
    assert out.returncode == 2 and "search 4242 not found" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli(server, "search", "--dataset", "digits", "--families", "nope", tmp=tmp_path)
    assert out.returncode == 2 and "nope" in out.stderr
