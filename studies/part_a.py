"""Part A: fixed against trainable activations, same architecture, epochs and lr grid.

Per dataset and family: :func:`studies.grid.run_grid` (lr grid x seeds), then the
epochs each family needs to reach the ReLU baseline's best, where that target is the
maximum over epochs of ReLU's mean (over seeds) validation curve at its chosen lr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .config import BASELINE, METANEURON, Scale
from .data import StudyData, load_study_data
from .grid import run_grid
from .summary import epochs_to_target, mean_curve

Log = Callable[[str], None]


def run_part_a(scale: Scale, log: Log, data_cache: dict[str, StudyData]) -> dict[str, Any]:
    """Every (dataset, family) of the scale; returns ``{dataset: {...}}`` for results.json."""
    out: dict[str, Any] = {}
    for name in scale.datasets:
        d = data_cache.setdefault(name, load_study_data(name, scale.dataset_options.get(name)))
        families: dict[str, Any] = {}
        for family in scale.families:
            log(f"A  {name:<14} {family}")
            families[family] = run_grid(
                d, family, {}, seeds=scale.seeds, lrs=scale.lrs, epochs=scale.epochs_for(name),
                architecture=scale.architecture, batch_size=scale.batch_size,
                keep_curves=family == METANEURON)
        target = None
        if BASELINE in families:
            mean, _ = mean_curve([s["val_curve"] for s in families[BASELINE]["seeds"]])
            target = float(np.nanmax(mean))
        for fam in families.values():
            fam["epochs_to_relu_best"] = (
                None if target is None
                else epochs_to_target([s["val_curve"] for s in fam["seeds"]], target))
        out[name] = {"dataset": d.describe(), "epochs": scale.epochs_for(name),
                     "relu_best_target": target, "families": families}
    return out
