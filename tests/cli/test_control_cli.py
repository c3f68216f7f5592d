"""``actsearch search --control relu``: the verdict line, the ``--json`` key, refused values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.utils.cli import run_cli


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from core.settings import get_settings

    monkeypatch.setenv("ACTSEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


TINY = ["--dataset", "iris", "--arch", "mlp:8", "--families", "prelu", "--trials", "4",
        "--epochs", "3", "--population-size", "2", "--seed", "2"]


def test_bad_control_is_one_line_and_exit_2(home: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "search", *TINY, "--control", "gelu")
    assert code == 2 and "Traceback" not in err
    assert "unknown control 'gelu'" in err.replace("\n", " ")


def test_search_json_carries_the_control_and_show_prints_the_verdict(
        home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "search", *TINY, "--control", "relu", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "complete"
    control = doc["control"]
    for key in ("family", "mean", "ci95", "test_mean", "test_ci95"):
        assert key in control, key
    assert control["family"] == "relu" and control["test_mean"] is not None
    assert control["message"].startswith("searching activations ")
    assert control["candidate_epochs"] > 0 and control["search_candidate_epochs"] > 0
    assert {r["family"] for r in doc["rows"]} == {"relu", "prelu"}  # the control is not ranked

    code, out, err = run_cli(monkeypatch, capsys, "show", str(doc["search_id"]))
    assert code == 0, err
    text = " ".join(out.split())
    assert "control: relu alone" in text and "searching activations " in text
