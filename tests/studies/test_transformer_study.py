"""The transformer study end to end at its tiny scale: real training, figures from the runs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from studies.summary import summarise
from studies.transformer_study import SCALES, main, verdict

TINY = SCALES["tiny"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("transformer-study")
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--scale", "tiny", "--out", str(out)])
    return {"out": out, "results": json.loads((out / "results.json").read_text()),
            "report": (out / "TRANSFORMER.md").read_text()}


def test_outputs_exist(tiny_run: dict[str, Any]) -> None:
    out: Path = tiny_run["out"]
    png = (out / "transformer.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 150_000
    assert "](transformer.png)" in tiny_run["report"]
    assert list(tiny_run["results"]["families"]) == list(TINY.families)


def test_figures_come_from_the_per_seed_values(tiny_run: dict[str, Any]) -> None:
    fams = tiny_run["results"]["families"]
    for name, fam in fams.items():
        assert [s["seed"] for s in fam["seeds"]] == list(TINY.seeds)
        assert all(len(s["val_curve"]) == TINY.epochs for s in fam["seeds"])
        again = summarise([s["test"] for s in fam["seeds"]])
        assert again["mean"] == pytest.approx(fam["test"]["mean"])
        assert f"| {name}" in tiny_run["report"]
        assert f"{fam['test']['mean']:.3f} ± {fam['test']['ci95']:.3f}" in tiny_run["report"]
    # equal parameters within 2% (biases at this tiny width), the gated one included
    params = [f["n_params"] for f in fams.values()]
    assert max(params) / min(params) < 1.02


def test_verdict_rules() -> None:
    fams = {f: {"test": {"mean": m}} for f, m in (("relu", 0.5), ("gelu", 0.6), ("swiglu", 0.7))}
    def comp(v: str) -> dict[str, Any]:
        return {"verdict": v}
    up = verdict(fams, {"swiglu": {"relu": comp("higher"), "gelu": comp("n.s.")}})
    assert up["holds_at_or_above"] and not up["strictly_above"]
    assert up["ranking_by_test_mean"] == ["swiglu", "gelu", "relu"]
    down = verdict(fams, {"swiglu": {"relu": comp("higher"), "gelu": comp("lower")}})
    assert not down["holds_at_or_above"]
