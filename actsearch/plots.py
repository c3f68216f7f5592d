"""Pictures of learned activations: a PNG (matplotlib) and an ASCII sketch for the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _unit_curve(y: np.ndarray) -> np.ndarray:
    """One line per stored curve: a per-unit family's (U, G) is summarised by its median unit."""
    y = np.asarray(y, dtype=np.float32)
    return y.reshape(-1, y.shape[-1])


def plot_curves_png(curves: Sequence[dict[str, Any]], stats: Sequence[dict[str, Any]], path: Path,
                    title: str) -> Path:
    """Learned curves per layer (colour = epoch), with the pre-activation histogram beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({c["layer"] for c in curves})
    if not layers:
        raise ValueError("no curves to plot")
    fig, axes = plt.subplots(2, len(layers), figsize=(4.2 * len(layers), 6.0), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]}, sharex="col")
    cmap = plt.get_cmap("viridis")
    for col, layer in enumerate(layers):
        ax, hax = axes[0][col], axes[1][col]
        mine = sorted((c for c in curves if c["layer"] == layer), key=lambda c: c["epoch"])
        last_epoch = max(c["epoch"] for c in mine) or 1
        for c in mine:
            ys = _unit_curve(c["y"])
            colour = cmap(c["epoch"] / last_epoch)
            label = f"epoch {c['epoch']}"
            if ys.shape[0] == 1:
                ax.plot(c["x"], ys[0], color=colour, label=label, lw=1.8)
            else:  # per-unit family: every unit faint, the median bold
                for row in ys[: min(len(ys), 32)]:
                    ax.plot(c["x"], row, color=colour, alpha=0.15, lw=0.8)
                ax.plot(c["x"], np.median(ys, axis=0), color=colour, label=f"{label} (median unit)", lw=2)
        ax.set_title(f"layer {layer}")
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ax.legend(fontsize=7)
        hist = [s for s in stats if s["layer"] == layer]
        if hist:
            s = max(hist, key=lambda s: s["epoch"])
            edges = np.asarray(s["edges"])
            hax.bar(edges[:-1], np.asarray(s["hist"]), width=np.diff(edges), align="edge",
                    color="tab:grey")
            hax.set_xlabel(f"pre-activation (epoch {s['epoch']}); dead {s['dead_fraction']:.0%}")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ascii_sketch(x: np.ndarray, y: np.ndarray, width: int = 60, height: int = 14) -> str:
    """A terminal plot of one curve, with the axes marked where they fall."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xs = np.linspace(x.min(), x.max(), width)
    ys = np.interp(xs, x, y)
    lo, hi = float(ys.min()), float(ys.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0
    grid = [[" "] * width for _ in range(height)]
    row_of = lambda v: int(round((hi - v) / (hi - lo) * (height - 1)))  # noqa: E731
    if lo <= 0 <= hi:
        for c in range(width):
            grid[row_of(0.0)][c] = "-"
    if x.min() <= 0 <= x.max():
        col0 = int(round((0 - x.min()) / (x.max() - x.min()) * (width - 1)))
        for r in range(height):
            grid[r][col0] = "|"
    for c, v in enumerate(ys):
        grid[row_of(v)][c] = "*"
    lines = ["".join(r) for r in grid]
    lines[0] += f"  {hi:+.2f}"
    lines[-1] += f"  {lo:+.2f}"
    lines.append(f"{x.min():+.2f}".ljust(width - 6) + f"{x.max():+.2f}")
    return "\n".join(lines)
