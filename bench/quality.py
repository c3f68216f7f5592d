"""The quality benchmark (issue #14 item 5): does the default search pick well, at fixed compute?

    python -m bench.quality                                  # the whole panel (hours on 2 cores)
    python -m bench.quality --datasets periodic,smooth_regression
    python -m bench.quality --quick --datasets periodic      # a smoke run: tiny sets and budgets
    python -m bench.quality --threads 1 --skip-loop          # no optuna loop

For each panel data set (:data:`PANEL`: the built-in catalogue's generators and tables,
each with its own fixed trials x epochs, architecture and batch size), on one machine:

1. **default**: ``actsearch search --spec S --json`` as a whole process in a fresh
   ``ACTSEARCH_HOME`` (``bench.search.run_actsearch``), no families named (every
   registered family, raced: the default ``allocation: race``), ``finalist_seeds`` 3
   (``--finalist-seeds``). Its final choice is the leaderboard's first row; its test
   metric is the mean over its finalist re-runs with a Student-t 95% interval.
2. **control**: the equal-compute ReLU-only search. Where this checkout's
   ``SearchSpec`` has ``control``, the default search's spec carries ``"control":
   "relu"`` and actsearch runs it after the finalists with the same candidate-epochs
   (search and finalists), scored on test the same way; otherwise (or with
   ``--control separate``) a second search with ``families: [relu]``, ``allocation:
   equal`` and the same trials x epochs (relu alone gets every trial). Both arms'
   candidate-epochs are read from the databases and printed.
3. **loop**: :func:`bench.optuna_loop.run_loop` (optuna-examples' loop over the fixed
   activations torch.nn has) with ``time_budget_s`` = the default search's own wall
   time (from the command's start to its last search or finalist population, so
   without the built-in control's time), trials unbounded, the set's epochs and batch
   size, on exactly the rows and scaling actsearch trains on
   (``bench.workloads.load_splits``); its best trial's test metric.

Significance is **Welch's t-test** (two-sided, alpha 0.05) of the final choice's 3 test
values against the control's 3 (the test the built-in control's verdict uses); whether
the two 95% intervals overlap is printed beside it. The loop's test metric is one
number (its best trial, one seed), so "beats the loop" is the choice's mean above it.

The last line printed is one JSON object with every figure; it is also written to
``bench/results/quality-<timestamp>.json`` (or ``--out``), with a plot beside it
(``.png``: per data set the three test metrics, intervals as error bars).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
FINALIST_SEEDS = 3
ALPHA = 0.05
#: The loop runs until its time budget; this only bounds ``study.optimize``'s trials.
LOOP_MAX_TRIALS = 100_000
QUICK_TRIALS, QUICK_EPOCHS = 16, 2
#: Families the periodic target counts as periodic (besides every trainable family).
PERIODIC_FAMILIES = ("snake", "sine")
#: Data sets a target names.
SIGNIFICANT_ON = ("periodic", "smooth_regression")
LOOP_WINS_NEEDED = 6
#: Test metrics closer than this are a tie (float32 against float64 of the same count).
TIE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class PanelSet:
    """One panel data set: a built-in with its options and the compute every arm gets."""

    name: str
    builtin: str
    options: Mapping[str, Any]
    arch: str
    trials: int
    epochs: int
    batch: int = 64  # SearchSpec's default batch size
    #: options under ``--quick`` (smaller generated sets)
    quick_options: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""

    @property
    def hidden(self) -> list[int]:
        kind, _, widths = self.arch.partition(":")
        assert kind == "mlp", f"only mlp panel sets, got {self.arch}"
        return [int(w) for w in widths.split(",")]

    def opts(self, quick: bool) -> dict[str, Any]:
        return {**self.options, **(self.quick_options if quick else {})}


#: The panel and its fixed compute (trials x epochs at the batch size, mlp:64,64 unless
#: said). Every arm of one set gets the same architecture, epochs and batch size.
PANEL: dict[str, PanelSet] = {
    p.name: p
    for p in (
        PanelSet("digits", "digits", {}, "mlp:64,64", 48, 20),
        PanelSet("breast_cancer", "breast_cancer", {}, "mlp:64,64", 48, 20),
        PanelSet("diabetes", "diabetes", {}, "mlp:64,64", 48, 20),
        PanelSet("mnist1d", "mnist1d", {"size": 5000, "seed": 42}, "mlp:64,64", 48, 20,
                 quick_options={"size": 1000}),
        PanelSet("two_spirals", "two_spirals", {"n": 1000, "noise": 0.05, "seed": 0},
                 "mlp:64,64", 48, 50, quick_options={"n": 400},
                 why="700 training rows are 11 steps an epoch: 50 epochs to bend the boundary"),
        PanelSet("teacher", "teacher", {"size": 10000}, "mlp:64,64", 24, 10,
                 quick_options={"size": 1000},
                 why="the 784-feature teacher: 10,000 rows, a smaller budget"),
        PanelSet("periodic", "periodic", {}, "mlp:64,64", 48, 20,
                 quick_options={"size": 1000}),
        PanelSet("smooth_regression", "smooth_regression", {}, "mlp:64,64", 48, 20,
                 quick_options={"size": 600}),
    )
}


# =========================================================================== statistics
def mean_ci(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its Student-t 95% interval (None for no values)."""
    if not values:
        return None, None
    from search.protocol import mean_interval

    return mean_interval([float(v) for v in values])


def welch(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p of Welch's t-test of mean(a) = mean(b) (None with fewer than 2 each).

    Two samples without spread are the same (p 1) or different (p 0), where the t
    statistic is 0/0 or x/0.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    va = sum((x - sum(a) / len(a)) ** 2 for x in a)
    vb = sum((x - sum(b) / len(b)) ** 2 for x in b)
    if va == 0 and vb == 0:
        return 1.0 if sum(a) / len(a) == sum(b) / len(b) else 0.0
    return float(stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)


def compare(choice: Sequence[float], control: Sequence[float], alpha: float = ALPHA
            ) -> dict[str, Any]:
    """The final choice's test values against the control's: Welch's test and the intervals.

    ``better``/``worse``: the difference is significant (p < alpha) in that direction;
    ``overlap``: the two 95% intervals overlap (the other reading, printed beside it).
    """
    cm, ch = mean_ci(choice)
    km, kh = mean_ci(control)
    if cm is None or km is None or ch is None or kh is None:
        return {"delta": None, "p_value": None, "better": None, "worse": None, "overlap": None}
    delta = cm - km
    p = welch(choice, control)
    significant = p is not None and p < alpha
    return {"delta": delta, "p_value": p, "better": bool(significant and delta > 0),
            "worse": bool(significant and delta < 0),
            "overlap": bool(cm - ch <= km + kh and km - kh <= cm + ch)}


def is_periodic_or_trainable(family: str | None) -> bool:
    """Whether a family counts for the periodic target: snake, sine, or any trainable family."""
    if not family:
        return False
    if family in PERIODIC_FAMILIES:
        return True
    from models.activations import get_activation

    try:
        return bool(getattr(get_activation(family), "trainable", False))
    except Exception:  # noqa: BLE001 - an unknown name is simply not one of them
        return False


# =========================================================================== one data set
def control_supported() -> bool:
    """Whether the actsearch this checkout runs has the built-in equal-compute control."""
    from search.spec import SearchSpec

    return "control" in SearchSpec.model_fields


def write_npz(p: PanelSet, directory: Path, *, quick: bool) -> Path:
    """The set as an NPZ (``X``, ``y``) made once from its generator, as bench.workloads does."""
    import numpy as np

    from search.datasets import load_builtin

    opts = p.opts(quick)
    directory.mkdir(parents=True, exist_ok=True)
    tag = "-".join(f"{k}{v}" for k, v in sorted(opts.items())) or "defaults"
    path = directory / f"quality-{p.name}-{tag}.npz"
    if not path.exists():
        ds = load_builtin(p.builtin, **opts)
        X = np.ascontiguousarray(np.asarray(ds.X, dtype=np.float32).reshape(len(ds.X), -1))
        y = np.asarray(ds.y, dtype=np.int64 if ds.task == "classification" else np.float32)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, X=X, y=y)
        tmp.replace(path)
    return path


def main_wall_s(run: dict[str, Any]) -> float:
    """Command start -> the last search or finalist population recorded (the search's own
    time, without a built-in control run after it); the whole wall if none is recorded."""
    ends = [p["finished_s"] for p in run["breakdown"]["populations"]
            if p.get("phase") in ("search", "finalist") and p.get("finished_s") is not None]
    return max(ends) if ends else float(run["wall_s"])


#: The parts of bench.search's breakdown kept in the result (where the wall time went).
BREAKDOWN_KEYS = ("startup_s", "first_epoch_s", "training_s", "coordination_s", "tail_s",
                  "k_finalist", "trials")


def summarise_default(run: dict[str, Any]) -> dict[str, Any]:
    """The default search's final choice and, where it ran, its built-in control."""
    winner = run["winner"].get("family")
    tests = run["tests"].get("finalist", {}).get(winner, []) if winner else []
    mean, half = mean_ci(tests)
    out: dict[str, Any] = {
        "family": winner, "val_mean": run["winner"].get("mean"),
        "val_ci95": run["winner"].get("ci95"), "test_values": tests, "test_mean": mean,
        "test_ci95": half, "wall_s": run["wall_s"], "main_wall_s": main_wall_s(run),
        "candidate_epochs": sum(run["candidate_epochs"].get(ph, 0)
                                for ph in ("search", "finalist")),
        "k_search": run["breakdown"]["k_search"], "leaderboard": run["leaderboard"],
        "breakdown": {k: run["breakdown"].get(k) for k in BREAKDOWN_KEYS},
    }
    return out


def summarise_control(run: dict[str, Any], *, builtin: bool, default_run: dict[str, Any]
                      ) -> dict[str, Any]:
    """The ReLU control: the built-in control of ``default_run`` or a separate relu search."""
    if builtin:
        c = default_run.get("control") or {}
        tests = [float(v) for v in c.get("test_values") or []]
        if not tests:
            tests = default_run["tests"].get("control_finalist", {}).get("relu", [])
        mean, half = mean_ci(tests)
        ce = sum(default_run["candidate_epochs"].get(ph, 0)
                 for ph in ("control", "control_finalist"))
        return {"how": "builtin", "family": c.get("family", "relu"), "test_values": tests,
                "test_mean": mean, "test_ci95": half, "val_mean": c.get("mean"),
                "val_ci95": c.get("ci95"), "verdict": c.get("verdict"),
                "p_value_actsearch": c.get("p_value"), "candidate_epochs": ce,
                "wall_s": default_run["wall_s"] - main_wall_s(default_run)}
    tests = run["tests"].get("finalist", {}).get("relu", [])
    mean, half = mean_ci(tests)
    return {"how": "separate", "family": run["winner"].get("family"), "test_values": tests,
            "test_mean": mean, "test_ci95": half, "val_mean": run["winner"].get("mean"),
            "val_ci95": run["winner"].get("ci95"), "verdict": None, "p_value_actsearch": None,
            "candidate_epochs": sum(run["candidate_epochs"].get(ph, 0)
                                    for ph in ("search", "finalist")),
            "wall_s": run["wall_s"]}


def run_set(name: str, *, quick: bool, device: str, data_dir: Path, workdir: Path,
            skip_loop: bool, control: str, keep: bool, trials: int | None = None,
            epochs: int | None = None, seeds: int = FINALIST_SEEDS,
            log: Any = None) -> dict[str, Any]:
    """Every arm on one panel set (``seeds`` finalist seeds for actsearch's arms); the
    comparison."""
    from .search import run_actsearch
    from .workloads import load_splits

    def say(text: str) -> None:
        print(f"[bench.quality] {name}: {text}", file=log or sys.stderr, flush=True)

    p = PANEL[name]
    trials = trials or (QUICK_TRIALS if quick else p.trials)
    epochs = epochs or (QUICK_EPOCHS if quick else p.epochs)
    npz = write_npz(p, data_dir, quick=quick)
    s = load_splits(npz)  # the spec's seed 0 and 15/15 fractions: actsearch's own split
    metric = "accuracy" if s.task == "classification" else "r2"
    say(f"{len(s.X_train)} train / {len(s.X_val)} val / {len(s.X_test)} test rows, {p.arch}, "
        f"{trials} trials x {epochs} epochs, batch {p.batch}, {metric}")
    builtin = control == "builtin" or (control == "auto" and control_supported())
    common = {"arch": p.arch, "trials": trials, "epochs": epochs, "batch_size": p.batch,
              "workdir": workdir, "device": device, "keep": keep}
    seeded = {"finalist_seeds": seeds}
    default_run = run_actsearch(npz, families=None, spec_extra={
        **seeded, **({"control": "relu"} if builtin else {})}, **common)
    d = summarise_default(default_run)
    say(f"default: {d['wall_s']:.1f} s ({d['main_wall_s']:.1f} s before any control), final "
        f"choice {d['family']}, test {_pm(d['test_mean'], d['test_ci95'])}")
    relu_run = None
    if not builtin:
        relu_run = run_actsearch(npz, families=["relu"],
                                 spec_extra={**seeded, "allocation": "equal"}, **common)
    c = summarise_control(relu_run or default_run, builtin=builtin, default_run=default_run)
    say(f"control ({c['how']}): {c['wall_s']:.1f} s, test {_pm(c['test_mean'], c['test_ci95'])}, "
        f"{c['candidate_epochs']} vs {d['candidate_epochs']} candidate-epochs")
    loop = None
    if not skip_loop:
        from .optuna_loop import run_loop

        res = run_loop(s.X_train, s.y_train, s.X_val, s.y_val, hidden=p.hidden,
                       trials=LOOP_MAX_TRIALS, epochs=epochs, batch_size=p.batch, task=s.task,
                       seed=0, time_budget_s=d["main_wall_s"], X_test=s.X_test,
                       y_test=s.y_test, n_outputs=s.n_classes or 1, device=device)
        loop = res.as_dict()
        loop["budget_s"] = d["main_wall_s"]
        say(f"loop: {res.wall_s:.1f} s (budget {d['main_wall_s']:.1f}), {len(res.trials)} trials, "
            f"best val {_f(res.best_value, '.4f')} ({res.best_params.get('activation', '-')}), "
            f"test {_f(res.test_value, '.4f')}")
    return evaluate_set(name, metric=metric, trials=trials, epochs=epochs, arch=p.arch,
                        batch=p.batch, rows=int(len(s.X_train) + len(s.X_val) + len(s.X_test)),
                        default=d, control=c, loop=loop)


def evaluate_set(name: str, *, metric: str, trials: int, epochs: int, arch: str, batch: int,
                 rows: int, default: dict[str, Any], control: dict[str, Any],
                 loop: dict[str, Any] | None) -> dict[str, Any]:
    """One set's row: the three arms and how they compare (pure: tested on synthetic arms)."""
    cmp = compare(default["test_values"], control["test_values"])
    loop_test = loop.get("test_value") if loop else None
    # A tie is no win: float32 means against the loop's float64 value differ in the 8th
    # digit on the same count of right answers (264/270 both ways on digits).
    beats = (None if loop_test is None or default["test_mean"] is None
             else bool(default["test_mean"] > loop_test + TIE_TOLERANCE))
    return {"dataset": name, "metric": metric, "trials": trials, "epochs": epochs, "arch": arch,
            "batch": batch, "rows": rows, "default": default, "control": control, "loop": loop,
            "vs_control": cmp, "beats_loop": beats,
            "periodic_or_trainable": is_periodic_or_trainable(default["family"])}


# =========================================================================== report
def targets(sets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets against this run (``met`` None: not measured, or the panel is
    incomplete for a count over all 8)."""
    by = {r["dataset"]: r for r in sets}
    full = set(PANEL) <= set(by)
    out: list[dict[str, Any]] = []

    def add(target: str, value: str, met: bool | None) -> None:
        out.append({"target": target, "value": value, "met": met})

    worse = [r["dataset"] for r in sets if r["vs_control"]["worse"]]
    unknown = [r["dataset"] for r in sets if r["vs_control"]["worse"] is None]
    add("default not significantly worse than the ReLU control, every set",
        f"worse on {', '.join(worse) or 'none'}"
        + (f"; no figures for {', '.join(unknown)}" if unknown else ""),
        None if unknown and not worse else not worse)
    for name in SIGNIFICANT_ON:
        if name in by:
            v = by[name]["vs_control"]
            add(f"{name}: default significantly better than the control",
                f"delta {_f(v['delta'], '+.4f')}, p {_f(v['p_value'], '.3f')}", v["better"])
    judged = [r for r in sets if r["beats_loop"] is not None]
    if judged:
        wins = sum(bool(r["beats_loop"]) for r in judged)
        add(f"default beats the loop's best at the same wall time, >= {LOOP_WINS_NEEDED} of "
            f"{len(PANEL)}", f"{wins} of {len(judged)}"
            + ("" if full and len(judged) == len(PANEL) else " (panel incomplete)"),
            bool(wins >= LOOP_WINS_NEEDED) if full and len(judged) == len(PANEL) else None)
    if "periodic" in by:
        fam = by["periodic"]["default"]["family"]
        add("periodic: a periodic or trainable family wins", str(fam),
            by["periodic"]["periodic_or_trainable"])
    return out


def _f(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _pm(mean: float | None, half: float | None) -> str:
    return "-" if mean is None else f"{mean:.4f}±{_f(half, '.4f')}"


def _yes(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "no")


COLUMNS = (f"{'data set':<17} {'metric':<8} {'budget':>7} {'final choice':<14} "
           f"{'test (95% CI)':>16} {'relu control':>16} {'delta':>8} {'p Welch':>7} "
           f"{'sig.':>6} {'CIs':>7} {'loop test':>9} {'loop act':<10} {'beats':>5} "
           f"{'wall s':>7} {'own s':>7} {'ctrl s':>7} {'loop s':>7} {'ce d/c':>11}")


def significance_label(v: dict[str, Any]) -> str:
    if v["better"]:
        return "better"
    if v["worse"]:
        return "worse"
    return "-" if v["p_value"] is None else "n.s."


def format_table(result: dict[str, Any]) -> list[str]:
    lines = [COLUMNS, "-" * len(COLUMNS)]
    for r in result["sets"]:
        d, c, loop, v = r["default"], r["control"], r["loop"], r["vs_control"]
        lines.append(
            f"{r['dataset']:<17} {r['metric']:<8} {str(r['trials']) + 'x' + str(r['epochs']):>7} "
            f"{str(d['family']):<14} {_pm(d['test_mean'], d['test_ci95']):>16} "
            f"{_pm(c['test_mean'], c['test_ci95']):>16} {_f(v['delta'], '+.4f'):>8} "
            f"{_f(v['p_value'], '.3f'):>7} {significance_label(v):>6} "
            f"{('-' if v['overlap'] is None else 'overlap' if v['overlap'] else 'apart'):>7} "
            f"{_f(loop.get('test_value') if loop else None, '.4f'):>9} "
            f"{str((loop or {}).get('best_params', {}).get('activation', '-')):<10} "
            f"{_yes(r['beats_loop']):>5} {d['wall_s']:>7.1f} {d['main_wall_s']:>7.1f} "
            f"{_f(c.get('wall_s'), '.1f'):>7} {_f(loop.get('wall_s') if loop else None, '.1f'):>7} "
            f"{str(d['candidate_epochs']) + '/' + str(c['candidate_epochs']):>11}")
    how = sorted({r["control"]["how"] for r in result["sets"]})
    lines += [
        "",
        f"test: the final choice's mean over its {result.get('finalist_seeds', 3)} finalist seeds on the test rows, Student-t 95% "
        "interval; relu control: the equal-compute ReLU-only search's finalist, the same way "
        f"({'built in: control: relu' if how == ['builtin'] else 'a separate families [relu] search, same trials x epochs' if how == ['separate'] else '/'.join(how)}); "
        f"delta: choice - control; p Welch: two-sided Welch t-test of their test values "
        f"(sig. at p < {ALPHA}: better/worse, else n.s.); CIs: the two intervals overlap or lie "
        "apart; loop test: the optuna loop's best trial (one seed) on test, given the default "
        "search's own wall time; beats: choice mean > loop test; wall s: the default command "
        "(with a built-in control); own s: up to its last search/finalist population (the "
        "loop's budget); ctrl s: the control's time; ce d/c: candidate-epochs trained, "
        "default (search + finalists) / control",
    ]
    if result.get("targets"):
        off = result["quick"] or any((result.get("overrides") or {}).values())
        lines += ["", "targets (issue #14 item 5)" + (" -- not the panel's budgets (--quick, "
                                                       "--trials or --epochs)" if off else "")
                  + ":"]
        for t in result["targets"]:
            state = "-" if t["met"] is None else ("met" if t["met"] else "NOT met")
            lines.append(f"  {t['target']:<72} {t['value']:<36} {state}")
    return lines


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Per data set: the final choice, the control and the loop's test metric (intervals as
    error bars; the choice's family under its bar)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    sets = result["sets"]
    if not sets:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(sets)), 4.5))
    width = 0.27
    arms = (("default (final choice)", "default", "#3b75af"),
            ("relu control", "control", "#a0a0a0"), ("optuna loop", "loop", "#e5894d"))
    for i, (label, key, color) in enumerate(arms):
        xs, ys, errs = [], [], []
        for j, r in enumerate(sets):
            arm = r.get(key)
            value = (arm or {}).get("test_value" if key == "loop" else "test_mean")
            if value is None:
                continue
            xs.append(j + (i - 1) * width)
            ys.append(value)
            errs.append((arm or {}).get("test_ci95") or 0.0)
        if not xs:  # e.g. --skip-loop: no bars, no legend entry
            continue
        ax.bar(xs, ys, width, yerr=None if key == "loop" else errs, capsize=3, label=label,
               color=color)
    ax.set_xlim(-0.6, len(sets) - 0.4)
    ax.set_xticks(range(len(sets)))
    ax.set_xticklabels([f"{r['dataset']}\n{r['metric']}\n({r['default']['family']})"
                        for r in sets], fontsize=8)
    values = [v for r in sets for v in (r["default"]["test_mean"], r["control"]["test_mean"],
                                        (r["loop"] or {}).get("test_value")) if v is not None]
    low = min(values, default=0.0)
    ax.set_ylim(max(0.0, low - 0.1) if low > 0 else low - 0.1, 1.0)
    ax.set_ylabel("test metric (accuracy or R²)")
    ax.set_title("bench.quality: default search vs equal-compute ReLU vs optuna loop"
                 + (" (quick)" if result["quick"] else ""), fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _machine(device: str) -> str:
    import torch

    from .engine import machine

    return machine(torch.device(device))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--datasets", default=None,
                   help=f"comma-separated, from {','.join(PANEL)} (default: all)")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_TRIALS} trials x {QUICK_EPOCHS} epochs and smaller generated "
                        "sets: a smoke run")
    p.add_argument("--skip-loop", action="store_true", help="no optuna loop")
    p.add_argument("--control", choices=("auto", "builtin", "separate"), default="auto",
                   help="the ReLU control: actsearch's built-in 'control: relu' where this "
                        "checkout has it (auto), or a separate families [relu] search")
    p.add_argument("--device", default="cpu", help="where actsearch and the loop train")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the loop and of actsearch's training (ACTSEARCH_THREADS)")
    p.add_argument("--data-dir", type=Path,
                   default=Path(tempfile.gettempdir()) / "actsearch-bench-data",
                   help="where the sets' NPZ files are made (and reused)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON result path (default bench/results/quality-<timestamp>.json); "
                        "the plot is written beside it as .png")
    p.add_argument("--keep", action="store_true", help="keep each run's ACTSEARCH_HOME")
    p.add_argument("--trials", type=int, default=None,
                   help="override every set's trials (the targets then read off other budgets)")
    p.add_argument("--epochs", type=int, default=None, help="override every set's epochs")
    p.add_argument("--finalist-seeds", type=int, default=FINALIST_SEEDS,
                   help="seeds each finalist (and the control's) is re-trained on: more seeds, "
                        "tighter intervals, more compute for every arm (the loop's wall too)")
    args = p.parse_args(argv)
    if args.finalist_seeds < 2:
        p.error("--finalist-seeds must be at least 2 (an interval needs two values)")

    names = [n.strip() for n in (args.datasets or ",".join(PANEL)).split(",") if n.strip()]
    unknown = [n for n in names if n not in PANEL]
    if unknown:
        p.error(f"unknown data sets {unknown}; choose from {', '.join(PANEL)}")
    if args.control == "builtin" and not control_supported():
        p.error("--control builtin: this checkout's SearchSpec has no 'control' field")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be at least 1")
        os.environ["ACTSEARCH_THREADS"] = str(args.threads)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda asked for, but CUDA is not available here")
    env_threads = os.environ.get("ACTSEARCH_THREADS")
    torch.set_num_threads(max(1, int(env_threads) if env_threads else (os.cpu_count() or 1)))
    load_start = [round(v, 2) for v in os.getloadavg()]
    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    try:
        sets = [run_set(n, quick=args.quick, device=str(device), data_dir=args.data_dir,
                        workdir=workdir, skip_loop=args.skip_loop, control=args.control,
                        keep=args.keep, trials=args.trials, epochs=args.epochs,
                        seeds=args.finalist_seeds) for n in names]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "bench": "quality", "device": str(device), "machine": _machine(str(device)),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "quick": args.quick,
        "overrides": {"trials": args.trials, "epochs": args.epochs},
        "finalist_seeds": args.finalist_seeds, "alpha": ALPHA, "test": "welch",
        "control_builtin_supported": control_supported(), "loadavg_start": load_start,
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "total_s": time.perf_counter() - t0,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sets": sets,
    }
    result["targets"] = targets(sets)
    for line in format_table(result):
        print(line)
    print(f"\n{result['machine']}; torch threads {result['threads']}; load average "
          f"{load_start} -> {result['loadavg_end']}; {result['total_s']:.0f} s in all")
    out = args.out or RESULTS / f"quality-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    png = plot(result, out.with_suffix(".png"))
    print(f"written: {out}" + (f", {png}" if png else ""))
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
