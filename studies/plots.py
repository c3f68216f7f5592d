"""The study's figures (matplotlib, Agg): every one drawn from results.json's numbers.

Six PNGs at a modest dpi so each stays well under 150 kB.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from .config import FIXED, METANEURON
from .summary import mean_curve

DPI = 80
FIXED_STYLE = "--"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(plt: Any, n: int, width: float = 4.0, height: float = 3.0,
          spare: bool = False) -> tuple[Any, list[Any]]:
    """``n`` panels, three per row; with ``spare`` one more (hidden) panel for the legend."""
    total = n + int(spare)
    cols = min(total, 3)
    rows = math.ceil(total / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:total]


def _legend(axes: list[Any], n: int) -> None:
    """The legend in the spare panel after the ``n`` data panels (or on the first one)."""
    handles, labels = axes[0].get_legend_handles_labels()
    if len(axes) > n:
        axes[n].set_visible(True)
        axes[n].axis("off")
        axes[n].legend(handles, labels, loc="center", ncol=2, fontsize=9, frameon=False)
    else:
        axes[0].legend(fontsize=7, ncol=2)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    """Write a 256-colour PNG: line plots lose nothing visible and shrink several-fold."""
    from PIL import Image

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as img:
        img.convert("RGB").quantize(256).save(path, optimize=True)
    return path


def _ci(summary: dict[str, Any]) -> float:
    """The 95% half-width, 0 where there is none (one seed, or every seed failed)."""
    v = summary.get("ci95")
    return float(v) if v is not None and math.isfinite(v) else 0.0


def _colours(families: list[str]) -> dict[str, Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10")
    return {f: cmap(i % 10) for i, f in enumerate(families)}


def _curve_panel(ax: Any, ds: dict[str, Any], families: list[str], colours: dict[str, Any],
                 title: str, bands: tuple[str, ...] | None = None) -> None:
    """Mean validation curve over seeds per family (chosen lr), +- one std for ``bands``."""
    lows = []
    for fam in families:
        run = ds["families"].get(fam)
        if run is None:
            continue
        mean, std = mean_curve([s["val_curve"] for s in run["seeds"]])
        epochs = np.arange(1, len(mean) + 1)
        style = FIXED_STYLE if fam in FIXED else "-"
        ax.plot(epochs, mean, style, color=colours[fam], lw=1.5, label=fam)
        if bands is None or fam in bands:
            ax.fill_between(epochs, mean - std, mean + std, color=colours[fam], alpha=0.12, lw=0)
        lows.append(np.nanmin(mean[len(mean) // 5:]))
    target = ds.get("relu_best_target")
    if target is not None:
        ax.axhline(target, color="black", lw=0.6, ls=":")
    if lows:
        top = np.nanmax([np.nanmax(mean_curve([s["val_curve"] for s in ds["families"][f]["seeds"]])[0])
                         for f in families if f in ds["families"]])
        low = float(np.nanmin(lows))
        ax.set_ylim(low - 0.05 * max(top - low, 1e-3), top + 0.05 * max(top - low, 1e-3))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"val {ds['dataset']['metric']}")


def plot_part_a_curves(part_a: dict[str, Any], families: list[str], path: Path) -> Path:
    """Validation metric over epochs per dataset, every family (fixed dashed)."""
    plt = _plt()
    fig, axes = _grid(plt, len(part_a), spare=True)
    colours = _colours(families)
    for ax, (name, ds) in zip(axes, part_a.items(), strict=False):
        _curve_panel(ax, ds, families, colours, f"{name} (band: relu ± std; dotted: its best)",
                     bands=("relu",))
    _legend(axes, len(part_a))
    return _save(fig, plt, path)


def plot_part_a_final(part_a: dict[str, Any], families: list[str], path: Path) -> Path:
    """Test metric mean with its 95% interval per family and dataset; ReLU's mean as a line."""
    plt = _plt()
    fig, axes = _grid(plt, len(part_a), width=4.0, height=2.8)
    colours = _colours(families)
    for ax, (name, ds) in zip(axes, part_a.items(), strict=True):
        names = [f for f in families if f in ds["families"]]
        for i, fam in enumerate(names):
            t = ds["families"][fam]["test"]
            ax.errorbar([i], [t["mean"]], yerr=[_ci(t)], fmt="o", color=colours[fam],
                        capsize=3)
            values = [s["test"] for s in ds["families"][fam]["seeds"] if s["test"] is not None]
            ax.plot([i] * len(values), values, ".", color="grey", ms=3)
        if "relu" in ds["families"]:
            ax.axhline(ds["families"]["relu"]["test"]["mean"], color="black", lw=0.6, ls=":")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        ax.set_title(f"{name}: test {ds['dataset']['metric']} (mean, 95% CI, seeds)", fontsize=9)
    return _save(fig, plt, path)


def plot_vaf_vs_fixed(part_a: dict[str, Any], path: Path) -> Path:
    """The meta-neuron against the fixed families over epochs (Part C, claim 1 and 2)."""
    plt = _plt()
    fams = [*FIXED, METANEURON]
    fig, axes = _grid(plt, len(part_a), spare=True)
    colours = _colours(fams)
    for ax, (name, ds) in zip(axes, part_a.items(), strict=False):
        _curve_panel(ax, ds, [f for f in fams if f in ds["families"]], colours,
                     f"{name}: meta-neuron vs fixed (± std)")
    _legend(axes, len(part_a))
    return _save(fig, plt, path)


def plot_sweeps(sweeps: dict[str, Any], path: Path) -> Path:
    """Test metric (mean, 95% CI) against meta-neuron width (depth 1) and depth."""
    plt = _plt()
    per = sweeps["per_dataset"]
    fig, axes = plt.subplots(len(per), 2, figsize=(8.0, 2.8 * len(per)), squeeze=False)
    for row, (name, ds) in zip(axes, per.items(), strict=True):
        ref = ds["configs"][ds["reference"]]
        for ax, axis, fixed_key, fixed_val in ((row[0], "width", "depth", 1),
                                                 (row[1], "depth", "width", ref["width"])):
            pts = sorted((c[axis], c["test"]) for c in ds["configs"].values()
                         if c[fixed_key] == fixed_val)
            xs = [p[0] for p in pts]
            ax.errorbar(xs, [p[1]["mean"] for p in pts], yerr=[_ci(p[1]) for p in pts],
                        fmt="o-", capsize=3)
            for c in ds["configs"].values():
                if c[fixed_key] == fixed_val:
                    vals = [v for v in c["test_values"] if v is not None and math.isfinite(v)]
                    ax.plot([c[axis]] * len(vals), vals, ".", color="grey", ms=3)
            if axis == "width":
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
            ax.set_xlabel(f"meta-neuron {axis}" + (" (depth 1)" if axis == "width"
                                                   else f" (width {ref['width']})"))
            ax.set_ylabel("test metric")
            ax.set_title(name, fontsize=9)
    return _save(fig, plt, path)


def plot_learned_curves(part_a: dict[str, Any], path: Path) -> Path | None:
    """Learned meta-neuron curves (final epoch, chosen lr, every seed and layer).

    Solid: non-linear; dashed: near-linear over the data range (grey span).
    """
    panels = [(n, ds["families"][METANEURON]) for n, ds in part_a.items()
              if METANEURON in ds["families"]]
    if not panels:
        return None
    plt = _plt()
    fig, axes = _grid(plt, len(panels), width=3.6, height=2.8)
    cmap = plt.get_cmap("tab10")
    for ax, (name, run) in zip(axes, panels, strict=True):
        for s in run["seeds"]:
            for row in s.get("linearity", []):
                if "x" not in row:
                    continue
                ax.plot(row["x"], row["y"], "--" if row["near_linear"] else "-",
                        color=cmap(row["layer"]), lw=1.2, alpha=0.8,
                        label=f"layer {row['layer']}" if s["seed"] == run["seeds"][0]["seed"]
                        else None)
                ax.axvspan(*row["observed"], color="grey", alpha=0.03)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(f"{name}: learned vaf (dashed: near-linear)", fontsize=8)
        ax.legend(fontsize=7)
    return _save(fig, plt, path)


def plot_search_vs_relu(part_b: dict[str, Any], path: Path) -> Path:
    """The search's final choice against the ReLU-only search: val and test, mean and 95% CI."""
    plt = _plt()
    fig, axes = _grid(plt, len(part_b), width=4.0, height=3.0)
    for ax, (name, row) in zip(axes, part_b.items(), strict=True):
        for j, key in enumerate(("search", "relu_only")):
            w = row[key]["winner"]
            if w is None:
                continue
            for k, (split, colour) in enumerate((("val", "tab:blue"), ("test", "tab:orange"))):
                x = j + (k - 0.5) * 0.25
                ax.errorbar([x], [w[split]["mean"]], yerr=[_ci(w[split])], fmt="o",
                            color=colour, capsize=3, label=split if j == 0 else None)
                vals = w[f"{split}_values"]
                ax.plot([x] * len(vals), vals, ".", color="grey", ms=3)
        labels = [f"search\n({(row['search']['winner'] or {}).get('family', '-')})", "relu-only"]
        ax.set_xticks([0, 1], labels, fontsize=8)
        ax.set_xlim(-0.6, 1.6)
        ax.set_title(f"{name}: equal trial budget", fontsize=9)
        ax.legend(fontsize=7)
    return _save(fig, plt, path)
