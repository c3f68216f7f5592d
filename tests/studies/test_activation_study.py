"""The activation study end to end at its tiny scale, and the rules its verdicts follow.

The tiny run trains for real (wine, relu and vaf, 2 seeds, 2 epochs, two embedded
searches, a small sweep), so the checks below test that every reported figure is
computed from that run's per-seed values, not written in.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from studies.activation_study import main
from studies.config import SCALES
from studies.part_c import claim_verdict
from studies.report import fmt_pm, part_a_rows
from studies.summary import epochs_to_target, summarise, welch_difference

TINY = SCALES["tiny"]
PNGS = ("a_curves.png", "a_final.png", "b_search.png", "c_vs_fixed.png", "c_sweeps.png",
        "c_learned.png")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("study") / "results"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main(["--scale", "tiny", "--out", str(out), "--threads", "1"])
    return {"out": out, "stdout": stdout.getvalue(),
            "results": json.loads((out / "results.json").read_text()),
            "report": (out / "REPORT.md").read_text()}


def test_outputs_exist_and_are_small(tiny_run: dict[str, Any]) -> None:
    out: Path = tiny_run["out"]
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        assert len(data) <= 150_000, f"{name} is {len(data)} bytes"
    assert sorted(tiny_run["results"]["meta"]["files"]) == sorted([*PNGS, "results.json"])
    for name in PNGS:  # the report links every plot, relative to itself
        assert f"]({name})" in tiny_run["report"]
    meta = tiny_run["results"]["meta"]
    assert meta["command"].endswith(f"--scale tiny --out {out} --threads 1")
    assert meta["machine"]["cores"] >= 1 and meta["machine"]["torch"]


def test_part_a_structure_and_seeds_differ(tiny_run: dict[str, Any]) -> None:
    part_a = tiny_run["results"]["part_a"]
    assert list(part_a) == list(TINY.datasets)
    fams = part_a["wine"]["families"]
    assert list(fams) == list(TINY.families)
    for fam in fams.values():
        assert len(fam["runs"]) == len(TINY.seeds) * len(TINY.lrs)
        assert [s["seed"] for s in fam["seeds"]] == list(TINY.seeds)
        assert all(len(s["val_curve"]) == TINY.epochs for s in fam["seeds"])
        curves = [tuple(s["val_curve"]) for s in fam["seeds"]]
        assert len(set(curves)) == len(curves), "seeds must be independent replications"
        assert fam["s_per_candidate_epoch"] > 0 and fam["candidate_epochs"] == (
            len(TINY.seeds) * len(TINY.lrs) * TINY.epochs)


def test_chosen_lr_is_best_mean_validation(tiny_run: dict[str, Any]) -> None:
    for fam in tiny_run["results"]["part_a"]["wine"]["families"].values():
        means = {lr: np.mean([r["final_val"] for r in fam["runs"] if r["lr"] == lr])
                 for lr in TINY.lrs}
        assert means[fam["chosen_lr"]] == max(means.values())
        for s in fam["seeds"]:  # the reported seeds are the chosen lr's runs
            run = next(r for r in fam["runs"] if r["seed"] == s["seed"] and r["lr"] == fam["chosen_lr"])
            assert run["val_curve"] == s["val_curve"]


def test_table_means_are_means_of_the_seeds(tiny_run: dict[str, Any]) -> None:
    results, stdout = tiny_run["results"], tiny_run["stdout"]
    rows = part_a_rows(results["part_a"])
    assert len(rows) == len(TINY.families)
    for row in rows:
        fam = results["part_a"][row["dataset"]]["families"][row["family"]]
        for key, summary_key in (("test", "test"), ("final_val", "final_val")):
            values = [s[key] for s in fam["seeds"]]
            assert fam[summary_key]["mean"] == pytest.approx(np.mean(values), abs=1e-5)
            assert fam[summary_key]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-5)
            text = fmt_pm(summarise(values))
            assert text in stdout and text in tiny_run["report"]
        assert row["test_mean"] == pytest.approx(np.mean([s["test"] for s in fam["seeds"]]), abs=1e-5)


def test_epochs_to_relu_best_follows_the_curves(tiny_run: dict[str, Any]) -> None:
    ds = tiny_run["results"]["part_a"]["wine"]
    relu_curves = np.array([s["val_curve"] for s in ds["families"]["relu"]["seeds"]])
    target = relu_curves.mean(0).max()
    assert ds["relu_best_target"] == pytest.approx(target, abs=1e-5)
    for fam in ds["families"].values():
        e = fam["epochs_to_relu_best"]
        expected = epochs_to_target([s["val_curve"] for s in fam["seeds"]], ds["relu_best_target"])
        assert e["per_seed"] == expected["per_seed"]
    assert ds["families"]["relu"]["epochs_to_relu_best"]["reached"] >= 1  # its own best


def test_part_b_ran_two_real_searches(tiny_run: dict[str, Any]) -> None:
    row = tiny_run["results"]["part_b"]["wine"]
    total = TINY.search_trials_per_family * len(TINY.search_families)
    assert row["search"]["search_trials"] == total == row["relu_only"]["search_trials"]
    assert row["relu_only"]["winner"]["family"] == "relu"
    assert row["search"]["spec"]["families"] == list(TINY.search_families)
    for key in ("search", "relu_only"):
        w = row[key]["winner"]
        assert len(w["val_values"]) == len(w["test_values"]) == TINY.search_finalist_seeds
        assert w["test"]["mean"] == pytest.approx(np.mean(w["test_values"]), abs=1e-5)
    diff = row["test_diff"]
    expected = np.mean(row["search"]["winner"]["test_values"]) - np.mean(
        row["relu_only"]["winner"]["test_values"])
    assert diff["diff"] == pytest.approx(expected, abs=1e-5)


def test_part_c_sweeps_and_claims(tiny_run: dict[str, Any]) -> None:
    c = tiny_run["results"]["part_c"]
    sweep = c["sweeps"]["per_dataset"]["wine"]
    assert set(sweep["configs"]) == {"w1d1", "w2d1", "w2d2"}
    assert sweep["reference"] == "w2d1" and set(sweep["vs_reference"]) == {"w1d1", "w2d2"}
    params = {k: v["n_params"] for k, v in sweep["configs"].items()}
    assert params["w1d1"] < params["w2d1"] < params["w2d2"]  # the sweep changed the meta-neuron
    flags = [f for v in sweep["configs"].values() for f in v["near_linear"]]
    # 2 seeds x 2 layers per config, plus Part A's default vaf
    assert len(flags) == 3 * len(TINY.seeds) * 2
    nl = c["near_linear"]
    assert nl["all_runs"]["curves"] == len(flags) + nl["part_a"]["curves"]
    verdicts = {"agrees", "disagrees", "mixed", "inconclusive"}
    vf = c["vs_fixed"]
    assert {vf["accuracy_vs_relu"]["verdict"], vf["convergence_vs_relu"]["verdict"],
            c["sweeps"]["larger_vs_reference"]["verdict"], nl["verdict"]} <= verdicts
    for line in ("C1 accuracy", "C2 convergence", "C3 wider/deeper", "C4 near-linear"):
        assert line in tiny_run["stdout"]


def test_replot_rebuilds_the_report_from_results_json(tiny_run: dict[str, Any],
                                                      tmp_path: Path) -> None:
    results = tiny_run["results"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        main(["--replot", "--out", str(tmp_path)])
    assert (tmp_path / "REPORT.md").read_text() == tiny_run["report"]
    assert all((tmp_path / name).is_file() for name in PNGS)


def test_claim_verdict_rules() -> None:
    assert claim_verdict(["higher", "n.s.", "higher"]) == "agrees"
    assert claim_verdict(["higher", "n.s.", "n.s."]) == "inconclusive"
    assert claim_verdict(["lower", "n.s."]) == "disagrees"
    assert claim_verdict(["lower", "higher"]) == "mixed"
    assert claim_verdict([]) == "inconclusive"


def test_welch_difference_signs() -> None:
    assert welch_difference([0.9, 0.91, 0.92], [0.5, 0.52, 0.51])["verdict"] == "higher"
    assert welch_difference([0.5, 0.52, 0.51], [0.9, 0.91, 0.92])["verdict"] == "lower"
    wide = welch_difference([0.1, 0.9, 0.5], [0.4, 0.6, 0.5])
    assert wide["verdict"] == "n.s." and wide["lo"] < 0 < wide["hi"]
    exact = welch_difference([0.5, 0.5], [0.4, 0.4])
    assert exact["verdict"] == "higher" and exact["lo"] == pytest.approx(0.1)
    assert math.isnan(welch_difference([], [1.0])["diff"])


@pytest.mark.parametrize("argv, message", [
    (["--scale", "huge"], "invalid choice"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--parts", "c"], "part C reads part A"),
    (["--parts", "xyz"], "letters from 'abc'"),
    (["--replot", "--out", "/nonexistent-study-dir"], "--replot needs"),
])
def test_bad_arguments_exit_2_with_a_message(argv: list[str], message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
