"""Part C: the meta-neuron (VAF) claims, tested at a scale that runs here.

Claims, as the VAF / meta-neuron line of work states them, and how each is tested:

1. *accuracy*: meta-neuron nets reach higher accuracy than fixed-activation nets of the
   same architecture: Part A's test metric, vaf minus each fixed family (Welch 95%);
2. *convergence*: they converge in fewer epochs: the validation metric at an early
   epoch (a quarter of the budget), vaf minus relu, plus Part A's epochs-to-ReLU-best;
3. *size*: a small meta-neuron suffices; wider or deeper ones add little: width and
   depth sweeps, each larger one minus the reference (the default width, depth 1);
4. *near-linear*: some learned activations end up near-linear over the data range
   (``search.analysis.is_near_linear`` with the pre-activation density as weights).

Per-dataset outcomes are ``higher`` / ``lower`` / ``n.s.`` (Welch interval above,
below, or containing 0); :func:`claim_verdict` turns them into one word per claim.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .config import BASELINE, FIXED, METANEURON, Scale
from .data import StudyData, load_study_data
from .grid import run_grid
from .summary import welch_difference

Log = Callable[[str], None]
DEFAULT_VAF = {"width": 4, "depth": 1}


def claim_verdict(outcomes: list[str], *, wanted: str = "higher") -> str:
    """agrees / disagrees / mixed / inconclusive from per-dataset outcomes.

    agrees: ``wanted`` on at least half the datasets and the opposite on none;
    disagrees: the opposite on at least one and ``wanted`` on none; mixed: both occur;
    inconclusive: otherwise (mostly no significant difference at this many seeds).
    """
    opposite = "lower" if wanted == "higher" else "higher"
    n_want, n_opp = outcomes.count(wanted), outcomes.count(opposite)
    if n_want and n_opp:
        return "mixed"
    if n_opp:
        return "disagrees"
    if outcomes and n_want * 2 >= len(outcomes):
        return "agrees"
    return "inconclusive"


def _values(fam: dict[str, Any], key: str) -> list[float]:
    return [v if v is not None else math.nan for v in (s[key] for s in fam["seeds"])]


def _at_epoch(fam: dict[str, Any], epoch: int) -> list[float]:
    return [s["val_curve"][epoch - 1] if len(s["val_curve"]) >= epoch else math.nan
            for s in fam["seeds"]]


def _linear_flags(grid: dict[str, Any]) -> list[bool]:
    return [row["near_linear"] for s in grid["seeds"] for row in s.get("linearity", [])]


def _residuals(grid: dict[str, Any]) -> list[float]:
    return [row["rel_residual"] for s in grid["seeds"] for row in s.get("linearity", [])]


def _vs_fixed(part_a: dict[str, Any]) -> dict[str, Any]:
    """Claims 1 and 2 from Part A's runs."""
    per_dataset: dict[str, Any] = {}
    for name, ds in part_a.items():
        early = max(1, math.ceil(ds["epochs"] / 4))
        fams = ds["families"]
        if METANEURON not in fams:
            continue
        vaf = fams[METANEURON]
        fixed = [f for f in FIXED if f in fams]
        row: dict[str, Any] = {"metric": ds["dataset"]["metric"], "test_vs": {}}
        for f in fixed:
            row["test_vs"][f] = welch_difference(_values(vaf, "test"), _values(fams[f], "test"))
        if fixed:
            best = max(fixed, key=lambda f: fams[f]["test"]["mean"]
                       if math.isfinite(fams[f]["test"]["mean"]) else -math.inf)
            row["best_fixed"] = best
        if BASELINE in fams:
            row["early_epoch"] = early
            row["early_vs_relu"] = welch_difference(_at_epoch(vaf, early),
                                                    _at_epoch(fams[BASELINE], early))
            row["epochs_to_relu_best"] = {"vaf": vaf.get("epochs_to_relu_best"),
                                          "relu": fams[BASELINE].get("epochs_to_relu_best")}
        per_dataset[name] = row
    acc = [r["test_vs"][BASELINE]["verdict"] for r in per_dataset.values()
           if BASELINE in r["test_vs"]]
    acc_best = [r["test_vs"][r["best_fixed"]]["verdict"] for r in per_dataset.values()
                if "best_fixed" in r]
    conv = [r["early_vs_relu"]["verdict"] for r in per_dataset.values() if "early_vs_relu" in r]
    return {"per_dataset": per_dataset,
            "accuracy_vs_relu": {"outcomes": acc, "verdict": claim_verdict(acc)},
            "accuracy_vs_best_fixed": {"outcomes": acc_best, "verdict": claim_verdict(acc_best)},
            "convergence_vs_relu": {"outcomes": conv, "verdict": claim_verdict(conv)}}


def _sweeps(scale: Scale, log: Log, data_cache: dict[str, StudyData],
            part_a: dict[str, Any]) -> dict[str, Any]:
    """Claim 3: width (depth 1) and depth (at the reference width) sweeps per dataset."""
    ref = (scale.sweep_depth_width, 1)
    configs = sorted({(w, 1) for w in scale.widths} | {(ref[0], d) for d in scale.depths})
    out: dict[str, Any] = {}
    for name in scale.sweep_datasets:
        d = data_cache.setdefault(name, load_study_data(name, scale.dataset_options.get(name)))
        grids: dict[str, Any] = {}
        reused: set[str] = set()
        for width, depth in configs:
            key = f"w{width}d{depth}"
            reuse = part_a.get(name, {}).get("families", {}).get(METANEURON)
            if reuse is not None and {"width": width, "depth": depth} == DEFAULT_VAF:
                grids[key] = reuse  # the same runs as Part A's default meta-neuron
                reused.add(key)
                continue
            log(f"C  {name:<14} vaf width={width} depth={depth}")
            grids[key] = run_grid(d, METANEURON, {"width": width, "depth": depth},
                                  seeds=scale.seeds, lrs=scale.lrs, epochs=scale.epochs_for(name),
                                  architecture=scale.architecture, batch_size=scale.batch_size)
        ref_key = f"w{ref[0]}d{ref[1]}"
        comparisons = {}
        for width, depth in configs:
            key = f"w{width}d{depth}"
            if key != ref_key:
                comparisons[key] = welch_difference(_values(grids[key], "test"),
                                                    _values(grids[ref_key], "test"))
        out[name] = {
            "reference": ref_key,
            "configs": {f"w{w}d{dp}": {"width": w, "depth": dp,
                              "chosen_lr": g["chosen_lr"], "test": g["test"],
                              "final_val": g["final_val"],
                              "test_values": _values(g, "test"),
                              "n_params": g["n_params"],
                              "s_per_candidate_epoch": g["s_per_candidate_epoch"],
                              "near_linear": _linear_flags(g),
                              "rel_residual": _residuals(g),
                              "reused_from_part_a": f"w{w}d{dp}" in reused}
                        for (w, dp), g in zip(configs, grids.values(), strict=True)},
            "vs_reference": comparisons,
        }
    larger = [c["verdict"] for ds in out.values() for key, c in ds["vs_reference"].items()
              if ds["configs"][key]["width"] > scale.sweep_depth_width
              or ds["configs"][key]["depth"] > 1]
    # "adds little": a larger meta-neuron significantly better anywhere disagrees
    verdict = ("disagrees" if "higher" in larger else
               "agrees" if larger else "inconclusive")
    return {"per_dataset": out, "larger_vs_reference": {"outcomes": larger, "verdict": verdict}}


def _near_linear(part_a: dict[str, Any], sweeps: dict[str, Any]) -> dict[str, Any]:
    """Claim 4: the share of learned meta-neuron layer curves near-linear over the data range."""
    flags = [f for ds in part_a.values() if METANEURON in ds["families"]
             for f in _linear_flags(ds["families"][METANEURON])]
    sweep_flags = [f for ds in sweeps["per_dataset"].values()
                   for c in ds["configs"].values() if not c["reused_from_part_a"]
                   for f in c["near_linear"]]
    all_flags = flags + sweep_flags
    frac = sum(all_flags) / len(all_flags) if all_flags else math.nan
    residuals = [r for ds in part_a.values() if METANEURON in ds["families"]
                 for r in _residuals(ds["families"][METANEURON])]
    residuals += [r for ds in sweeps["per_dataset"].values()
                  for c in ds["configs"].values() if not c["reused_from_part_a"]
                  for r in c["rel_residual"]]
    spread = ({"min": float(np.min(residuals)), "median": float(np.median(residuals)),
               "max": float(np.max(residuals))} if residuals else None)
    return {"part_a": {"near_linear": sum(flags), "curves": len(flags)},
            "all_runs": {"near_linear": sum(all_flags), "curves": len(all_flags),
                         "fraction": frac, "rel_residual": spread},
            "verdict": "inconclusive" if not all_flags else
            "agrees" if sum(all_flags) > 0 else "disagrees"}


def run_part_c(scale: Scale, log: Log, data_cache: dict[str, StudyData],
               part_a: dict[str, Any]) -> dict[str, Any]:
    """All four claims; sweeps train, the rest reads Part A."""
    sweeps = _sweeps(scale, log, data_cache, part_a)
    return {"vs_fixed": _vs_fixed(part_a), "sweeps": sweeps,
            "near_linear": _near_linear(part_a, sweeps)}
