"""GLU variants vs GELU/ReLU in a small transformer's MLP, at equal parameters (issue #15).

    python -m studies.transformer_study                 # small scale: ~5-10 min on 2 cores
    python -m studies.transformer_study --scale tiny --out /tmp/t   # seconds (the test's run)

On ``modular_sum`` (tokens "a b" -> (a + b) mod 31, every pair once; the split is the
product's, seed 0, 70/15/15, so validation and test pairs were never seen in training)
a fixed ``transformer:d=64,layers=2,heads=4`` is trained with each activation in its
MLPs: relu, gelu, squared_relu, the gated swiglu, geglu, reglu (hidden width 8/3 d
instead of 4 d, so every network has the same parameters within 0.5%) and the
trainable star_relu. Per family and seed one population trains one candidate per
learning rate (:func:`studies.grid.run_grid`, the activation study's protocol); the
learning rate with the best mean final validation accuracy is kept, and its seeds'
test accuracies give the mean and 95% Student-t interval. Differences to relu and gelu
use Welch's 95% interval.

Writes ``results.json`` (every run's per-epoch values), ``transformer.png`` and
``TRANSFORMER.md`` to ``--out`` (default ``studies/results/transformer``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import load_study_data
from .grid import run_grid
from .plots import _ci, _colours, _plt, _save
from .report import machine_info
from .summary import mean_curve, welch_difference

GATED = ("swiglu", "geglu", "reglu")
UNGATED = ("relu", "gelu")
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "transformer"


@dataclass(frozen=True)
class Scale:
    families: tuple[str, ...]
    seeds: tuple[int, ...]
    lrs: tuple[float, ...]
    epochs: int
    architecture: str
    p: int
    batch_size: int = 64


SCALES = {
    "small": Scale(("relu", "gelu", "squared_relu", "swiglu", "geglu", "reglu", "star_relu"),
                   (0, 1, 2, 3), (1e-3, 3e-3), 30, "transformer:d=64,layers=2,heads=4", 31),
    "tiny": Scale(("relu", "gelu", "swiglu", "star_relu"), (0, 1), (3e-3,), 2,
                  "transformer:d=16,layers=1,heads=2", 11),
}


def run(scale: Scale) -> dict[str, Any]:
    """Train every family on every seed; JSON-able results with per-seed values."""
    d = load_study_data("modular_sum", {"p": scale.p})
    arch = f"{scale.architecture},vocab={scale.p}"
    families: dict[str, Any] = {}
    for family in scale.families:
        t0 = time.perf_counter()
        families[family] = run_grid(d, family, {}, seeds=scale.seeds, lrs=scale.lrs,
                                    epochs=scale.epochs, architecture=arch,
                                    batch_size=scale.batch_size)
        f = families[family]
        print(f"[transformer_study] {family}: test {f['test']['mean']:.3f} ± "
              f"{f['test']['ci95']:.3f} (lr {f['chosen_lr']:g}, {f['n_params']} params, "
              f"{time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    comparisons = {}
    for family in scale.families:
        tests = [s["test"] if s["test"] is not None else math.nan for s in families[family]["seeds"]]
        comparisons[family] = {}
        for ref in UNGATED:
            if ref in families and ref != family:
                ref_tests = [s["test"] if s["test"] is not None else math.nan
                             for s in families[ref]["seeds"]]
                comparisons[family][ref] = welch_difference(tests, ref_tests)
    return {"data": d.describe(), "families": families, "comparisons": comparisons,
            "verdict": verdict(families, comparisons)}


def verdict(families: dict[str, Any], comparisons: dict[str, Any]) -> dict[str, Any]:
    """Does the published ordering hold: every gated variant at or above GELU and ReLU?

    "At or above" means its Welch interval against each is not below 0; "above" that it
    is above 0. Only the families this run trained are compared.
    """
    gated = [g for g in GATED if g in families]
    refs = [r for r in UNGATED if r in families]
    rows = {g: {r: comparisons[g][r]["verdict"] for r in refs} for g in gated}
    at_or_above = all(v != "lower" for row in rows.values() for v in row.values())
    above = all(v == "higher" for row in rows.values() for v in row.values())
    order = sorted(families, key=lambda f: -np.nan_to_num(families[f]["test"]["mean"], nan=-1))
    return {"gated_vs_ungated": rows, "holds_at_or_above": bool(gated and refs and at_or_above),
            "strictly_above": bool(gated and refs and above), "ranking_by_test_mean": order}


def plot(results: dict[str, Any], path: Path) -> Path:
    """Left: test accuracy with 95% intervals. Right: mean validation curve at the kept lr."""
    plt = _plt()
    fams = list(results["families"])
    colours = _colours(fams)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    means = [results["families"][f]["test"]["mean"] for f in fams]
    errs = [_ci(results["families"][f]["test"]) for f in fams]
    ax1.bar(range(len(fams)), np.nan_to_num(means), yerr=errs, capsize=4,
            color=[colours[f] for f in fams],
            hatch=None, edgecolor=["black" if f in GATED else "none" for f in fams])
    ax1.set_xticks(range(len(fams)), fams, rotation=30, ha="right")
    ax1.set_ylabel("test accuracy (mean ± 95% CI)")
    ax1.set_title("modular_sum, equal parameters (gated outlined)", fontsize=9)
    for f in fams:
        curves = [s["val_curve"] for s in results["families"][f]["seeds"]]
        mean, _ = mean_curve(curves)
        ax2.plot(range(1, len(mean) + 1), mean, label=f, color=colours[f],
                 linestyle="-" if f in GATED else "--")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation accuracy (mean over seeds)")
    ax2.legend(fontsize=7, ncol=2)
    return _save(fig, plt, path)


def _verdict_sentence(v: dict[str, Any]) -> str:
    outcomes = [o for row in v["gated_vs_ungated"].values() for o in row.values()]
    if not v["holds_at_or_above"]:
        return ("**It does not hold at this scale**: at least one gated variant is below GELU "
                "or ReLU with an interval excluding 0.")
    if v["strictly_above"]:
        return "**It holds at this scale**: every gated variant is above both GELU and ReLU."
    if all(o == "n.s." for o in outcomes):
        return ("**Not contradicted, not confirmed**: no gated variant is below GELU or ReLU, "
                "but no difference is outside the noise of these seeds either.")
    return ("**It holds at this scale, partly**: no gated variant is below GELU or ReLU, and "
            f"{outcomes.count('higher')} of {len(outcomes)} comparisons are above 0.")


def report(results: dict[str, Any], path: Path) -> Path:
    meta, m = results["meta"], results["meta"]["machine"]
    fams = results["families"]
    lines = [
        "# GLU variants vs GELU/ReLU in a small transformer (issue #15)", "",
        f"Generated by `{meta['command']}` on {meta['date_utc']} (UTC) in "
        f"{meta['wall_s'] / 60:.1f} min. Machine: {m['cpu']}, {m['cores']} cores "
        f"({m['torch_threads']} torch threads), torch {m['torch']}; 1-minute load average "
        f"{m['load_avg_1_5_15'][0]:.1f} at the start and {meta['load_avg_end'][0]:.1f} at the "
        "end (shared machine). Every figure is in [results.json](results.json) with its per-seed "
        "values.", "",
        f"Task: `modular_sum` p={results['scale']['p']} (every pair once; "
        f"{results['data']['rows']['train']}/{results['data']['rows']['val']}/"
        f"{results['data']['rows']['test']} train/val/test pairs), "
        f"`{results['scale']['architecture']}`, {results['scale']['epochs']} epochs, batch "
        f"{results['scale']['batch_size']}, Adam, cosine schedule; learning rate chosen per "
        f"family from {list(results['scale']['lrs'])} by mean final validation accuracy over "
        f"seeds {list(results['scale']['seeds'])}; test accuracy of the chosen lr's seeds.", "",
        "![test accuracy and validation curves](transformer.png)", "",
        "| family | params | lr | val acc (mean ± 95% CI) | test acc (mean ± 95% CI) | "
        "Δ vs relu (Welch 95%) | Δ vs gelu (Welch 95%) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for f, r in fams.items():
        cells = []
        for ref in UNGATED:
            c = results["comparisons"][f].get(ref)
            cells.append("–" if c is None else
                         f"{c['diff']:+.3f} [{c['lo']:+.3f}, {c['hi']:+.3f}] {c['verdict']}")
        lines.append(f"| {f}{' (gated)' if f in GATED else ''} | {r['n_params']} | "
                     f"{r['chosen_lr']:g} | {r['final_val']['mean']:.3f} ± "
                     f"{r['final_val']['ci95']:.3f} | {r['test']['mean']:.3f} ± "
                     f"{r['test']['ci95']:.3f} | {cells[0]} | {cells[1]} |")
    v = results["verdict"]
    lines += ["", "## Does the published ordering hold here?", "",
              "Shazeer (2020) reports GLU variants (GEGLU, SwiGLU, ReGLU) at or above GELU and "
              "ReLU at equal parameters. Here, ranking by mean test accuracy: "
              + ", ".join(v["ranking_by_test_mean"]) + ". Against relu and gelu (Welch 95% "
              "intervals of the test-accuracy difference): "
              + "; ".join(f"{g}: " + ", ".join(f"{r} {o}" for r, o in row.items())
                          for g, row in v["gated_vs_ungated"].items()).rstrip(".") + ".", "",
              _verdict_sentence(v), "",
              "One small task, one width, a few seeds and a two-point learning-rate grid: this "
              "tests the ordering here, not in general."]
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scale", choices=sorted(SCALES), default="small")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared machine two threads contend badly)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    scale = SCALES[args.scale]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    machine = machine_info(args.threads)
    results = run(scale)
    results["scale"] = {"name": args.scale, **asdict(scale)}
    results["meta"] = {
        "command": "python -m studies.transformer_study " + " ".join(argv if argv is not None
                                                                    else sys.argv[1:]),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "wall_s": time.perf_counter() - t0, "machine": machine,
        "load_avg_end": list(os.getloadavg()),
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    plot(results, args.out / "transformer.png")
    report(results, args.out / "TRANSFORMER.md")
    print((args.out / "TRANSFORMER.md").read_text())
    return results


if __name__ == "__main__":
    main()
