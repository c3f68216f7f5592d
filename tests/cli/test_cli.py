"""The command line: one-line errors with exit code 2, the catalogue, curves as PNG + sketch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ACTSEARCH = str(Path(sys.executable).parent / "actsearch")


def _env(home: Path) -> dict[str, str]:
    """The CLI's environment; PYTHONPATH passes through (a worktree tested with another's venv)."""
    env = {"ACTSEARCH_HOME": str(home), "PATH": str(Path(sys.executable).parent),
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run(*args: str, home: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = _env(home)
    return subprocess.run([ACTSEARCH, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--dataset", "digits", "--families", "relu,swoosh"], "unknown activation 'swoosh'"),
        (["search", "--dataset", "no_such_set"], "no_such_set"),
        (["search", "--dataset", "digits", "--arch", "mlp:0"], "width"),
        (["search", "--dataset", "digits", "--trials", "0"], "trials"),
        (["search", "--dataset", "digits", "--sampler", "grid"], "sampler"),
        (["search"], "no dataset"),
        (["show", "999"], "search 999 not found"),
        (["curves", "999"], "trial 999 not found"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from actsearch import cli
    from core.settings import get_settings

    monkeypatch.setenv("ACTSEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    monkeypatch.setattr(sys, "argv", ["actsearch", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    get_settings.cache_clear()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err
    assert message in err.replace("\n", " ")


def test_bad_csv_is_a_clear_error(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,species\n" + "\n".join(f"{i},{i * 2},x" for i in range(30)))
    out = run("search", "--dataset", str(csv), "--label", "kind", home=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "kind" in out.stderr and "species" in out.stderr  # names the missing and the available


def test_families_lists_every_registered_family(tmp_path: Path) -> None:
    from models.activations import REGISTRY

    out = run("families", home=tmp_path)
    assert out.returncode == 0
    for name in REGISTRY:
        assert name in out.stdout


def test_search_show_and_curves(tmp_path: Path) -> None:
    out = run("search", "--dataset", "iris", "--arch", "mlp:8", "--families", "vaf",
              "--trials", "4", "--epochs", "4", home=tmp_path, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "leaderboard" in out.stdout and "baseline" in out.stdout and "vaf" in out.stdout
    assert "analysis running (fits, distillation)" in out.stderr
    assert "analysis done in" in out.stderr  # after the leaderboard: fits, distillation
    show = run("show", "1", home=tmp_path)
    assert show.returncode == 0 and "state=complete" in show.stdout
    assert "analysis: done" in show.stdout
    # a vaf trial: the learned curves over epochs, as a PNG and a terminal sketch
    import sqlite3

    con = sqlite3.connect(tmp_path / "actsearch.db")
    (trial_id,) = con.execute(
        "select id from actsearch_trials where family='vaf' and state='complete' limit 1").fetchone()
    png = tmp_path / "vaf.png"
    curves = run("curves", str(trial_id), "--out", str(png), home=tmp_path)
    assert curves.returncode == 0, curves.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "layer 0" in curves.stdout and "*" in curves.stdout


def _popen(*args: str, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([ACTSEARCH, *args], env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _analysis(home: Path) -> tuple[str, str | None, str | None]:
    import sqlite3

    con = sqlite3.connect(home / "actsearch.db")
    try:
        return con.execute("select state, analysis_state, analysis_error from actsearch_searches "
                           "where id = 1").fetchone()
    finally:
        con.close()


def test_leaderboard_first_then_the_analysis(tmp_path: Path) -> None:
    """The leaderboard is printed (and stored) before the analysis runs; Ctrl-C during the
    analysis keeps the search complete with its analysis pending; resume finishes it."""
    import json
    import signal
    import time

    proc = _popen("search", "--dataset", "iris", "--arch", "mlp:8", "--families",
                  "rational,vaf", "--trials", "6", "--epochs", "2", home=tmp_path)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # stdout and stderr in one pipe: the order they were written
        lines.append(line)
        if "analysis running (fits, distillation)" in line:
            assert _analysis(tmp_path)[:2] in (("complete", "pending"), ("complete", "running"))
            proc.send_signal(signal.SIGINT)
            break
        assert time.monotonic() < deadline, "".join(lines)
    rest, _ = proc.communicate(timeout=120)
    text = "".join(lines) + rest
    assert proc.returncode == 130, text
    assert text.index("leaderboard") < text.index("analysis running"), text
    assert "analysis interrupted: search 1 is complete and kept" in text
    assert _analysis(tmp_path) == ("complete", "pending", None)
    show = run("show", "1", home=tmp_path)
    assert "analysis: pending, no process runs it: `actsearch resume 1`" in show.stdout

    resumed = run("resume", "1", "--json", home=tmp_path, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    board = json.loads(resumed.stdout)  # stdout stays the one JSON document
    assert board["state"] == "complete" and board["search_id"] == 1
    assert "analysis done in" in resumed.stderr and "trials fitted" in resumed.stderr
    assert _analysis(tmp_path) == ("complete", "done", None)
    assert "analysis: done" in run("show", "1", home=tmp_path).stdout
