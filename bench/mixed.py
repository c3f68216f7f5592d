"""Mixed-family populations and per-structure costs, measured in one run.

    python -m bench.mixed                       # digits mlp:64,64, K=32 and 64
    python -m bench.mixed --structures          # + per-structure cost vs relu (digits, MNIST-shaped)

Three figures for the default 8-family search (``search.spec.DEFAULT_FAMILIES``):

* **relu**: one ReLU-only population of K candidates (the engine's best case);
* **mixed**: one population of the same K holding K/8 candidates of each family
  (:class:`models.activations.mixed.MixedActivation`);
* **today**: 8 single-family populations of 4 candidates, one after another (what a
  default search ran before mixing: a third of each family's trials per population),
  scaled to the same number of candidate-epochs.

Candidate-epochs per second, wall time from the call's start (setup, compiles and
validation included), best of ``--repeats``; ratios are within the run. With
``--structures``: seconds per candidate-epoch of each trainable family at the
structures its space offers, over ReLU's in the same run, at K=32, eager and compiled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from models import kernels
from models.engine import train_population
from models.sizing import population_size, tune_cpu
from models.spec import ArchSpec, Candidate, TrainConfig

from .engine import BATCH, Split, digits, learning_rates, mnist_shaped

FAMILIES = ["relu", "leaky_relu", "elu", "gelu", "silu", "prelu", "rational", "vaf"]
# the structures each trainable family's space offers (models/activations/*.py space())
STRUCTURES: list[tuple[str, dict[str, Any]]] = [
    ("vaf", {"width": 4}), ("vaf", {"width": 6}), ("vaf", {"width": 16}),
    ("vaf", {"width": 6, "depth": 2}), ("vaf", {"width": 6, "depth": 3}),
    ("vaf", {"width": 6, "depth": 3, "residual": False}), ("vaf", {"width": 4, "sharing": "unit"}),
    ("rational", {"m": 3}), ("rational", {"m": 6}), ("rational", {"m": 5, "sharing": "unit"}),
    ("spline", {"grid": 5}), ("spline", {"grid": 16}),
    ("apl", {"hinges": 2}), ("apl", {"hinges": 6, "sharing": "unit"}),
    ("prelu", {}),
]


def cands(families: Sequence[tuple[str, dict[str, Any]]]) -> list[Candidate]:
    lrs = learning_rates(len(families))
    return [Candidate(seed=i, lr=lrs[i], act_params=dict(p), family=f)
            for i, (f, p) in enumerate(families)]


def timed(split: Split, arch: ArchSpec, pops: list[list[tuple[str, dict[str, Any]]]], epochs: int,
          repeats: int) -> dict[str, float]:
    """Train the populations one after another; best total wall of ``repeats``."""
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, schedule="constant", record_epochs=0)
    data = split.tensor_data()
    best = float("inf")
    ce = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        ce = 0
        for pop in pops:
            ce += train_population(arch, None, cands(pop), data, cfg).candidate_epochs
        best = min(best, time.perf_counter() - t0)
    return {"wall_s": best, "candidate_epochs": ce, "cand_epochs_per_s": ce / best}


def mixed_workload(split: Split, arch_text: str, ks: Sequence[int], epochs: int,
                   repeats: int) -> list[dict[str, Any]]:
    arch = ArchSpec.parse(arch_text)
    out = []
    # one untimed pass of each family first: compiles and lazy init happen outside the timings
    timed(split, arch, [[(f, {})] * 4 for f in FAMILIES], 1, 1)
    for k in ks:
        per = max(1, k // len(FAMILIES))
        paths = {
            "relu": [[("relu", {})] * k],
            "mixed": [[(f, {}) for f in FAMILIES for _ in range(per)]],
            "today": [[(f, {})] * 4 for f in FAMILIES] * max(1, per // 4),
        }
        # interleaved rounds, best per path: a load spike on a shared machine hits one
        # round of one path, not a whole path
        best: dict[str, dict[str, float]] = {}
        for _ in range(repeats):
            for name, pops in paths.items():
                r = timed(split, arch, pops, epochs, 1)
                if name not in best or r["wall_s"] < best[name]["wall_s"]:
                    best[name] = r
        relu, mixed, today = best["relu"], best["mixed"], best["today"]
        row = {"arch": arch_text, "k": k, "relu": relu, "mixed": mixed, "today": today,
               "mixed_over_relu": mixed["cand_epochs_per_s"] / relu["cand_epochs_per_s"],
               "mixed_over_today": mixed["cand_epochs_per_s"] / today["cand_epochs_per_s"]}
        out.append(row)
        print(f"[mixed] {split.name} {arch_text} K={k}: relu {relu['cand_epochs_per_s']:.1f}, "
              f"mixed {mixed['cand_epochs_per_s']:.1f}, today (8 x K=4) "
              f"{today['cand_epochs_per_s']:.1f} cand-ep/s", file=sys.stderr, flush=True)
    return out


def structure_costs(split: Split, arch_text: str, k: int, epochs: int, repeats: int,
                    compile_modes: Sequence[str],
                    structures: Sequence[tuple[str, dict[str, Any]]] | None = None,
                    ) -> list[dict[str, Any]]:
    arch = ArchSpec.parse(arch_text)
    out = []
    for mode in compile_modes:
        old = os.environ.get("ACTSEARCH_COMPILE")
        os.environ["ACTSEARCH_COMPILE"] = mode
        try:
            relu = timed(split, arch, [[("relu", {})] * k], epochs, repeats)
            for fam, params in (STRUCTURES if structures is None else structures):
                t0 = time.perf_counter()
                timed(split, arch, [[(fam, params)] * k], 1, 1)  # warm-up: the compile
                warm = time.perf_counter() - t0
                r = timed(split, arch, [[(fam, params)] * k], epochs, repeats)
                ratio = relu["cand_epochs_per_s"] / r["cand_epochs_per_s"]
                out.append({"arch": arch_text, "family": fam, "params": params, "compile": mode,
                            "k": k, "cost_vs_relu": ratio, "warmup_s": warm, **r,
                            "relu_cand_epochs_per_s": relu["cand_epochs_per_s"]})
                print(f"[cost] {split.name} {arch_text} {mode:>3} {fam} {params}: x{ratio:.2f} relu "
                      f"({r['cand_epochs_per_s']:.1f} vs {relu['cand_epochs_per_s']:.1f} cand-ep/s; "
                      f"warm-up {warm:.1f}s)", file=sys.stderr, flush=True)
        finally:
            if old is None:
                os.environ.pop("ACTSEARCH_COMPILE", None)
            else:
                os.environ["ACTSEARCH_COMPILE"] = old
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--ks", default="32,64")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--structures", action="store_true")
    p.add_argument("--structure-k", type=int, default=32)
    p.add_argument("--mnist-rows", type=int, default=6000, help="MNIST-shaped training rows")
    p.add_argument("--compile-modes", default="off,on")
    p.add_argument("--skip-mixed", action="store_true")
    p.add_argument("--skip-digits-structures", action="store_true")
    p.add_argument("--mnist-structures", default=None,
                   help="indices into STRUCTURES for the MNIST-shaped part (default all)")
    args = p.parse_args(argv)
    settings = tune_cpu(args.threads)
    load_start = [round(v, 2) for v in os.getloadavg()]
    split = digits()
    ks = [int(v) for v in args.ks.split(",")]
    arch = ArchSpec.parse("mlp:64,64")
    result: dict[str, Any] = {
        "bench": "mixed", "torch": torch.__version__, "threads": settings["threads"],
        "epochs": args.epochs, "repeats": args.repeats, "loadavg_start": load_start,
        "compile_setting": kernels.compile_setting(),
        "population_size_mlp64": population_size(arch, 64, 10, BATCH, "cpu", FAMILIES),
    }
    if not args.skip_mixed:
        result["mixed"] = mixed_workload(split, "mlp:64,64", ks, args.epochs, args.repeats)
    if args.structures:
        modes = [m for m in args.compile_modes.split(",") if m]
        result["structures"] = [] if args.skip_digits_structures else structure_costs(
            split, "mlp:64,64", args.structure_k, args.epochs, args.repeats, modes)
        mn = mnist_shaped(n_train=args.mnist_rows, n_val=1000)
        subset = (None if args.mnist_structures is None
                  else [STRUCTURES[int(i)] for i in args.mnist_structures.split(",")])
        result["structures"] += structure_costs(mn, "mlp:256,256", args.structure_k, 1,
                                                1, modes, subset)
    result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    for row in result.get("mixed", []):
        print(f"{row['arch']} K={row['k']}: mixed/relu {row['mixed_over_relu']:.2f}, "
              f"mixed/today {row['mixed_over_today']:.2f} (cand-ep/s relu "
              f"{row['relu']['cand_epochs_per_s']:.1f}, mixed {row['mixed']['cand_epochs_per_s']:.1f}, "
              f"today {row['today']['cand_epochs_per_s']:.1f})")
    print(f"load average {result['loadavg_start']} -> {result['loadavg_end']}")
    print(json.dumps(result, default=float))
    return result


if __name__ == "__main__":
    main()
