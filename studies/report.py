"""Tables (terminal and Markdown) and the REPORT.md text, all from the results dict.

:func:`part_a_rows` is the one place a table row's numbers come from; the terminal
table and the Markdown table both format those rows, so they cannot disagree.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

from .config import BASELINE, FIXED, METANEURON


# ----- formatting -----------------------------------------------------------------------------
def fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}"


def fmt_pm(summary: dict[str, Any], key: str = "std", digits: int = 3) -> str:
    """``mean ± spread`` (and the failed-seed count when any seed diverged)."""
    text = f"{fmt(summary['mean'], digits)} ± {fmt(summary[key], digits)}"
    if summary.get("n_failed"):
        text += f" ({summary['n_failed']} failed)"
    return text


def fmt_diff(d: dict[str, Any], digits: int = 3) -> str:
    return f"{d['diff']:+.{digits}f} [{fmt(d['lo'], digits)}, {fmt(d['hi'], digits)}] {d['verdict']}"


def fmt_epochs(e: dict[str, Any] | None) -> str:
    if e is None:
        return "-"
    if e["mean"] is None:
        return f"never (0/{e['n']})"
    return f"{e['mean']:.1f} ({e['reached']}/{e['n']})"


# ----- machine ----------------------------------------------------------------------------------
def machine_info(threads: int) -> dict[str, Any]:
    """CPU model, cores, load, torch and Python versions: what the timings ran on."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": threads, "python": platform.python_version(),
            "platform": platform.platform(), "load_avg_1_5_15": list(load) if load else None}


# ----- Part A -----------------------------------------------------------------------------------
def part_a_rows(part_a: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (dataset, family): numbers and their formatted cells."""
    rows = []
    for name, ds in part_a.items():
        for fam, run in ds["families"].items():
            flags = [r["near_linear"] for s in run["seeds"] for r in s.get("linearity", [])]
            rows.append({
                "dataset": name, "family": fam, "metric": ds["dataset"]["metric"],
                "test_mean": run["test"]["mean"], "val_mean": run["final_val"]["mean"],
                "cells": [name, fam, f"{run['chosen_lr']:g}", fmt_pm(run["final_val"]),
                          fmt_pm(run["test"]), f"± {fmt(run['test']['ci95'])}",
                          fmt_epochs(run.get("epochs_to_relu_best")),
                          f"{1000 * run['s_per_candidate_epoch']:.1f}", str(run["n_params"]),
                          f"{sum(flags)}/{len(flags)}" if flags else "-"],
            })
    return rows


PART_A_HEADER = ["dataset", "family", "lr", "val (mean ± std)", "test (mean ± std)", "test 95% CI",
                 "epochs to ReLU best", "ms / cand-epoch", "params", "near-linear layers"]


def print_tables(results: dict[str, Any]) -> None:
    """The terminal tables (Rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title="Part A: final-epoch metric over seeds (accuracy; diabetes: R²)",
                  title_justify="left")
    for h in PART_A_HEADER:
        table.add_column(h)
    for row in part_a_rows(results["part_a"]):
        table.add_row(*row["cells"])
    console.print(table)
    if results.get("part_b"):
        tb = Table(title="Part B: search vs ReLU-only search (equal trials)", title_justify="left")
        for h in PART_B_HEADER:
            tb.add_column(h)
        for cells in part_b_rows(results["part_b"]):
            tb.add_row(*cells)
        console.print(tb)
    if results.get("part_c"):
        for line in claim_lines(results["part_c"]):
            console.print(line, highlight=False)


# ----- Part B -----------------------------------------------------------------------------------
PART_B_HEADER = ["dataset", "search's choice", "val (mean ± 95%)", "test (mean ± 95%)",
                 "relu-only val", "relu-only test", "test diff (Welch 95%)", "trials", "wall s"]


def part_b_rows(part_b: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, row in part_b.items():
        s, r = row["search"]["winner"], row["relu_only"]["winner"]
        if s is None or r is None:
            rows.append([name, "no finished finalist", "-", "-", "-", "-", "-", "-", "-"])
            continue
        choice = " ".join([s["family"], *(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in s["family_params"].items())])
        rows.append([name, choice, fmt_pm(s["val"], "ci95"), fmt_pm(s["test"], "ci95"),
                     fmt_pm(r["val"], "ci95"), fmt_pm(r["test"], "ci95"),
                     fmt_diff(row["test_diff"]),
                     f"{row['search']['search_trials']} / {row['relu_only']['search_trials']}",
                     f"{row['search']['wall_s']:.0f} / {row['relu_only']['wall_s']:.0f}"])
    return rows


# ----- Part C -----------------------------------------------------------------------------------
def _counts(outcomes: list[str]) -> str:
    n = len(outcomes)
    return (f"higher on {outcomes.count('higher')}/{n}, lower on {outcomes.count('lower')}/{n}, "
            f"n.s. on {outcomes.count('n.s.')}/{n}")


def claim_lines(part_c: dict[str, Any]) -> list[str]:
    """One line per claim: its verdict and the per-dataset outcomes behind it."""
    vf, sw, nl = part_c["vs_fixed"], part_c["sweeps"], part_c["near_linear"]
    frac = nl["all_runs"]["fraction"]
    return [
        f"C1 accuracy, vaf vs relu: {vf['accuracy_vs_relu']['verdict']} "
        f"({_counts(vf['accuracy_vs_relu']['outcomes'])}); vs the best fixed: "
        f"{vf['accuracy_vs_best_fixed']['verdict']} ({_counts(vf['accuracy_vs_best_fixed']['outcomes'])})",
        "C2 convergence (val after a quarter of the epochs), vaf vs relu: "
        f"{vf['convergence_vs_relu']['verdict']} ({_counts(vf['convergence_vs_relu']['outcomes'])})",
        f"C3 wider/deeper adds little: {sw['larger_vs_reference']['verdict']} "
        f"(larger meta-neurons vs the reference: {_counts(sw['larger_vs_reference']['outcomes'])})",
        f"C4 near-linear meta-neurons: {nl['verdict']} ({nl['all_runs']['near_linear']}/"
        f"{nl['all_runs']['curves']} layer curves{'' if math.isnan(frac) else f', {frac:.0%}'})",
    ]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return out


def _claim_paragraphs(part_c: dict[str, Any], scale: dict[str, Any]) -> list[str]:
    vf, sw, nl = part_c["vs_fixed"], part_c["sweeps"], part_c["near_linear"]
    n = len(scale["seeds"])
    lines = ["The claims below are those the VAF / meta-neuron line of work makes, stated in "
             "our own words (no citation was checked here); each is tested on this study's "
             "runs with the rule in `studies/part_c.py`: *agrees* when the meta-neuron is "
             "significantly better on at least half the datasets and worse on none, "
             "*disagrees* when worse somewhere and better nowhere, *mixed* when both, else "
             "*inconclusive*. Claim 3 *disagrees* if any wider or deeper meta-neuron is "
             "significantly better than the reference; claim 4 *agrees* if any learned curve "
             "is near-linear.", "",
             "### Claim 1: meta-neuron nets reach higher accuracy than fixed-activation nets", ""]
    rows = []
    for name, r in vf["per_dataset"].items():
        rows.append([name, r["metric"]] + [fmt_diff(r["test_vs"][f]) if f in r["test_vs"] else "-"
                                           for f in FIXED] + [r.get("best_fixed", "-")])
    lines += _md_table(["dataset", "metric"] + [f"vaf − {f} (test)" for f in FIXED]
                       + ["best fixed"], rows)
    lines += ["", f"**Verdict vs ReLU: {vf['accuracy_vs_relu']['verdict']}; vs the best fixed "
              f"activation per dataset: {vf['accuracy_vs_best_fixed']['verdict']}** (outcomes "
              f"per dataset: {', '.join(vf['accuracy_vs_relu']['outcomes'])} vs ReLU). With {n} "
              "seeds a Welch interval only excludes 0 for differences of a few times the "
              "seed-to-seed spread, so `n.s.` means no detectable gain at this scale, not "
              "equality.", ""]
    conv = vf["convergence_vs_relu"]
    lines += ["### Claim 2: meta-neuron nets converge in fewer epochs", ""]
    rows = [[name, str(r["early_epoch"]), fmt_diff(r["early_vs_relu"]),
             fmt_epochs(r["epochs_to_relu_best"]["vaf"]), fmt_epochs(r["epochs_to_relu_best"]["relu"])]
            for name, r in vf["per_dataset"].items() if "early_vs_relu" in r]
    lines += _md_table(["dataset", "early epoch", "vaf − relu val at that epoch",
                        "vaf epochs to ReLU best", "relu epochs to its own best"], rows)
    lines += ["", f"**Verdict: {conv['verdict']}** (outcomes: {', '.join(conv['outcomes'])}).", ""]
    lines += ["### Claim 3: a small meta-neuron suffices; wider or deeper ones add little", ""]
    rows = []
    for name, ds in sw["per_dataset"].items():
        for key, c in sorted(ds["configs"].items(), key=lambda kv: (kv[1]["depth"], kv[1]["width"])):
            cmp = ds["vs_reference"].get(key)
            rows.append([name, str(c["width"]), str(c["depth"]), f"{c['chosen_lr']:g}",
                         str(c["n_params"]), fmt_pm(c["test"]), fmt_pm(c["test"], "ci95"),
                         "reference" if cmp is None else fmt_diff(cmp),
                         f"{sum(c['near_linear'])}/{len(c['near_linear'])}"])
    lines += _md_table(["dataset", "width", "depth", "lr", "params", "test (mean ± std)",
                        "test (± 95%)", "− reference (Welch 95%)", "near-linear"], rows)
    lines += ["", f"**Verdict: {sw['larger_vs_reference']['verdict']}** (larger meta-neurons vs "
              f"the reference: {', '.join(sw['larger_vs_reference']['outcomes'])}).", ""]
    lines += ["### Claim 4: some learned activations end up near-linear", "",
              f"**Verdict: {nl['verdict']}**: {nl['all_runs']['near_linear']} of "
              f"{nl['all_runs']['curves']} learned meta-neuron layer curves "
              f"({fmt(100 * nl['all_runs']['fraction'], 0)}%) are within 5% of a straight line "
              "over the observed pre-activation range (density-weighted, "
              "`search.analysis.is_near_linear`); Part A's default meta-neuron alone: "
              f"{nl['part_a']['near_linear']}/{nl['part_a']['curves']}. {_residual_text(nl)}", ""]
    return lines


def _epoch_overrides(scale: dict[str, Any]) -> str:
    extra = ", ".join(f"{k}: {v}" for k, v in scale["dataset_epochs"].items())
    return f"except {extra}" if extra else "every dataset"


def _residual_text(nl: dict[str, Any]) -> str:
    r = nl["all_runs"].get("rel_residual")
    if not r:
        return ""
    return (f"Distance from the best straight line, as a share of the curve's range over the "
            f"data: min {r['min']:.0%}, median {r['median']:.0%}, max {r['max']:.0%} "
            "(near-linear: at most 5%).")


def _protocol(scale: dict[str, Any]) -> list[str]:
    lrs = ", ".join(f"{lr:g}" for lr in scale["lrs"])
    return [
        "## Protocol",
        "",
        f"* Architecture `{scale['architecture']}` for every family, Adam, cosine schedule, batch "
        f"{scale['batch_size']}, no weight decay, {scale['epochs']} epochs "
        f"({_epoch_overrides(scale)}); each family with its "
        "default parameters (vaf: width 4, depth 1, inner relu, one meta-neuron per layer).",
        "* Split: the product's `split_dataset(seed=0)`, 70/15/15, stratified, scaled on the "
        "training rows; the same rows for every family and seed.",
        f"* Seeds {scale['seeds']}: seed s sets the weight init and the batch order. For each "
        f"seed one population trains one candidate per learning rate ({lrs}); the lr with the best "
        "mean final validation metric over seeds is kept, and only its runs are reported. The "
        "test rows took no part in that choice, so the test columns carry no selection bias; "
        "the validation columns do (slightly, equally for every family).",
        "* Spread: std over seeds; 95% interval: Student t over seeds; differences: Welch's "
        "95% interval (`higher`/`lower` when it excludes 0, else `n.s.`).",
        "* Epochs to ReLU best: the target is the maximum over epochs of ReLU's mean validation "
        "curve; per seed, the first epoch at or above it; mean over the seeds that reach it "
        "(reached/seeds; `never` if none).",
        "* Timing: training wall time of the populations (evaluation and curve recording "
        "included) / candidate-epochs; the machine was shared with other jobs, so treat "
        "timings as rough ratios.",
        "* Part B: two real embedded searches per dataset (`search.service` + "
        f"`search.coordinator`, TPE, median pruner, seed 0, {scale['search_epochs']} epochs): all "
        f"{len(scale['search_families'])} families with {scale['search_trials_per_family']} "
        "trials each, and ReLU alone with the same total; each search re-trains its finalists "
        f"on {scale['search_finalist_seeds']} fresh seeds and scores its final choice on test.",
        "",
    ]


def write_report(results: dict[str, Any], plots: dict[str, str], path: Path) -> Path:
    """REPORT.md: run facts, protocol, tables, claims and links to the plots."""
    meta, scale = results["meta"], results["scale"]
    m = meta["machine"]
    lines = [
        "# Activation study: fixed vs trainable activations, search vs ReLU, meta-neuron claims",
        "",
        f"Generated by `{meta['command']}` on {meta['date_utc']} (UTC) in "
        f"{meta['wall_s'] / 60:.1f} min. Machine: {m['cpu']}, {m['cores']} cores "
        f"({m['torch_threads']} torch threads), torch {m['torch']}, Python {m['python']}; "
        f"1-minute load average {_load(m['load_avg_1_5_15'])} at the start and "
        f"{_load(meta.get('load_avg_end'))} at the end (a machine shared with other jobs). "
        "Every number below is in [results.json](" + plots["results.json"] + ") with its "
        "per-seed values; `python -m studies.activation_study --replot` redraws the plots and "
        "this report from it.",
        "",
    ]
    lines += _summary(results)
    lines += _protocol(scale)
    lines += ["## Part A: fixed vs trainable activations", "",
              f"![validation curves]({plots['a_curves']})", "",
              f"![test metric per family]({plots['a_final']})", ""]
    lines += _md_table(PART_A_HEADER, [r["cells"] for r in part_a_rows(results["part_a"])])
    lines += ["", _part_a_summary(results["part_a"]), ""]
    if results.get("part_b"):
        lines += ["## Part B: the search against a ReLU-only search with the same trials", "",
                  f"![search vs relu]({plots['b_search']})", ""]
        lines += _md_table(PART_B_HEADER, part_b_rows(results["part_b"]))
        lines += ["", _part_b_summary(results["part_b"]), ""]
    if results.get("part_c"):
        lines += ["## Part C: the meta-neuron (VAF) claims at this scale", "",
                  f"![meta-neuron vs fixed]({plots['c_vs_fixed']})", "",
                  f"![width and depth sweeps]({plots['c_sweeps']})", ""]
        if "c_learned" in plots:
            lines += [f"![learned meta-neurons]({plots['c_learned']})", ""]
        lines += _claim_paragraphs(results["part_c"], scale)
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(avg: list[float] | None) -> str:
    return "-" if not avg else f"{avg[0]:.1f}"


def vs_relu_outcomes(part_a: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``{family: {dataset: higher|lower|n.s.}}``: each family's test metric against ReLU's."""
    from .summary import welch_difference

    out: dict[str, dict[str, str]] = {}
    for name, ds in part_a.items():
        fams = ds["families"]
        if BASELINE not in fams:
            continue
        base = [s["test"] if s["test"] is not None else math.nan for s in fams[BASELINE]["seeds"]]
        for fam, run in fams.items():
            if fam != BASELINE:
                vals = [s["test"] if s["test"] is not None else math.nan for s in run["seeds"]]
                out.setdefault(fam, {})[name] = welch_difference(vals, base)["verdict"]
    return out


def _summary(results: dict[str, Any]) -> list[str]:
    """The findings in a few lines, each computed from the tables below."""
    lines = ["## Summary", ""]
    outcomes = vs_relu_outcomes(results["part_a"])
    if outcomes:
        trainable = [v for f, d in outcomes.items() if f not in FIXED for v in d.values()]
        per_family = "; ".join(
            f"{f}: {list(d.values()).count('higher')} above, {list(d.values()).count('lower')} below"
            for f, d in outcomes.items())
        lines.append(
            f"* **Part A** (test metric vs ReLU, Welch 95%, {len(results['scale']['seeds'])} "
            f"seeds): of {len(trainable)} (dataset, trainable family) pairs, "
            f"{trainable.count('higher')} are significantly above ReLU, "
            f"{trainable.count('lower')} below, and {trainable.count('n.s.')} not "
            f"distinguishable. Per family, datasets above / below ReLU: {per_family}.")
    if results.get("part_b"):
        lines.append(f"* **Part B**: {_part_b_summary(results['part_b'])}")
    if results.get("part_c"):
        lines.append("* **Part C** (meta-neuron claims): " + " ".join(
            line + "." for line in claim_lines(results["part_c"])))
    return lines + [""]


def _part_a_summary(part_a: dict[str, Any]) -> str:
    """Which families beat ReLU on test with a Welch interval above 0, per dataset."""
    outcomes = vs_relu_outcomes(part_a)
    parts = []
    for name, ds in part_a.items():
        fams = ds["families"]
        if BASELINE not in fams:
            continue
        better = [f for f, d in outcomes.items() if d.get(name) == "higher"]
        worse = [f for f, d in outcomes.items() if d.get(name) == "lower"]
        best = max(fams, key=lambda f: fams[f]["test"]["mean"]
                   if fams[f]["test"]["mean"] is not None
                   and math.isfinite(fams[f]["test"]["mean"]) else -math.inf)
        parts.append(f"{name}: best mean {best}; significantly above ReLU: "
                     f"{', '.join(better) or 'none'}; below: {', '.join(worse) or 'none'}")
    return ("Against ReLU on test (Welch 95%): " + "; ".join(parts) + "." if parts else "")


def _part_b_summary(part_b: dict[str, Any]) -> str:
    parts = []
    for name, row in part_b.items():
        if "test_diff" not in row:
            parts.append(f"{name}: a search had no finished finalist")
            continue
        d = row["test_diff"]
        word = {"higher": "beats", "lower": "is below", "n.s.": "does not significantly beat"}
        parts.append(f"{name}: the search's choice ({row['search']['winner']['family']}) "
                     f"{word[d['verdict']]} the tuned ReLU on test ({d['diff']:+.3f}, Welch 95% "
                     f"[{fmt(d['lo'])}, {fmt(d['hi'])}])")
    return "; ".join(parts) + ". " + (
        "The search's validation means are optimistic: it picked its choice among "
        "several families' finalists on the same validation rows; the test columns are not.")


__all__ = ["METANEURON", "claim_lines", "machine_info", "part_a_rows", "part_b_rows",
           "print_tables", "write_report"]
