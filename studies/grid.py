"""One family configuration on one dataset: the learning-rate grid x seeds, via the engine.

For each seed, one population trains one candidate per learning rate (``K = len(lrs)``)
with that seed for the weights *and* the batch order (``data_seed``), so seeds are
independent replications. The learning rate kept is the one with the best mean final
validation metric over seeds; its runs are scored once on the test rows, which took
no part in the choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.activations import get_activation
from models.engine import evaluate, train_population
from models.spec import ArchSpec, Candidate, TrainConfig

from .data import StudyData
from .summary import curve_linearity, summarise


def _choose_lr(runs: list[dict[str, Any]], lrs: Sequence[float]) -> float:
    """The lr with the best mean final validation metric over seeds (a diverged run counts -inf)."""
    def score(lr: float) -> float:
        finals = [r["final_val"] for r in runs if r["lr"] == lr]
        vals = [v if v is not None and math.isfinite(v) else -math.inf for v in finals]
        return float(np.mean(vals))

    return max(lrs, key=score)  # ties keep the first (smallest) lr


def run_grid(d: StudyData, family: str, act_params: dict[str, Any], *, seeds: Sequence[int],
             lrs: Sequence[float], epochs: int, architecture: str, batch_size: int,
             keep_curves: bool = False) -> dict[str, Any]:
    """Train ``family`` (with ``act_params``) on ``d`` for every (seed, lr); summarise the best lr.

    Returns a JSON-able dict: every run's per-epoch validation curve, the chosen lr,
    the chosen lr's per-seed final validation and test metrics with their summaries,
    wall time per candidate-epoch, parameter count and, for trainable families, which
    learned curves are near-linear over the data range.
    """
    arch = ArchSpec.parse(architecture)
    trainable = get_activation(family).trainable
    runs: list[dict[str, Any]] = []
    results: dict[tuple[int, float], Any] = {}
    wall, cand_epochs, n_params, flops = 0.0, 0, 0, 0
    for seed in seeds:
        candidates = [Candidate(seed=seed, lr=lr, act_params=dict(act_params)) for lr in lrs]
        config = TrainConfig(epochs=epochs, batch_size=batch_size, data_seed=seed,
                             record_epochs=2)
        pop = train_population(arch, family, candidates, d.data, config)
        wall += pop.wall_s
        cand_epochs += pop.candidate_epochs
        n_params, flops = pop.n_params, pop.flops
        for res, lr in zip(pop.candidates, lrs, strict=True):
            curve = [h["val_metric"] for h in res.history]
            runs.append({"seed": seed, "lr": lr, "status": res.status, "val_curve": curve,
                         "final_val": res.val_metric if res.status == "complete" else None,
                         "error": res.error})
            results[(seed, lr)] = res
    lr = _choose_lr(runs, lrs)
    chosen = []
    for seed in seeds:
        res = results[(seed, lr)]
        test = None
        if res.status == "complete" and res.state_dict is not None:
            test = evaluate(arch, family, act_params, res.state_dict, d.X_test, d.y_test,
                            d.n_outputs, d.task)
        row: dict[str, Any] = {
            "seed": seed, "val_curve": [h["val_metric"] for h in res.history],
            "final_val": res.val_metric if res.status == "complete" else None, "test": test,
        }
        if trainable and res.curves:
            row["linearity"] = curve_linearity(res.curves, res.preact_stats,
                                               keep_curve=keep_curves)
        chosen.append(row)
    nan = float("nan")
    return {
        "family": family, "act_params": act_params, "chosen_lr": lr, "runs": runs,
        "seeds": chosen,
        "final_val": summarise([r["final_val"] if r["final_val"] is not None else nan
                                for r in chosen]),
        "test": summarise([r["test"] if r["test"] is not None else nan for r in chosen]),
        "wall_s": wall, "candidate_epochs": cand_epochs,
        "s_per_candidate_epoch": wall / max(cand_epochs, 1),
        "n_params": n_params, "flops": flops,
    }
